"""Victim selection: which cgroup or process a kill takes, from plain values (no I/O).

The candidates (the limited cgroup's child cgroups, or its processes) are ranked by the
precise figure, marked ones first: "prefer" before unmarked before "avoid" (oomd's
user.oomd_prefer / user.oomd_avoid, or the limit's prefer/avoid patterns). A victim inside
a cgroup with memory.oom.group set is widened to the topmost such cgroup at or below the
limited one: the kernel kills such a group whole, and so does beanwatch.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .config import KillScope

MARK_ORDER = {"prefer": 0, None: 1, "avoid": 2}
LISTED = 10   # candidates listed in a record


@dataclass(frozen=True)
class Candidate:
    """A child cgroup (pid None) or a process, with its size (bytes) and mark."""

    cgroup: str
    size: int
    mark: str | None = None
    pid: int | None = None
    comm: str | None = None
    start_time: int | None = None   # /proc/PID/stat field 22: checked again before signalling

    def describe(self) -> dict:
        out = {"cgroup": self.cgroup, "bytes": self.size, "mark": self.mark}
        if self.pid is not None:
            out.update(pid=self.pid, comm=self.comm)
        return out


@dataclass(frozen=True)
class Choice:
    """What a kill takes: a cgroup whole (cgroup set, pid None) or one process."""

    scope: KillScope
    cgroup: str | None
    pid: int | None
    reason: str
    candidates: tuple[Candidate, ...] = ()
    victim: Candidate | None = None

    def describe(self) -> dict:
        out = {"scope": self.scope.value, "reason": self.reason,
               "victim": ({"cgroup": self.cgroup} if self.pid is None else
                          {"pid": self.pid, "comm": self.victim.comm if self.victim else None,
                           "cgroup": self.victim.cgroup if self.victim else None})}
        if self.candidates:
            out["candidates"] = [c.describe() for c in self.candidates[:LISTED]]
            out["candidates_total"] = len(self.candidates)
        return out


def config_mark(names: list[str], prefer: tuple[str, ...], avoid: tuple[str, ...]) -> str | None:
    """The mark the limit's patterns give a candidate known by any of names (a child's path
    relative to the limited cgroup, or a process's name). avoid wins over prefer."""
    def hit(patterns):
        return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)
    if hit(avoid):
        return "avoid"
    if hit(prefer):
        return "prefer"
    return None


def rank(candidates) -> list[Candidate]:
    """prefer, then unmarked, then avoid; within each the largest first (ties by name)."""
    return sorted(candidates, key=lambda c: (MARK_ORDER.get(c.mark, 1), -c.size, c.cgroup,
                                             c.pid or 0))


def between(limited: str, cgroup: str) -> list[str]:
    """limited and every cgroup from it down to cgroup, top first."""
    if cgroup == limited:
        return [limited]
    rest = cgroup[len(limited.rstrip("/")) + 1:].split("/")
    out, cur = [limited], limited.rstrip("/")
    for part in rest:
        cur = f"{cur}/{part}"
        out.append(cur)
    return out


def oom_group_of(limited: str, cgroup: str, oom_groups: set[str]) -> str | None:
    """The topmost cgroup between limited and cgroup (both included) with memory.oom.group."""
    return next((c for c in between(limited, cgroup) if c in oom_groups), None)


def choose(scope: KillScope, limited: str, candidates, oom_groups: set[str] = frozenset()
           ) -> Choice:
    """The victim of one kill of limited. candidates: child cgroups for scope child,
    processes for scope process (ignored for scope cgroup)."""
    if limited in oom_groups:
        return Choice(scope, limited, None, "memory.oom.group is set on the limited cgroup: "
                      "killed whole")
    if scope is KillScope.CGROUP:
        return Choice(scope, limited, None, "kill-scope cgroup: the whole limited cgroup")
    ranked = rank(candidates)
    if not ranked:
        what = "child cgroup" if scope is KillScope.CHILD else "process"
        return Choice(scope, limited, None, f"no {what} to choose from: the whole limited cgroup")
    top = ranked[0]
    what = "child cgroup" if top.pid is None else "process"
    why = {"prefer": f"the largest {what} marked prefer",
           "avoid": f"the largest {what}, all being marked avoid",
           None: f"the largest {what}" + (" not marked avoid" if any(
               c.mark == "avoid" for c in ranked) else "")}[top.mark]
    why += f" ({top.size} bytes of {len(ranked)} candidates)"
    group = oom_group_of(limited, top.cgroup, oom_groups)
    if group is not None:
        return Choice(scope, group, None, f"{why}; memory.oom.group is set on {group}: "
                      "killed whole", tuple(ranked), top)
    if top.pid is None:
        return Choice(scope, top.cgroup, None, why, tuple(ranked), top)
    return Choice(scope, None, top.pid, why, tuple(ranked), top)
