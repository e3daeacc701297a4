"""The records beanwatch emits: one flat dict per event, as every output takes it.

Every record is built here (record() or account_record()), so every one has the common
fields `event`, `ts` and `cgroup`, and its event is one of EVENTS, the registry the README's
record table is checked against (tests/unit/test_contract.py)."""

from __future__ import annotations

from .model import Account
from .names import display_name

# event -> when it is emitted (the README's record table says the same, in more words)
EVENTS = {
    "start": "watch: the probes are attached (vm_hook, slow_source, not_covered)",
    "snapshot": "every --interval, one per watched cgroup",
    "mode": "a switch between fast and slow mode",
    "check": "an exact measurement from /proc (watch)",
    "barrier": "exact usage went above the barrier (then a reminder while it stays)",
    "exceeded": "exact usage went above the limit (then a reminder while it stays)",
    "action": "an action was taken, failed, or was vetoed",
    "barrier_action": "the barrier action (signal, throttle, hook) at a crossing; a throttle undone",
    "oom_kill": "the kernel's OOM killer killed a process in a watched cgroup",
    "hook": "the on-action hook ended",
    "lost": "events lost in the kernel or callback errors",
    "map_full": "a kernel map was full (once)",
    "waiting": "a watched path has no cgroup (yet)",
    "appeared": "a waited-for cgroup was made",
    "recreated": "a watched cgroup was removed and made again",
    "limit": "a memory.max limit changed",
    "skipped": "a cgroup the walk could not open or list",
    "reload": "SIGHUP: the config re-read (or refused)",
    "thaw": "a cgroup thawed at start (frozen by a beanwatch that died), or a failed thaw",
    "error": "an unexpected error in one round",
    "status": "`status`: one per cgroup",
    "verify": "`verify`: per cgroup per interval",
    "violation": "`verify`: an estimate found below RSS",
    "grow": "`trace`: one change of a process's address space at or above --min-size",
    "rss": "`trace`: in slow mode, per interval, a process whose RSS grew by --rss-min or more",
    "host_check": "`check`: one per thing checked",
    "host_summary": "`check`: the facts (hook, kill path, slow-mode source)",
    "refused": "--vm-limit: allocations refused (ENOMEM) or let past the vm barrier, since the last such record",
}


def record(event: str, ts: float, cgroup: str | None, **fields) -> dict:
    """A record with the common fields first; event must be one of EVENTS."""
    if event not in EVENTS:
        raise ValueError(f"unregistered record event {event!r}")
    rec = {"event": event, "ts": round(ts, 6), "cgroup": cgroup}
    rec.update(fields)
    return rec


def account_record(event: str, acc: Account, ts: float, **extra) -> dict:
    """A record about one account: the common fields, then its figures."""
    lim = acc.limit
    fields = {
        "name": display_name(acc.name), "cgroup_id": acc.cgroup_id,
        "estimate_bytes": acc.estimate, "exact_bytes": acc.exact,
        "rss_bytes": acc.rss, "pss_bytes": acc.pss,
        "exact_ts": None if acc.exact_ts is None else round(acc.exact_ts, 6),
        "held_bytes": acc.held, "maxheld_bytes": acc.maxheld,
        "limit_bytes": lim.limit if lim else None,
        "barrier_bytes": lim.barrier if lim else None,
        "mode": acc.mode.value, "failcnt": acc.failcnt, "switches": acc.switches,
    }
    fields.update(extra)
    return record(event, ts, acc.name, **fields)
