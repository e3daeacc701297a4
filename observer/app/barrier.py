"""Barrier actions: what is done once when exact usage passes a cgroup's barrier.

The latch (core/policy.BarrierLatch) says when: once per crossing, re-armed when usage falls
back under the barrier less the hysteresis. What is done comes from the cgroup's Limit:
report (the `barrier` record says it all), a signal to each of its processes, throttle
(memory.high written at the barrier, put back when usage falls back, at exit, and by the
next beanwatch if this one dies: never left behind), or the on-action hook, run beside the
loop as after an action. Every write goes through the actor, behind its guard."""

from __future__ import annotations

from ..core.config import signal_name
from ..core.model import Account
from ..core.policy import BarrierLatch
from ..core.records import account_record, record


class BarrierActions:

    def __init__(self, actor, sink, clock, *, enforcer=None, ledger=None):
        self.actor, self.sink, self.clock = actor, sink, clock
        self.enforcer = enforcer          # its hook runner and on-action bookkeeping
        self.ledger = ledger              # state.ThrottleLedger, or None
        self.latches: dict[str, BarrierLatch] = {}
        # (cgroup, id) -> (memory.high before, memory.high as written)
        self.throttled: dict[tuple[str, int], tuple[str, str]] = {}
        self.taken: dict[str, int] = {}   # cgroup -> barrier actions taken (not report)

    # -- when -----------------------------------------------------------------------------
    def on_check(self, acc: Account, now: float) -> None:
        """After an exact check of acc."""
        lim = acc.limit
        if lim is None or lim.barrier is None:
            return
        latch = self.latches.setdefault(acc.name, BarrierLatch())
        what = latch.note(acc.exact, lim.barrier, acc.low_water(now))
        if what == "crossed":
            self.act(acc)
        elif what == "rearmed":
            self.undo(acc.name)

    def on_fast(self, acc: Account) -> None:
        """acc went back to fast mode: its estimate, an upper bound of usage, is under the
        re-arm level."""
        latch = self.latches.get(acc.name)
        if latch is not None and latch.rearm():
            self.undo(acc.name)

    def forget(self, name: str) -> None:
        """The cgroup at name is another one now (removed and made again), or no longer
        watched: its latch goes, and what was written to the old one is put back (a removed
        cgroup has nothing to put back: the guard says so and the entry is dropped)."""
        self.latches.pop(name, None)
        self.undo(name)

    def keep_only(self, names) -> None:
        for name in set(self.latches) - set(names):
            self.latches.pop(name, None)
        for name, _ in list(self.throttled):
            if name not in names:
                self.undo(name)

    # -- what -----------------------------------------------------------------------------
    def act(self, acc: Account) -> None:
        lim = acc.limit
        ba = lim.barrier_action
        if ba.kind == "report":
            return
        self.taken[acc.name] = self.taken.get(acc.name, 0) + 1
        extra = {"signal": signal_name(ba.signal)} if ba.kind == "signal" else {}
        try:
            if ba.kind == "signal":
                res = self.actor.signal(acc.name, acc.cgroup_id, ba.signal)
            elif ba.kind == "throttle":
                res, saved = self.actor.throttle(acc.name, acc.cgroup_id, lim.barrier)
                if saved is not None:
                    self.throttled[(acc.name, acc.cgroup_id)] = saved
                    self.save_ledger()
                    extra["memory_high_bytes"] = lim.barrier
            else:
                self._hook(acc)
                return
            rec = account_record("barrier_action", acc, self.clock(), action=ba.kind,
                                 pids=res.pids, ok=res.ok, detail=res.detail, **extra)
        except Exception as e:  # noqa: BLE001 - a refused or failed action is reported
            rec = account_record("barrier_action", acc, self.clock(), action=ba.kind, pids=[],
                                 ok=False, detail=str(e), **extra)
        self.sink(rec)

    def _hook(self, acc: Account) -> None:
        hooks = self.enforcer.hooks if self.enforcer is not None else None
        rec = account_record("barrier_action", acc, self.clock(), action="hook", pids=[],
                             ok=hooks is not None and bool(hooks.on_action),
                             detail="on-action hook started")
        if not rec["ok"]:
            rec["detail"] = "no on-action hook configured"
            self.sink(rec)
            return
        self.sink(rec)
        handle = hooks.start_barrier(rec)
        out = handle.poll()
        if out is None:
            self.enforcer.telling.append((acc, handle))   # recorded when it ends
        else:
            self.enforcer._told(acc, out)

    def undo(self, name: str) -> None:
        """Puts back memory.high of every throttle taken on the cgroup at name."""
        for key in [k for k in self.throttled if k[0] == name]:
            previous, written = self.throttled.pop(key)
            self._unthrottle(key[0], key[1], previous, written, "usage fell back")
            self.save_ledger()

    def _unthrottle(self, name, cid, previous, written, why) -> bool:
        try:
            res = self.actor.unthrottle(name, cid, previous, written)
            ok, detail = res.ok, res.detail
        except Exception as e:  # noqa: BLE001 - reported
            ok, detail = False, str(e)
        if not ok and ("gone" in str(detail) or "removed and recreated" in str(detail)):
            ok, detail = True, f"{detail}: nothing to put back"   # the cgroup written is no more
        self.sink(record("barrier_action", self.clock(), name, cgroup_id=cid,
                         action="unthrottle", ok=ok, detail=f"{why}: {detail}",
                         memory_high=previous))
        return ok

    def close(self) -> None:
        """At stop: every memory.high we set is put back."""
        for (name, cid), (previous, written) in sorted(self.throttled.items()):
            self._unthrottle(name, cid, previous, written, "stopping")
        self.throttled.clear()
        self.save_ledger()

    def restore_orphans(self) -> None:
        """At start: memory.high values a beanwatch that died had set are put back."""
        if self.ledger is None:
            return
        done = set()
        for name, cid, previous, written, path in self.ledger.orphans():
            if name:
                self._unthrottle(name, cid, previous, written, "set by a beanwatch that died")
            done.add(path)
        self.ledger.drop(done)

    def save_ledger(self) -> None:
        if self.ledger is None:
            return
        try:
            self.ledger.save({(n, i, p, w) for (n, i), (p, w) in self.throttled.items()})
        except OSError as e:
            self.sink(record("error", self.clock(), None,
                             detail=f"memory.high ledger not written: {e.strerror or e}"))
