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
