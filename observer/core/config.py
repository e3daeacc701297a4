"""What the operator asked for: limits per cgroup and the action to take, validated."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import BeanwatchError
from .sizes import format_size, parse_size


class ConfigError(BeanwatchError):
    """A limit, action or option the operator gave is invalid."""


class Action(str, enum.Enum):
    REPORT = "report"
    FREEZE = "freeze"
    KILL = "kill"


class Count(str, enum.Enum):
    """What usage counts: resident memory, or resident memory and swap."""

    RSS = "rss"
    RSS_SWAP = "rss+swap"


class KillScope(str, enum.Enum):
    """What a kill takes: the whole limited cgroup, its largest child cgroup, or its
    largest process (ranked by the precise figure; prefer and avoid marks first)."""

    CGROUP = "cgroup"
    CHILD = "child"
    PROCESS = "process"


DEFAULT_HYSTERESIS = 0.10
MAX_GRACE = 3600.0


BARRIER_KINDS = ("report", "signal", "throttle", "hook")


@dataclass(frozen=True)
class BarrierAction:
    """What is done once when exact usage passes a cgroup's barrier (re-armed when it falls
    back under the barrier less the hysteresis): report (the `barrier` record only), a
    signal to every process of the cgroup, throttle (memory.high at the barrier until
    usage falls back), or the on-action hook."""

    kind: str = "report"
    signal: int | None = None       # signal only: its number

    def __post_init__(self):
        if self.kind not in BARRIER_KINDS:
            raise ConfigError(f"barrier action {self.kind!r} is not one of "
                              "report, signal:SIG, throttle, hook")
        if (self.kind == "signal") != (self.signal is not None):
            raise ConfigError("a signal barrier action needs a signal: signal:SIGTERM")

    def __str__(self) -> str:
        if self.kind == "signal":
            return f"signal:{signal_name(self.signal)}"
        return self.kind


def signal_name(number: int) -> str:
    import signal as _signal
    try:
        return _signal.Signals(number).name
    except ValueError:
        return str(number)


def parse_barrier_action(text: str) -> BarrierAction:
    """report | signal:SIG | throttle | hook; SIG is a name (SIGUSR1, USR1) or a number."""
    import signal as _signal
    if not isinstance(text, str):
        raise ConfigError(f"barrier action must be a string, not {type(text).__name__}")
    kind, colon, sig = text.strip().partition(":")
    if kind != "signal":
        if colon or kind not in BARRIER_KINDS:
            raise ConfigError(f"barrier action {text!r} is not one of report, signal:SIG, "
                              "throttle, hook")
        return BarrierAction(kind)
    if not colon or not sig:
        raise ConfigError(f"barrier action {text!r}: name the signal, e.g. signal:SIGTERM")
    name = sig.upper()
    try:
        number = int(sig) if sig.isascii() and sig.isdigit() else (
            _signal.Signals[name if name.startswith("SIG") else "SIG" + name].value)
        _signal.Signals(number)
    except (KeyError, ValueError):
        raise ConfigError(f"barrier action {text!r}: {sig!r} is not a signal") from None
    return BarrierAction("signal", int(number))


def barrier_fits(limit: int, barrier: int | None) -> bool:
    """No barrier, or one above zero and not above the limit (the one barrier rule)."""
    return barrier is None or 0 < barrier <= limit


@dataclass(frozen=True)
class Limit:
    """A memory limit on a cgroup and its descendants, like memory.max."""

    limit: int
    barrier: int | None = None
    action: Action = Action.REPORT
    hysteresis: float = DEFAULT_HYSTERESIS
    adaptive: bool = False   # widen the hysteresis while the cgroup flaps (model.Account)
    count: Count = Count.RSS
    kill_scope: KillScope = KillScope.CGROUP
    prefer: tuple[str, ...] = ()   # glob patterns: child cgroups (relative) or process names
    avoid: tuple[str, ...] = ()
    grace: float = 0.0             # seconds between SIGTERM and SIGKILL; 0: SIGKILL at once
    barrier_action: BarrierAction = BarrierAction()   # once per crossing of the barrier

    def __post_init__(self):
        if self.limit <= 0:
            raise ConfigError(f"limit must be above zero, not {self.limit}")
        if not barrier_fits(self.limit, self.barrier):
            raise ConfigError(
                f"barrier {format_size(self.barrier)} must be above zero and not above "
                f"the limit {format_size(self.limit)}")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ConfigError(f"hysteresis must be in [0, 1), not {self.hysteresis}")
        if not 0.0 <= self.grace <= MAX_GRACE:   # written so that nan fails too
            raise ConfigError(f"grace must be in [0, {MAX_GRACE:g}] seconds, not {self.grace}")

    @property
    def trigger(self) -> int:
        """The lowest level that needs exact checks: the barrier if set, else the limit."""
        return self.barrier if self.barrier is not None else self.limit

    @property
    def low_water(self) -> int:
        """Below this estimate a slow-mode cgroup returns to fast mode."""
        return self.low_water_at(self.hysteresis)

    def low_water_at(self, hysteresis: float) -> int:
        # min(): above 2**53 the float product can round up past the trigger
        return min(self.trigger, int(self.trigger * (1.0 - hysteresis)))


MIN_LIMIT = 1 << 20   # a smaller limit or barrier is a unit forgotten, not a wish


def check_minimum(what: str, value: int, written=None) -> None:
    """Refuses a limit or barrier under MIN_LIMIT, naming the unit it was read in: a bare
    number is bytes (`limit = 64` is 64 bytes, not 64M)."""
    if value is None or value >= MIN_LIMIT:
        return
    bare = isinstance(written, int) or (isinstance(written, str) and written.strip().isdigit())
    shown = f"{written!r} is {value} bytes" if written is not None else f"is {value} bytes"
    hint = (f": a number without a unit is bytes (write {value}M for {value} MiB)" if bare
            else "")
    raise ConfigError(f"{what} {shown}, under the minimum of 1M{hint}")


@dataclass(frozen=True)
class LimitSpec:
    """One --limit CGROUP=SIZE[:BARRIER] as written; the cgroup is resolved later."""

    cgroup: str
    limit: int
    barrier: int | None


def parse_limit_spec(text: str, option: str = "--limit") -> LimitSpec:
    cgroup, sep, sizes = text.rpartition("=")
    if not sep or not cgroup:
        raise ConfigError(f"bad {option} {text!r}: expected CGROUP=SIZE[:BARRIER]")
    size_text, colon, barrier_text = sizes.partition(":")
    limit = parse_size(size_text)
    barrier = parse_size(barrier_text) if colon else None
    if limit <= 0:
        raise ConfigError(f"bad {option} {text!r}: the limit must be above zero")
    if not barrier_fits(limit, barrier):
        raise ConfigError(f"bad {option} {text!r}: the barrier must be above zero and not above the limit")
    check_minimum(f"bad {option} {text!r}: the limit", limit, size_text)
    check_minimum(f"bad {option} {text!r}: the barrier", barrier, barrier_text if colon else None)
    return LimitSpec(cgroup, limit, barrier)


@dataclass(frozen=True)
class VmLimit:
    """--vm-limit: a limit on a cgroup's mapped total (the estimate, summed total_vm of its
    processes and its descendants'), enforced at the allocation: growth past `limit` fails
    with ENOMEM; growth past `barrier` is allowed and counted (failcnt)."""

    limit: int
    barrier: int | None = None

    def __post_init__(self):
        if self.limit <= 0:
            raise ConfigError(f"vm limit must be above zero, not {self.limit}")
        if not barrier_fits(self.limit, self.barrier):
            raise ConfigError(
                f"vm barrier {format_size(self.barrier)} must be above zero and not above "
                f"the vm limit {format_size(self.limit)}")


def parse_vm_limit_spec(text: str) -> LimitSpec:
    return parse_limit_spec(text, "--vm-limit")


def check_vm_limits_disjoint(names) -> None:
    """vm limits may not nest (each cgroup's changes count toward one vm-limited total)."""
    names = sorted(set(names))
    for a in names:
        for b in names:
            if a != b and (a == "/" or b.startswith(a.rstrip("/") + "/")):
                raise ConfigError(f"vm limits on {a} and {b} nest: give one of them only")
