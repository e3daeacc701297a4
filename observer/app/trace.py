"""`beanwatch trace`: a live stream of address-space growth, one record per change of a
process's total_vm at or above a size.

The kernel side sends an EV_GROW* event only when one change reaches the size Python wrote
into trace_min (probes/accounting.c, trace_change): the accounting's hot path gains one
look-up and one comparison per change, nothing per page fault. What caused the change
(its kind) is named here from what the event carries: exec and fork have programs of their
own; at an mmap-lock release the probes read the syscall in progress (x86-64, 5.15+).

While a traced cgroup is in slow mode, `rss` records tell, once per interval, which of its
processes grew resident by --rss-min or more: from the per-process RSS the session's exact
checks read anyway (statm), never from a read of /proc of its own (RssIntervals, pure)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..core.model import Mode
from ..core.names import display_name
from ..core.records import record
from ..core.sizes import to_bytes
from ..kernel import wire

# x86-64 syscall numbers of the calls that grow an address space (the numbers the probes
# read from orig_ax, or from a syscall tracepoint's record on the syscall hook)
X86_64_SYSCALL_KINDS = {9: "mmap", 12: "brk", 25: "mremap", 30: "shm", 59: "exec",
                        322: "exec", 453: "mmap"}   # 322 execveat, 453 map_shadow_stack
KINDS = ("mmap", "brk", "mremap", "stack", "shm", "exec", "fork", "mapping")


def growth_kind(kind: int, syscall: int, machine: str | None = None) -> str:
    """The kind of one growth event: exec and fork from their programs; at an mmap-lock
    release, the syscall in progress (none: a page fault from user mode, which grows an
    address space only by growing a stack); "mapping" where nothing more can be said
    (another syscall, or a kernel that does not tell)."""
    if kind == wire.EV_GROW_EXEC:
        return "exec"
    if kind == wire.EV_GROW_FORK:
        return "fork"
    if syscall == wire.GROW_NO_SYSCALL:
        return "stack"
    if (machine or os.uname().machine) == "x86_64":
        return X86_64_SYSCALL_KINDS.get(syscall, "mapping")
    return "mapping"


def signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class Grown:
    """One process that grew resident over an interval: its RSS now, and by how much."""

    pid: int
    rss: int
    growth: int


def rss_growth(before: dict[int, int], after: dict[int, int], min_bytes: int) -> list[Grown]:
    """The processes of after (pid -> RSS bytes) whose RSS grew by min_bytes or more since
    before; a pid new since before counts from 0, a pid gone or shrunk gives nothing.
    Largest growth first (then by pid)."""
    grown = [Grown(pid, rss, rss - before.get(pid, 0)) for pid, rss in after.items()
             if rss - before.get(pid, 0) >= min_bytes]
    return sorted(grown, key=lambda g: (-g.growth, g.pid))


@dataclass(frozen=True)
class Measured:
    """One exact check of a slow account, as RssIntervals keeps it."""

    cgroup_id: int
    ts: float
    rss_by_pid: dict        # pid -> RSS bytes (statm, or smaps_rollup where PSS was read)
    exact: int | None       # the cgroup's figure decided on (Account.exact)
    limit: int | None
    estimate: int


class RssIntervals:
    """Per-process resident growth per interval, for accounts in slow mode. No I/O.

    measured() takes every exact check of a slow account (the session makes one at the
    switch to slow mode and one each interval, more where the kernel's growth bound fires);
    the first of a slow period is the baseline. tick(), once per interval, diffs each slow
    account's latest check against its baseline, which then moves to that check. An account
    not slow at a tick (or recreated: another cgroup id) is forgotten: its next slow period
    starts a new baseline, so fast mode never gives growth, nor a stale one later."""

    def __init__(self, min_bytes: int):
        self.min_bytes = min_bytes
        self.base: dict[str, Measured] = {}
        self.latest: dict[str, Measured] = {}

    def measured(self, name: str, m: Measured) -> None:
        base = self.base.get(name)
        if base is None or base.cgroup_id != m.cgroup_id:
            self.base[name] = m
        self.latest[name] = m

    def tick(self, slow: dict[str, int]) -> list[tuple[str, Measured, Measured, list[Grown]]]:
        """slow: name -> cgroup id of the accounts in slow mode now. Returns, per account
        with growth, (name, baseline, latest check, the processes grown), in name order."""
        for name in [n for n in self.base if slow.get(n) != self.base[n].cgroup_id]:
            del self.base[name]
            self.latest.pop(name, None)
        out = []
        for name in sorted(self.base):
            base, now = self.base[name], self.latest.get(name)
            if now is None or now.ts <= base.ts or now.cgroup_id != base.cgroup_id:
                continue   # no new check since the baseline (or a new cgroup: skipped)
            self.base[name] = now
            grown = rss_growth(base.rss_by_pid, now.rss_by_pid, self.min_bytes)
            if grown:
                out.append((name, base, now, grown))
        return out


@dataclass
class Tracer:
    """Turns growth events into `grow` records for the cgroups traced, the session's mode
    switches into `mode` records, and slow accounts' checks into `rss` records. session
    gives the cgroup tree, the seeds and the accounts; events are queued by the probe
    callback and handled in the session's loop (flush); rss growth is told at each of its
    ticks (tick)."""

    session: object
    sink: object
    min_pages: int
    names: frozenset = frozenset()   # --cgroup (resolved): these and their descendants
    rss_min: int = 1 << 20           # bytes of resident growth over an interval told
    clock: object = time.time
    monotonic_ns: object = time.monotonic_ns
    queue: list = field(default_factory=list)
    emitted: int = 0
    rss: RssIntervals = None

    def __post_init__(self):
        if self.rss is None:
            self.rss = RssIntervals(self.rss_min)

    def on_growth(self, ev: wire.Event) -> None:
        self.queue.append(ev)

    def traced(self, cgid: int) -> bool:
        """No --cgroup: every cgroup, made since or not; else those covered by an account
        named by --cgroup (limits, from --limit or memory.max, make more accounts)."""
        if not self.names:
            return True
        return any(acc.name in self.names for acc in self.session.covered_by.get(cgid, ()))

    def on_measured(self, acc, usage) -> None:
        """The session's exact check of acc (slow mode): its per-process RSS kept."""
        if self.traced(acc.cgroup_id):
            self.rss.measured(acc.name, Measured(
                acc.cgroup_id, usage.ts, usage.rss_by_pid(), acc.exact,
                acc.limit.limit if acc.limit is not None else None, acc.estimate))

    def on_record(self, rec: dict) -> None:
        """The session's own records: its mode switches in traced cgroups are told, and
        the changes of limits read from memory.max (why rss records start and stop); the
        rest is the accounting's business."""
        if rec["event"] in ("mode", "limit") and self.traced(rec.get("cgroup_id")):
            self.sink(rec)

    def tick(self) -> None:
        """Once per interval, after the session's checks: one `rss` record per process of
        a slow traced cgroup whose RSS grew by rss_min or more since the last interval."""
        s = self.session
        slow = {a.name: a.cgroup_id for a in s.accounts
                if a.mode is Mode.SLOW and a.limit is not None and self.traced(a.cgroup_id)}
        for name, base, now, grown in self.rss.tick(slow):
            for g in grown:
                self.emitted += 1
                self.sink(record(
                    "rss", now.ts, name, name=display_name(name), cgroup_id=now.cgroup_id,
                    pid=g.pid, comm=self.comm(g.pid), rss_bytes=g.rss, growth_bytes=g.growth,
                    interval_s=round(now.ts - base.ts, 3), exact_bytes=now.exact,
                    limit_bytes=now.limit, estimate_bytes=now.estimate))

    def comm(self, pid: int) -> str | None:
        st = self.session.procfs.status(pid)
        return st.name if st is not None else None

    def flush(self) -> None:
        events, self.queue = self.queue, []
        if not events:
            return
        s = self.session
        unknown = {ev.cgid for ev in events if ev.cgid not in s.tree}
        if unknown:
            # each placed from its id (O(depth), within the session's budget); a whole walk
            # only for what that could not place, and no sooner than the walk's anti-churn
            # gap allows: a tenant making cgroups cannot make trace walk the tree per event
            s.unknown.update(unknown)
            s.place_unknown()
            if any(cid not in s.tree for cid in unknown) and s.tree_due_in() <= 0.0:
                s.refresh_tree()
        now, mono = self.clock(), self.monotonic_ns()
        for ev in events:
            if ev.value < self.min_pages or not self.traced(ev.cgid):
                continue
            name = s.tree.get(ev.cgid)
            estimate = max(signed64(ev.aux) + s.seed.get(ev.cgid, 0), 0)
            self.emitted += 1
            self.sink(record(
                "grow", now - max(mono - ev.ts_ns, 0) / 1e9, name,
                name=display_name(name) if name else None, cgroup_id=ev.cgid,
                pid=ev.tgid, comm=self.comm(ev.tgid), kind=growth_kind(ev.kind, ev.extra),
                bytes=to_bytes(ev.value), estimate_bytes=to_bytes(estimate)))
