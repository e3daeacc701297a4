"""`beanwatch verify`: compares the kernel-side estimate with /proc while a session runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.records import record
from ..core.sizes import PAGE_SIZE, to_bytes
from ..kernel.wire import vm_slack


def below(estimate: int, rss_before: int, rss_after: int) -> bool:
    """A violation is an estimate below RSS on both sides of reading it: a process that
    unmapped (or mapped and touched) in between cannot make a sound estimate look wrong."""
    return estimate < min(rss_before, rss_after)


def slack_bytes(vm_sizes) -> int:
    """How far above the summed VmSize (bytes, one per process) the estimate may be: each
    process's shrinks of up to 1/64 of its total or 256 KiB, whichever is more (at most
    16 MiB), wait (wire.vm_slack)."""
    return sum(vm_slack(v // PAGE_SIZE) for v in vm_sizes) * PAGE_SIZE


@dataclass
class Tally:
    """What verify saw of one cgroup across the session."""

    samples: int = 0
    violations: int = 0
    max_drift: int = 0          # largest |estimate - summed VmSize| seen
    max_ratio: float = 0.0      # largest estimate / exact seen
    over_slack: int = 0         # samples with the estimate above VmSize by more than the slack


@dataclass
class Verifier:
    session: object
    sink: object
    tallies: dict[str, Tally] = field(default_factory=dict)

    @property
    def violations(self) -> int:
        return sum(t.violations for t in self.tallies.values())

    def _statuses(self, pids):
        out = {}
        for pid in pids:
            st = self.session.procfs.status(pid)
            if st is not None and st.vm_size:   # kernel threads have no address space
                out[pid] = st
        return out

    def __call__(self) -> None:
        s = self.session
        now = s.clock()
        members = {acc.name: s.cg.subtree_procs(acc.name) for acc in s.accounts}
        pids = sorted({p for ps in members.values() for p in ps})
        before = self._statuses(pids)
        tracked = s.probes.processes()
        counters = s.read_counters()
        after = self._statuses(pids)
        for acc in s.accounts:
            tally = self.tallies.setdefault(acc.name, Tally())
            tally.samples += 1
            mine = [p for p in members[acc.name] if p in before and p in after]
            rss_before = sum(before[p].vm_rss for p in mine)
            rss_after = sum(after[p].vm_rss for p in mine)
            vmsize = sum(after[p].vm_size for p in mine)
            estimate = s.estimate(acc, counters)
            for pid in mine:
                entry = tracked.get(pid)
                est = to_bytes(entry[0]) if entry else 0
                if below(est, before[pid].vm_rss, after[pid].vm_rss):
                    tally.violations += 1
                    self.sink(record("violation", now, acc.name, pid=pid,
                                     comm=after[pid].name, estimate_bytes=est,
                                     rss_bytes=after[pid].vm_rss,
                                     vmsize_bytes=after[pid].vm_size,
                                     tracked=entry is not None))
            if below(estimate, rss_before, rss_after):
                tally.violations += 1
                self.sink(record("violation", now, acc.name, pid=None,
                                 estimate_bytes=estimate, rss_bytes=rss_after,
                                 vmsize_bytes=vmsize))
            drift = estimate - vmsize
            slack = slack_bytes(after[p].vm_size for p in mine)
            tally.max_drift = max(tally.max_drift, abs(drift))
            if drift > slack:
                tally.over_slack += 1
            exact = min(rss_before, rss_after)
            if exact:
                tally.max_ratio = max(tally.max_ratio, estimate / exact)
            self.sink(record("verify", now, acc.name, estimate_bytes=estimate,
                             exact_bytes=exact, vmsize_bytes=vmsize, drift_bytes=drift,
                             slack_bytes=slack, over_slack=tally.over_slack,
                             processes=len(mine), violations=tally.violations))
