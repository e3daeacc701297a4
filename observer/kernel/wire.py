"""The kernel-to-Python wire format: event kinds, stats indexes and the event layout.

Keep in sync with probes/observer.h; tests/unit/test_wire.py compares the two.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

EV_NEW_LEAF = 1
EV_VM_HIGH = 2
EV_VM_LOW = 3
EV_RSS_HIGH = 4
EV_MOVED = 5
EV_GROW = 6
EV_GROW_EXEC = 7
EV_GROW_FORK = 8
EV_OOM_KILL = 9
GROWTH_KINDS = frozenset((EV_GROW, EV_GROW_EXEC, EV_GROW_FORK))

GROW_NO_SYSCALL = -1
GROW_UNKNOWN = -2

STAT_RINGBUF_FULL = 0
STAT_PROCS_FULL = 1
STAT_LEAVES_FULL = 2
STAT_VM_UPDATES = 3
STAT_FAULTS = 4
STAT_LEAVES_FREED = 5
STAT_OOM_KILLS = 6
STAT_MAX = 7

# what apply_bounds returns (loader.Probes.set_bounds)
BOUNDS_OK = 0
BOUNDS_FULL = 1
BOUNDS_GONE = 2

# Shrinks settled lazily (probes/observer.h): a process's recorded total stays at most
# vm_slack(its total_vm) pages above its total_vm.
VM_SLACK_SHIFT = 6
VM_SLACK_MIN = 64
VM_SLACK_MAX = 4096


def vm_slack(vm_pages: int) -> int:
    """Pages a process's recorded total may stay above its total_vm of vm_pages pages: a
    shrink that small waits (1/64 of the total or 64 pages: 256 KiB, whichever is more; at
    most 4096 pages: 16 MiB)."""
    return min(max(max(vm_pages, 0) >> VM_SLACK_SHIFT, VM_SLACK_MIN), VM_SLACK_MAX)

KIND_NAMES = {EV_NEW_LEAF: "new_leaf", EV_VM_HIGH: "vm_high", EV_VM_LOW: "vm_low",
              EV_RSS_HIGH: "rss_high", EV_MOVED: "moved", EV_GROW: "grow",
              EV_GROW_EXEC: "grow_exec", EV_GROW_FORK: "grow_fork", EV_OOM_KILL: "oom_kill"}

# struct event { u32 kind; u32 tgid; u64 cgid; s64 value; u64 aux; u64 ts_ns; s64 extra; }
EVENT_FORMAT = "<IIQqQQq"
EVENT_SIZE = struct.calcsize(EVENT_FORMAT)
OOM_COMM_LEN = 16   # an EV_OOM_KILL event is followed by the victim's comm


class WireError(ValueError):
    """An event of the wrong size or kind: the two sides are out of sync."""


# Named tuples, not dataclasses: one is made per event, thousands a second under a tenant's
# churn, and a tuple is made in C (a frozen dataclass sets each field through a Python call).
class Event(NamedTuple):
    kind: int
    tgid: int
    cgid: int
    value: int
    aux: int
    ts_ns: int
    extra: int = 0

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind{self.kind}")


class OomEvent(NamedTuple):
    """EV_OOM_KILL with the victim's comm (bytes up to the first NUL, as the kernel keeps it;
    empty where the kernel side could not read it)."""

    kind: int
    tgid: int
    cgid: int
    value: int
    aux: int
    ts_ns: int
    extra: int = 0
    comm: bytes = b""

    kind_name = Event.kind_name


_EVENT = struct.Struct(EVENT_FORMAT)
_make = Event._make


def decode(data: bytes) -> Event:
    if len(data) < EVENT_SIZE:
        raise WireError(f"event of {len(data)} bytes, expected {EVENT_SIZE}")
    ev = _make(_EVENT.unpack_from(data))
    kind = ev[0]
    if kind not in KIND_NAMES:
        raise WireError(f"unknown event kind {kind}")
    if kind == EV_OOM_KILL and len(data) >= EVENT_SIZE + OOM_COMM_LEN:
        comm = bytes(data[EVENT_SIZE:EVENT_SIZE + OOM_COMM_LEN]).split(b"\0", 1)[0]
        return OomEvent(*ev, comm=comm)
    return ev


def encode(ev: Event) -> bytes:
    """For tests: what the kernel side would send."""
    data = struct.pack(EVENT_FORMAT, ev.kind, ev.tgid, ev.cgid, ev.value, ev.aux, ev.ts_ns,
                       ev.extra)
    if isinstance(ev, OomEvent):
        data += ev.comm[:OOM_COMM_LEN].ljust(OOM_COMM_LEN, b"\0")
    return data
