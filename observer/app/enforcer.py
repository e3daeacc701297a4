"""The enforcer: a decision (policy), then the entry of the action table, then the record.

An attempt runs through stages, each returning CONTINUE or STOP (a veto ends it):
ask the on-exceed hook, act through the action table, record, tell the on-action hook.
A new action (or a victim selector, or a refusal) is a new ActionEntry in the table,
not a new branch here. The stages take and give one Attempt, so that a stage that waits
(a hook run off the loop) can later keep the attempt and resume it on a later round.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..core.config import Action
from ..core.model import Account
from ..core.policy import Decision, decide
from ..core.records import account_record


class Step(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"


@dataclass
class Attempt:
    """One enforcement of one account, as it goes through the stages."""

    acc: Account
    decision: Decision
    rss_by_pid: dict[int, int]
    extra: dict = field(default_factory=dict)   # added to the action record
    held: bool = False                          # frozen by us while the hook decided
    record: dict | None = None                  # the action record, once acted


class ActionEntry:
    """One row of the action table: how to carry out one action on one cgroup.

    run() returns an actions.ActionResult, or raises (reported as a failed action)."""

    release_hold = False   # thaw a hold taken for the hook once the action is done
    peaks = True           # the processes live on: their taskstats peaks are worth reading

    def run(self, enforcer: "Enforcer", acc: Account):
        raise NotImplementedError


class Report(ActionEntry):
    """Lists the members; writes no cgroup file and sends no signal."""

    def run(self, enforcer, acc):
        return enforcer.actor.report(acc.name)


class Freeze(ActionEntry):
    """Freezes the cgroup; remembered (and on disk) so that it is thawed at exit."""

    def run(self, enforcer, acc):
        res = enforcer.actor.freeze(acc.name, acc.cgroup_id)
        if res.ok:
            enforcer.frozen.add((acc.name, acc.cgroup_id))
            if enforcer.ledger is not None and not enforcer.keep_frozen:
                enforcer.ledger.save(enforcer.frozen)
        return res


class Kill(ActionEntry):
    """Kills every process of the cgroup (SIGKILL reaches frozen tasks, so a hold is
    released afterwards: nothing is left frozen)."""

    release_hold = True
    peaks = False          # killed processes have no taskstats left

    def run(self, enforcer, acc):
        return enforcer.actor.kill(acc.name, acc.cgroup_id)


ACTIONS = {Action.REPORT: Report(), Action.FREEZE: Freeze(), Action.KILL: Kill()}


class Enforcer:
    """Acts first and describes after: every millisecond before the action is memory touched."""

    def __init__(self, actor, sink, clock, *, hooks=None, taskstats=None, ledger=None,
                 keep_frozen=False, table=None):
        self.actor = actor
        self.sink = sink
        self.clock = clock
        self.hooks = hooks              # hooks.HookRunner, or None
        self.taskstats = taskstats      # netlink.PeakReader, or None
        self.ledger = ledger            # state.FrozenLedger, or None
        self.keep_frozen = keep_frozen
        self.table = dict(ACTIONS if table is None else table)
        self.frozen: set[tuple[str, int]] = set()
        self.stages = (self.ask_hook, self.act, self.record, self.tell_hook)

    def enforce(self, acc: Account, rss_by_pid: dict[int, int]) -> None:
        exceed_hook = self.hooks is not None and bool(self.hooks.on_exceed)
        attempt = Attempt(acc, decide(acc.limit, exceed_hook), rss_by_pid)
        for stage in self.stages:
            if stage(attempt) is Step.STOP:
                return

    # -- the stages -----------------------------------------------------------------------
    def ask_hook(self, a: Attempt) -> Step:
        """The on-exceed hook may take its whole timeout: the cgroup is held still meanwhile."""
        if not a.decision.ask_hook:
            return Step.CONTINUE
        acc, action = a.acc, a.decision.action.value
        if a.decision.hold:
            a.held = self._try(lambda: self.actor.freeze(acc.name, acc.cgroup_id).ok)
        verdict = self.hooks.before_action(account_record(
            "exceed", acc, self.clock(), action=action, pids=sorted(a.rss_by_pid)))
        a.extra["hook"] = verdict.detail
        if not verdict.vetoed:
            return Step.CONTINUE
        if a.held:
            self._try(lambda: self.actor.thaw(acc.name, acc.cgroup_id))
        self.sink(account_record("action", acc, self.clock(), action=action, pids=[], ok=False,
                                 vetoed=True, detail=verdict.detail))
        return Step.STOP

    def act(self, a: Attempt) -> Step:
        acc, action = a.acc, a.decision.action
        entry = self.table[action]
        try:
            res = entry.run(self, acc)
            a.record = account_record("action", acc, self.clock(), action=action.value,
                                      pids=res.pids, ok=res.ok, detail=res.detail, **a.extra)
        except Exception as e:  # a refused or failed action is reported, never fatal
            a.record = account_record("action", acc, self.clock(), action=action.value,
                                      pids=[], ok=False, detail=str(e), **a.extra)
        finally:
            if a.held and entry.release_hold:
                self._try(lambda: self.actor.thaw(acc.name, acc.cgroup_id))
        return Step.CONTINUE

    def record(self, a: Attempt) -> Step:
        rec = a.record
        rec["rss_bytes"] = {str(pid): rss for pid, rss in sorted(a.rss_by_pid.items())}
        if self.table[a.decision.action].peaks and self.taskstats is not None:
            peaks = {str(pid): p for pid in rec["pids"][:16] if (p := self.taskstats(pid))}
            if peaks:
                rec["peak"] = peaks
        self.sink(rec)
        return Step.CONTINUE

    def tell_hook(self, a: Attempt) -> Step:
        if self.hooks is not None and self.hooks.on_action:
            out = self.hooks.after_action(a.record)
            self.sink(account_record("hook", a.acc, self.clock(), hook="on-action",
                                     returncode=out.returncode, timed_out=out.timed_out,
                                     detail=out.detail))
        return Step.CONTINUE

    @staticmethod
    def _try(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a hold or release that fails changes no decision
            return False
