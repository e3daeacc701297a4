"""Policy: what to do about a cgroup past its limit, decided from plain values (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Action, Limit


@dataclass(frozen=True)
class Decision:
    action: Action
    ask_hook: bool   # an on-exceed hook decides first, and may veto
    hold: bool       # freeze the cgroup while the hook decides (never in report mode)


def decide(limit: Limit, has_exceed_hook: bool) -> Decision:
    """The configured action; a hook is asked first where there is one, with the cgroup
    held still meanwhile unless the action is report (which never writes a cgroup file)."""
    return Decision(limit.action, has_exceed_hook,
                    has_exceed_hook and limit.action is not Action.REPORT)


# While a cgroup stays above its barrier or limit, every exact check finds it there again
# (in slow mode, at every interval and at each step of resident growth): a record per check
# would flood the log. Its `barrier` or `exceeded` record is emitted when it gets there (or
# moves between the two), then once every REMIND_EVERY seconds while it stays, counting
# the checks in between.
REMIND_EVERY = 60.0


@dataclass
class OverNotice:
    """When to record that one cgroup is above its barrier or limit."""

    level: str | None = None      # "barrier", "exceeded", or None (under both)
    told_at: float = 0.0
    untold: int = 0               # checks above since the last record

    def note(self, level: str | None, now: float, every: float = REMIND_EVERY):
        """This check's level. Returns None (nothing to record) or (reminder, repeats):
        whether the record is a reminder, and how many checks above went unrecorded."""
        if level is None:
            self.level, self.untold = None, 0
            return None
        if level != self.level:
            self.level, self.told_at, self.untold = level, now, 0
            return (False, 0)
        if now - self.told_at >= every:
            repeats, self.told_at, self.untold = self.untold, now, 0
            return (True, repeats)
        self.untold += 1
        return None


@dataclass
class BarrierLatch:
    """The barrier action of one cgroup is taken once per crossing: when exact usage goes
    above the barrier; it is re-armed when usage falls back under the re-arm level (the
    barrier less the cgroup's hysteresis, the level at which slow mode ends too), or when
    usage is no longer followed because the estimate fell under that level (fast mode).

    note() returns "crossed" (act now), "rearmed" (undo what the action left: a throttle)
    or None."""

    crossed: bool = False

    def note(self, exact: int | None, barrier: int | None, rearm_below: int) -> str | None:
        if exact is None or barrier is None:
            return None
        if not self.crossed and exact > barrier:
            self.crossed = True
            return "crossed"
        if self.crossed and exact < rearm_below:
            self.crossed = False
            return "rearmed"
        return None

    def rearm(self) -> str | None:
        """Usage fell under the re-arm level without an exact check (back to fast mode)."""
        if not self.crossed:
            return None
        self.crossed = False
        return "rearmed"
