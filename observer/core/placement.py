"""Which accounts cover a cgroup first seen between two walks of the tree. No I/O.

A cgroup made after the last walk (a tenant's mkdir under a watched one, a service made
again) is found from its id alone (host.cgroupfs.CgroupFS.locate): the chain of (name, id)
pairs from the root of the mount down to it. From that chain alone, and in O(depth), this
says which accounts cover it and which accounts' paths now lead to another cgroup than
the one they hold (removed and made again, or made at last), so that the session covers
it at once instead of at the next walk of the whole tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Placement:
    """covering: the accounts whose cgroup is the new one or one of its ancestors, the
    followed ones included. followed: (account, id) for each account whose path now names
    the cgroup of that id instead of the one it holds (or holds none: waited for)."""

    covering: tuple = ()
    followed: tuple = ()


def place(chain: Sequence[tuple[str, int]], by_name: Mapping[str, object]) -> Placement:
    """chain: (name, id) from the root down to the cgroup, each an ancestor of the next, as
    found at one moment (cgroups never change parent, so the ids are its ancestors for its
    whole life). by_name: the accounts by their cgroup's name; each has cgroup_id (0 or a
    stale id for one not resolved). O(len(chain)) look-ups."""
    covering, followed = [], []
    for name, cid in chain:
        acc = by_name.get(name)
        if acc is None:
            continue
        if acc.cgroup_id != cid:
            followed.append((acc, cid))
        covering.append(acc)
    return Placement(tuple(covering), tuple(followed))
