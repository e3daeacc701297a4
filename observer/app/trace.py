"""`beanwatch trace`: a live stream of address-space growth, one record per change of a
process's total_vm at or above a size.

The kernel side sends an EV_GROW* event only when one change reaches the size Python wrote
into trace_min (probes/accounting.c, trace_change): the accounting's hot path gains one
look-up and one comparison per change, nothing per page fault. What caused the change
(its kind) is named here from what the event carries: exec and fork have programs of their
own; at an mmap-lock release the probes read the syscall in progress (x86-64, 5.15+)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

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


@dataclass
class Tracer:
    """Turns growth events into `grow` records for the cgroups traced. session gives the
    cgroup tree, the seeds and the accounts; events are queued by the probe callback and
    handled in the session's loop (flush)."""

    session: object
    sink: object
    min_pages: int
    everything: bool = True      # no --cgroup: every cgroup, made since or not
    clock: object = time.time
    monotonic_ns: object = time.monotonic_ns
    queue: list = field(default_factory=list)
    emitted: int = 0

    def on_growth(self, ev: wire.Event) -> None:
        self.queue.append(ev)

    def traced(self, cgid: int) -> bool:
        return self.everything or bool(self.session.covered_by.get(cgid))

    def comm(self, pid: int) -> str | None:
        st = self.session.procfs.status(pid)
        return st.name if st is not None else None

    def flush(self) -> None:
        events, self.queue = self.queue, []
        if not events:
            return
        s = self.session
        if any(ev.cgid not in s.tree for ev in events):
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
