"""What usage is: the tiers of measurement and which one a decision takes. No I/O.

Three tiers, each an upper bound of the next:
  estimate (summed total_vm, kept by the kernel side) >= RSS sum (/proc/PID/statm, cheap)
  >= precise figure (summed PSS from /proc/PID/smaps_rollup: a page shared by n processes
  counts 1/n in each, so pages shared inside the cgroup count once).
The precise figure is taken only when the RSS sum says "over" (the barrier, or the limit
where there is none); every decision is made on the lowest tier measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Count, Limit


@dataclass(frozen=True)
class ProcUsage:
    """One process as measured: its cgroup, the cheap figure and, where taken, the precise one
    (both with swap when swap counts)."""

    pid: int
    cgroup: str
    rss: int
    pss: int | None = None

    @property
    def figure(self) -> int:
        return self.rss if self.pss is None else self.pss


@dataclass(frozen=True)
class Usage:
    """A cgroup's processes as measured at ts (seconds, the session's clock)."""

    procs: tuple[ProcUsage, ...] = ()
    ts: float = 0.0
    count: Count = Count.RSS
    precise: bool = False   # the precise tier was taken (every process's pss is set)
    # PIDs whose precise figure could not be read (errors.Unreadable): their RSS stands in,
    # an upper bound of their PSS, so the figure stays sound and may only be higher
    unreadable: tuple[int, ...] = ()

    @property
    def rss(self) -> int:
        return sum(p.rss for p in self.procs)

    @property
    def pss(self) -> int | None:
        """The precise figure, or None where it was not taken (the RSS sum was under)."""
        if not self.precise:
            return None
        return sum(p.figure for p in self.procs)

    @property
    def figure(self) -> int:
        """What decisions are made on: the precise figure where taken, else the RSS sum."""
        pss = self.pss
        return self.rss if pss is None else pss

    def by_pid(self) -> dict[int, int]:
        return {p.pid: p.figure for p in self.procs}

    def rss_by_pid(self) -> dict[int, int]:
        return {p.pid: p.rss for p in self.procs}

    def by_cgroup(self, below: str) -> dict[str, int]:
        """The precise figure per child cgroup of below (each child's subtree summed);
        processes directly in below are left out."""
        out: dict[str, int] = {}
        prefix = below.rstrip("/") + "/"
        for p in self.procs:
            if p.cgroup.startswith(prefix):
                child = prefix + p.cgroup[len(prefix):].split("/", 1)[0]
                out[child] = out.get(child, 0) + p.figure
        return out

    @classmethod
    def of_rss(cls, rss_by_pid: dict[int, int], cgroup: str = "/", ts: float = 0.0) -> "Usage":
        """From RSS figures alone (tests, and callers that have no more)."""
        return cls(tuple(ProcUsage(pid, cgroup, rss) for pid, rss in rss_by_pid.items()), ts)


def needs_precise(rss_sum: int, limit: Limit | None) -> bool:
    """The precise tier is worth its cost only when the cheap one says "over": above the
    barrier, or above the limit where there is no barrier."""
    return limit is not None and rss_sum > limit.trigger
