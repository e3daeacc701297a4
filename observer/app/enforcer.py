"""The enforcer: a decision (policy), then the entry of the action table, then the record.

An attempt runs through stages, each returning CONTINUE, STOP (a veto ends it) or WAIT:
ask the on-exceed hook, hear its verdict, act through the action table, record, tell the
on-action hook. A new action (or a victim selector, or a refusal) is a new ActionEntry in
the table, not a new branch here.

Hooks run beside the loop: ask_hook starts the on-exceed hook and WAITs; the attempt is
kept, and poll() (every round of the loop) resumes it at the next stage once the hook has
answered or been killed at its timeout. Meanwhile every other cgroup is enforced as usual.
The on-action hook is started and its outcome recorded when it ends, waited for by nobody.

A kill with --grace sends SIGTERM to its victim and WAITs the same way: poll() resumes it
once the grace has passed (or the victim is gone), and it is SIGKILLed only if usage,
measured again, is still over the limit.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field

from ..core.config import Action, KillScope
from ..core.model import Account
from ..core.policy import Decision, decide
from ..core.records import account_record, record
from ..core.usage import Usage
from ..core.victims import Choice, choose


class Step(enum.Enum):
    CONTINUE = "continue"
    STOP = "stop"
    WAIT = "wait"      # kept, and resumed at the next stage by Enforcer.poll()


@dataclass
class Attempt:
    """One enforcement of one account, as it goes through the stages."""

    acc: Account
    decision: Decision
    usage: Usage                                # the measurement the decision was made on
    extra: dict = field(default_factory=dict)   # added to the action record
    held: bool = False                          # frozen by us while the hook decided
    record: dict | None = None                  # the action record, once acted
    hook: object = None                         # what a WAIT waits for (a hook, a grace)
    verdict: object = None                      # its outcome (hooks.HookOutcome)
    choice: Choice | None = None                # the victim of a kill
    grace_until: float | None = None            # SIGTERM sent: SIGKILL due then if still over

    @property
    def rss_by_pid(self) -> dict[int, int]:
        return self.usage.rss_by_pid()


class GraceWait:
    """A handle like a hook's: poll() answers once the grace has passed or the victim is
    gone; kill() gives up waiting (at stop)."""

    def __init__(self, clock, until: float, alive):
        self.clock, self.until, self.alive = clock, until, alive

    def poll(self):
        if self.clock() >= self.until:
            return "grace over"
        try:
            if not self.alive():
                return "victim gone"
        except Exception:  # noqa: BLE001 - unreadable: wait out the grace
            pass
        return None

    def kill(self):
        return None


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
            key = (acc.name, acc.cgroup_id)
            enforcer.frozen.add(key)
            enforcer.held.discard(key)   # the hook's hold is now the action's freeze
            enforcer.save_ledger()
        return res


class Kill(ActionEntry):
    """Kills the victim the limit's kill scope chooses: the whole cgroup (every process;
    SIGKILL reaches frozen tasks, so a hold is released afterwards: nothing is left
    frozen), its largest child cgroup, or its largest process. With a grace, SIGTERM
    first (after releasing any hold: a frozen task ignores it); the SIGKILL, if usage is
    still over once the grace has passed, comes from the grace stages."""

    release_hold = True
    peaks = False          # killed processes have no taskstats left

    def run(self, enforcer, acc):
        a = enforcer.acting
        lim = acc.limit
        if lim.kill_scope is KillScope.CGROUP and not lim.grace:
            a.extra["scope"] = KillScope.CGROUP.value
            return enforcer.actor.kill(acc.name, acc.cgroup_id)   # today's, unchanged
        a.choice = enforcer.choose(a)
        a.extra.update(a.choice.describe())
        if lim.grace:
            if a.held:
                enforcer._release(acc)
                a.held = False
            a.grace_until = enforcer.clock() + lim.grace
            a.extra.update(signal="SIGTERM", grace_s=lim.grace)
            return enforcer.signal(a, signal.SIGTERM)
        a.extra["signal"] = "SIGKILL"
        return enforcer.signal(a, signal.SIGKILL)


ACTIONS = {Action.REPORT: Report(), Action.FREEZE: Freeze(), Action.KILL: Kill()}


class _SyncHooks:
    """A runner with only before_action/after_action (tests' fakes): each answers at once."""

    def __init__(self, hooks):
        from ..host.hooks import Finished
        self.hooks, self.Finished = hooks, Finished
        self.on_exceed, self.on_action = hooks.on_exceed, hooks.on_action

    def start_exceed(self, record):
        return self.Finished(self.hooks.before_action(record))

    def start_action(self, record):
        return self.Finished(self.hooks.after_action(record))

    def start_barrier(self, record):
        return self.Finished(self.hooks.after_action(record))


class Enforcer:
    """Acts first and describes after: every millisecond before the action is memory touched."""

    def __init__(self, actor, sink, clock, *, hooks=None, taskstats=None, ledger=None,
                 keep_frozen=False, table=None, measure=None):
        self.actor = actor
        self.sink = sink
        self.clock = clock
        if hooks is not None and not hasattr(hooks, "start_exceed"):
            hooks = _SyncHooks(hooks)
        self.hooks = hooks              # hooks.HookRunner, or None
        self.taskstats = taskstats      # netlink.PeakReader, or None
        self.ledger = ledger            # state.FrozenLedger, or None
        self.keep_frozen = keep_frozen
        self.measure = measure          # acc -> usage.Usage, for the end of a grace
        self.acting: Attempt | None = None   # the attempt in the act stage (for entries)
        self.table = dict(ACTIONS if table is None else table)
        self.frozen: set[tuple[str, int]] = set()   # by the freeze action
        self.held: set[tuple[str, int]] = set()     # by us while an on-exceed hook decides
        self.waiting: dict[str, tuple[Attempt, int]] = {}   # cgroup -> (attempt, next stage)
        self.telling: list[tuple[Account, object]] = []     # on-action hooks running
        self.stages = (self.ask_hook, self.hear_hook, self.act, self.record, self.grace,
                       self.after_grace, self.tell_hook)

    def enforce(self, acc: Account, usage, held: bool = False) -> None:
        """usage: the usage.Usage measured (a dict pid -> RSS is taken as such). held: the
        cgroup is held frozen by hold_while_measuring; the attempt takes the hold over."""
        if acc.name in self.waiting:
            if held:
                self.release_measuring_hold(acc)
            return   # its hook is deciding, or its grace runs: that attempt covers this one
        if not isinstance(usage, Usage):
            usage = Usage.of_rss(dict(usage), acc.name)
        exceed_hook = self.hooks is not None and bool(self.hooks.on_exceed)
        attempt = Attempt(acc, decide(acc.limit, exceed_hook), usage, held=held)
        self._run(attempt, 0)

    def _run(self, attempt: Attempt, first: int) -> None:
        for i in range(first, len(self.stages)):
            step = self.stages[i](attempt)
            if step is Step.STOP:
                return
            if step is Step.WAIT:
                self.waiting[attempt.acc.name] = (attempt, i + 1)
                return

    def poll(self) -> None:
        """Every round of the loop: resumes the attempts whose hook has answered (or was
        killed at its timeout), and records the on-action hooks that ended."""
        for name, (attempt, nxt) in list(self.waiting.items()):
            verdict = attempt.hook.poll()
            if verdict is not None:
                del self.waiting[name]
                attempt.verdict, attempt.hook = verdict, None
                self._run(attempt, nxt)
        if self.telling:
            still = []
            for acc, handle in self.telling:
                out = handle.poll()
                if out is None:
                    still.append((acc, handle))
                else:
                    self._told(acc, out)
            self.telling = still

    def hold_while_measuring(self, acc: Account) -> bool:
        """Freezes a cgroup the configured action may freeze or kill while its precise
        figure is read (the kernel's page-table walk takes milliseconds per GiB, and a
        process faulting meanwhile would grow, and slow the walk): growth stops at the
        cheap tier's reading. In the ledger like a hook's hold. True if frozen by this."""
        key = (acc.name, acc.cgroup_id)
        if acc.limit is None or acc.limit.action is Action.REPORT or key in self.held \
                or key in self.frozen or acc.name in self.waiting:
            return False
        if not self._try(lambda: self.actor.hold(acc.name, acc.cgroup_id)):
            return False
        self.held.add(key)
        self.save_ledger()
        return True

    def release_measuring_hold(self, acc: Account) -> None:
        if (acc.name, acc.cgroup_id) in self.held:
            self._release(acc)

    def busy(self) -> bool:
        return bool(self.waiting or self.telling)

    def close(self) -> list[str]:
        """At stop: on-exceed hooks killed now (nothing will act on their answer) and their
        holds thawed; on-action hooks given the rest of their timeout; then, unless
        --keep-frozen, what the freeze action froze is thawed. A thaw that fails is
        recorded. Returns the cgroups thawed."""
        thawed = []
        for name, (attempt, _) in list(self.waiting.items()):
            attempt.hook.kill()
        self.waiting.clear()
        for acc, handle in self.telling:
            self._told(acc, self.hooks.wait(handle) if hasattr(self.hooks, "wait")
                       else handle.kill())
        self.telling = []
        if hasattr(self.hooks, "close"):
            self.hooks.close()
        release = set(self.held) | (set() if self.keep_frozen else set(self.frozen))
        for name, cid in sorted(release):
            if self._thaw(name, cid, "stopping"):
                thawed.append(name)
        self.held.clear()
        if not self.keep_frozen:
            self.frozen.clear()
        self.save_ledger()
        return thawed

    def save_ledger(self) -> None:
        """What a beanwatch that dies now would leave frozen: the holds, and the freezes
        unless they are meant to stay (--keep-frozen)."""
        if self.ledger is None:
            return
        remember = set(self.held) | (set() if self.keep_frozen else set(self.frozen))
        try:
            self.ledger.save(remember)
        except OSError as e:
            self.sink(record("error", self.clock(), None,
                             detail=f"frozen-cgroup ledger not written: {e.strerror or e}"))

    @staticmethod
    def _wait_on(a: Attempt, hook) -> Step:
        """Waits (beside the loop) for hook's verdict: WAIT until hook.poll() gives one."""
        a.hook = hook
        a.verdict = hook.poll()
        if a.verdict is None:
            return Step.WAIT
        a.hook = None
        return Step.CONTINUE

    # -- the stages -----------------------------------------------------------------------
    def ask_hook(self, a: Attempt) -> Step:
        """Starts the on-exceed hook; the cgroup is held still meanwhile (in the ledger, so
        that a beanwatch killed now leaves it to the next one to thaw)."""
        if not a.decision.ask_hook:
            return Step.CONTINUE
        acc, action = a.acc, a.decision.action.value
        if a.decision.hold and not a.held:   # held already while it was measured
            a.held = self._try(lambda: self.actor.freeze(acc.name, acc.cgroup_id).ok)
            if a.held:
                self.held.add((acc.name, acc.cgroup_id))
                self.save_ledger()
        return self._wait_on(a, self.hooks.start_exceed(account_record(
            "exceeded", acc, self.clock(), action=action, pids=sorted(a.rss_by_pid))))

    def hear_hook(self, a: Attempt) -> Step:
        if a.verdict is None:
            return Step.CONTINUE
        acc, action = a.acc, a.decision.action.value
        a.extra["hook"] = a.verdict.detail
        if not a.verdict.vetoed:
            return Step.CONTINUE
        if a.held:
            self._release(acc)
        # the pids the hook was given: the record says what the hook decided about
        self.sink(account_record("action", acc, self.clock(), action=action,
                                 pids=sorted(a.rss_by_pid), ok=False, vetoed=True,
                                 detail=a.verdict.detail))
        return Step.STOP

    def act(self, a: Attempt) -> Step:
        acc, action = a.acc, a.decision.action
        entry = self.table[action]
        self.acting = a
        try:
            res = entry.run(self, acc)
            now = self.clock()
            a.record = account_record("action", acc, now, action=action.value,
                                      pids=res.pids, ok=res.ok, detail=res.detail, **a.extra)
            if a.grace_until is not None:
                # the grace counts from the SIGTERM's record, not from before the signal was
                # sent: the SIGKILL never comes sooner after that record than --grace says
                a.grace_until = max(a.grace_until, now + acc.limit.grace)
        except Exception as e:  # a refused or failed action is reported, never fatal
            a.record = account_record("action", acc, self.clock(), action=action.value,
                                      pids=[], ok=False, detail=str(e), **a.extra)
        finally:
            if a.held and entry.release_hold:
                self._release(acc)
            elif a.held and (acc.name, acc.cgroup_id) in self.held:
                self._release(acc)   # the entry kept no freeze of its own (it failed)
            self.acting = None
        return Step.CONTINUE

    # -- victims (the kill entry) ---------------------------------------------------------
    def choose(self, a: Attempt) -> Choice:
        """The victim: candidates and marks read through the actor, the choice pure."""
        lim, acc = a.acc.limit, a.acc
        if lim.kill_scope is KillScope.CGROUP:
            candidates, groups = [], set()
        else:
            candidates, groups = self.actor.candidates(acc.name, lim.kill_scope, a.usage,
                                                       lim.prefer, lim.avoid)
        return choose(lim.kill_scope, acc.name, candidates, groups)

    def signal(self, a: Attempt, sig: int):
        c, acc = a.choice, a.acc
        if c.pid is not None:
            return self.actor.signal_process(acc.name, acc.cgroup_id, c.pid,
                                             c.victim.start_time if c.victim else None, sig)
        if c.cgroup == acc.name and sig == signal.SIGKILL:
            return self.actor.kill(acc.name, acc.cgroup_id)
        return self.actor.kill_within(c.cgroup, acc.name, acc.cgroup_id, sig)

    def grace(self, a: Attempt) -> Step:
        """SIGTERM was sent: wait (beside the loop) for the grace or the victim's end."""
        if a.grace_until is None:
            return Step.CONTINUE
        if not a.record.get("ok"):
            a.grace_until = None   # refused, or the victim was gone: nothing to wait for
            return Step.CONTINUE
        c = a.choice
        return self._wait_on(a, GraceWait(
            self.clock, a.grace_until,
            lambda: self.actor.alive(c.cgroup, c.pid, c.victim.start_time if c.victim else None)))

    def after_grace(self, a: Attempt) -> Step:
        """The grace is over: SIGKILL the victim if usage, measured again, is still over."""
        if a.grace_until is None:
            return Step.CONTINUE
        acc, lim = a.acc, a.acc.limit
        over, now_bytes = True, None
        if self.measure is not None:
            try:
                usage = self.measure(acc)
                now_bytes = usage.figure
                over = now_bytes > lim.limit
            except Exception:  # noqa: BLE001 - unmeasurable: still over, to be safe
                over = True
        extra = dict(a.extra, signal="SIGKILL" if over else None, after_grace=True,
                     grace_ended=str(a.verdict), usage_after_grace_bytes=now_bytes)
        if not over:
            a.record = account_record("action", acc, self.clock(), action="kill", pids=[],
                                      ok=True, detail="under the limit after SIGTERM and "
                                      "the grace: no SIGKILL", **extra)
        else:
            try:
                res = self.signal(a, signal.SIGKILL)
                a.record = account_record("action", acc, self.clock(), action="kill",
                                          pids=res.pids, ok=res.ok, detail=res.detail, **extra)
            except Exception as e:  # a refused or failed action is reported, never fatal
                a.record = account_record("action", acc, self.clock(), action="kill", pids=[],
                                          ok=False, detail=str(e), **extra)
        self.sink(a.record)
        return Step.CONTINUE

    def record(self, a: Attempt) -> Step:
        rec = a.record
        rec["rss_by_pid"] = {str(pid): rss for pid, rss in sorted(a.rss_by_pid.items())}
        if a.usage.precise:
            rec["pss_by_pid"] = {str(p.pid): p.pss for p in sorted(a.usage.procs,
                                                                  key=lambda p: p.pid)}
        if self.table[a.decision.action].peaks and self.taskstats is not None:
            peaks = {str(pid): p for pid in rec["pids"][:16] if (p := self.taskstats(pid))}
            if peaks:
                rec["peak"] = peaks
        self.sink(rec)
        return Step.CONTINUE

    def tell_hook(self, a: Attempt) -> Step:
        if self.hooks is not None and self.hooks.on_action:
            handle = self.hooks.start_action(a.record)
            out = handle.poll()
            if out is None:
                self.telling.append((a.acc, handle))
            else:
                self._told(a.acc, out)
        return Step.CONTINUE

    def _told(self, acc: Account, out) -> None:
        self.sink(account_record("hook", acc, self.clock(), hook="on-action",
                                 returncode=out.returncode, timed_out=out.timed_out,
                                 detail=out.detail))

    # -- holds ----------------------------------------------------------------------------
    def _release(self, acc: Account) -> None:
        self._thaw(acc.name, acc.cgroup_id, "hold released")
        self.held.discard((acc.name, acc.cgroup_id))
        self.save_ledger()

    def _thaw(self, name: str, cid: int, why: str) -> bool:
        """Thaws; a failure is recorded (the cgroup may stay frozen: an operator must know)."""
        try:
            res = self.actor.thaw(name, cid)
            ok, detail = res.ok, res.detail
        except Exception as e:  # noqa: BLE001 - reported
            ok, detail = False, str(e)
        if not ok and str(detail).endswith("gone"):
            return True   # removed meanwhile: nothing is left frozen
        if not ok:
            self.sink(record("thaw", self.clock(), name, ok=False,
                             detail=f"{why}: thaw failed: {detail}"))
        return ok

    @staticmethod
    def _try(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a hold that fails changes no decision
            return False
