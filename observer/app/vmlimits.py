"""--vm-limit in a live session: the kernel refuses growth past a cgroup's mapped-total limit
(probes/refuse.h); this keeps the kernel's total for it in step and turns its counts into
failcnt, records and metrics.

The kernel keeps, per vm-limited cgroup L, total = base + delta (pages): delta is what its
cgroups changed since they were mapped to L (atomic adds in the accounting itself), base is
written here. Whenever the set of cgroups under L changes (and at start, after the seed),
base is set again from the counters: mapped first, then read as delta, counters, delta
again until the two deltas agree, so no change is counted twice or lost."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.config import VmLimit
from ..core.model import Account
from ..core.records import account_record
from ..core.sizes import PAGE_SIZE, to_bytes, to_pages

REBASE_TRIES = 8


@dataclass
class VmWatch:
    name: str
    limit: VmLimit
    cgroup_id: int = 0                       # 0: not there (yet)
    leaves: frozenset = frozenset()          # cgroup ids mapped to it in the kernel
    base: int = 0                            # pages, as last written
    total: int = 0                           # pages, base + delta at the last collect
    refused: int = 0                         # kernel counts at the last collect
    refused_pages: int = 0
    over_barrier: int = 0
    told: tuple = field(default=(0, 0, 0))   # (refused, pages, over_barrier) last recorded


def subtree(tree: dict[int, str], name: str) -> frozenset:
    """Ids of the cgroup at name and of every cgroup under it."""
    prefix = "/" if name == "/" else name.rstrip("/") + "/"
    return frozenset(cid for cid, n in tree.items() if n == name or n.startswith(prefix))


class VmLimits:
    """The vm-limited cgroups of a session (empty: nothing is done, nothing compiled in)."""

    def __init__(self, specs, probes, sink, clock):
        self.watches = [VmWatch(name, limit) for name, limit in specs]
        self.probes, self.sink, self.clock = probes, sink, clock

    def __bool__(self) -> bool:
        return bool(self.watches)

    def sync(self, tree: dict[int, str], seed: dict[int, int], force: bool = False) -> None:
        """Maps every cgroup under each vm-limited one to it; rebases a total whose set of
        cgroups changed (force: every one, as after the seed)."""
        ids = {n: cid for cid, n in tree.items()}
        for w in self.watches:
            cid = ids.get(w.name, 0)
            if cid != w.cgroup_id and w.cgroup_id:
                for leaf in w.leaves:
                    self.probes.map_vm_leaf(leaf, None)
                self.probes.drop_vm_limit(w.cgroup_id)
                w.leaves, w.told = frozenset(), (0, 0, 0)
                w.refused = w.refused_pages = w.over_barrier = 0
            w.cgroup_id = cid
            if not cid:
                continue
            leaves = subtree(tree, w.name)
            if leaves == w.leaves and not force:
                continue
            self._write(w, w.base)            # the counters exist before anything adds to them
            for leaf in leaves - w.leaves:
                self.probes.map_vm_leaf(leaf, cid)
            for leaf in w.leaves - leaves:
                self.probes.map_vm_leaf(leaf, None)
            w.leaves = leaves
            self._rebase(w, seed)

    def _write(self, w: VmWatch, base: int) -> None:
        barrier = to_pages(w.limit.barrier) if w.limit.barrier is not None else 0
        self.probes.set_vm_limit(w.cgroup_id, w.limit.limit // PAGE_SIZE, barrier, base)
        w.base = base

    def _rebase(self, w: VmWatch, seed: dict[int, int]) -> None:
        for _ in range(REBASE_TRIES):
            before = self.probes.vm_delta(w.cgroup_id)
            counted = sum(self.probes.leaf_vm(leaf) + seed.get(leaf, 0) for leaf in w.leaves)
            after = self.probes.vm_delta(w.cgroup_id)
            if before == after:
                break
        self._write(w, counted - after)
        w.total = counted

    def collect(self, accounts: list[Account]) -> None:
        """At a tick: the kernel's counts; refusals and growth past the barrier count toward
        the cgroup's failcnt, and one `refused` record per cgroup per tick at most tells
        what happened since the last one (rate-limited by construction)."""
        counts = self.probes.vm_limit_counts()
        by_name = {a.name: a for a in accounts}
        now = self.clock()
        for w in self.watches:
            c = counts.get(w.cgroup_id) if w.cgroup_id else None
            if c is None:
                continue
            delta, w.refused, w.refused_pages, w.over_barrier = c
            w.total = w.base + delta
            refused = w.refused - w.told[0]
            pages = w.refused_pages - w.told[1]
            over = w.over_barrier - w.told[2]
            if not refused and not over:
                continue
            w.told = (w.refused, w.refused_pages, w.over_barrier)
            acc = by_name.get(w.name)
            if acc is None:
                continue
            acc.failcnt += refused + over
            self.sink(account_record(
                "refused", acc, now, refusals=refused, refused_bytes=to_bytes(pages),
                over_vm_barrier=over, vm_limit_bytes=w.limit.limit,
                vm_barrier_bytes=w.limit.barrier, mapped_bytes=to_bytes(max(w.total, 0)),
                detail=f"{refused} allocation(s) refused with ENOMEM past the vm limit, "
                       f"{over} allowed past the vm barrier"))

    def close(self) -> None:
        """Nothing to undo: the maps go with the programs."""
