"""The record an account is reported as: one flat dict per event, as every output takes it."""

from __future__ import annotations

from .model import Account
from .names import display_name


def account_record(event: str, acc: Account, ts: float, **extra) -> dict:
    lim = acc.limit
    rec = {
        "event": event, "ts": round(ts, 6), "cgroup": acc.name,
        "name": display_name(acc.name), "cgroup_id": acc.cgroup_id,
        "estimate_bytes": acc.estimate, "exact_bytes": acc.exact,
        "held_bytes": acc.held, "maxheld_bytes": acc.maxheld,
        "limit_bytes": lim.limit if lim else None,
        "barrier_bytes": lim.barrier if lim else None,
        "mode": acc.mode.value, "failcnt": acc.failcnt, "switches": acc.switches,
    }
    rec.update(extra)
    return rec
