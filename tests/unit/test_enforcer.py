"""The enforcer: policy, then the action table, then the record; with a recording actor."""

from __future__ import annotations

import signal

import pytest

from observer.app.enforcer import ACTIONS, ActionEntry, Enforcer
from observer.core.config import Action, KillScope, Limit
from observer.core.victims import Candidate
from observer.core.model import Account
from observer.core.policy import Decision, decide
from observer.host.actions import ActionResult


@pytest.mark.parametrize("action, hook, expected", [
    (Action.REPORT, False, Decision(Action.REPORT, False, False)),
    (Action.REPORT, True, Decision(Action.REPORT, True, False)),    # report never freezes
    (Action.FREEZE, True, Decision(Action.FREEZE, True, True)),
    (Action.KILL, True, Decision(Action.KILL, True, True)),
    (Action.KILL, False, Decision(Action.KILL, False, False)),
])
def test_decide(action, hook, expected):
    assert decide(Limit(100, None, action), hook) == expected


class Actor:
    def __init__(self, fail=None):
        self.log, self.fail = [], fail

    def _do(self, what, name):
        self.log.append((what, name))
        if what == self.fail:
            raise OSError(f"{what} failed")
        return ActionResult(what, name, [7, 8], True, what + " done")

    def report(self, name):
        return self._do("report", name)

    def hold(self, name, cid):   # Actor.hold: a freeze that records no members
        return self.freeze(name, cid).ok

    def freeze(self, name, cid):
        return self._do("freeze", name)

    def thaw(self, name, cid):
        return self._do("thaw", name)

    def kill(self, name, cid):
        return self._do("kill", name)


class Ledger:
    def __init__(self):
        self.saved = []

    def save(self, frozen):
        self.saved.append(set(frozen))


def over(action, name="/job"):
    acc = Account(name, 5, Limit(100, None, action))
    acc.on_estimate(200)
    acc.on_exact(150, 1.0)
    return acc


def enforcer(actor, **kw):
    records = []
    return Enforcer(actor, records.append, lambda: 2.0, **kw), records


@pytest.mark.parametrize("action", list(Action))
def test_each_action_is_taken_once_and_recorded(action):
    actor = Actor()
    e, records = enforcer(actor, taskstats=lambda pid: {"hiwater_rss_bytes": pid})
    e.enforce(over(action), {8: 4096, 7: 8192})
    assert actor.log == [(action.value, "/job")]
    (rec,) = records
    assert (rec["event"], rec["action"], rec["ok"], rec["pids"]) == ("action", action.value, True, [7, 8])
    assert rec["rss_by_pid"] == {"7": 8192, "8": 4096}
    assert rec["detail"] == action.value + " done" and rec["exact_bytes"] == 150
    # killed processes have no taskstats left; the others tell their peaks
    assert ("peak" in rec) == (action is not Action.KILL)


def test_a_freeze_is_remembered_and_saved_to_the_ledger():
    ledger = Ledger()
    e, _ = enforcer(Actor(), ledger=ledger)
    e.enforce(over(Action.FREEZE), {})
    assert e.frozen == {("/job", 5)} and ledger.saved == [{("/job", 5)}]


def test_a_failing_action_is_a_failed_record_never_an_exception():
    e, records = enforcer(Actor(fail="kill"))
    e.enforce(over(Action.KILL), {1: 1})
    (rec,) = records
    assert not rec["ok"] and rec["pids"] == [] and rec["detail"] == "kill failed"


def test_a_new_action_is_a_new_table_entry():
    class Notify(ActionEntry):
        def __init__(self):
            self.seen = []

        def run(self, enforcer, acc):
            self.seen.append(acc.name)
            return ActionResult("report", acc.name, [], True, "notified")

    notify = Notify()
    e, records = enforcer(Actor(), table={**ACTIONS, Action.REPORT: notify})
    e.enforce(over(Action.REPORT), {})
    assert notify.seen == ["/job"] and records[0]["detail"] == "notified"
    assert set(ACTIONS) == set(Action), "every action has its entry"


# --- hooks beside the loop ----------------------------------------------------------------

class Pending:
    """A hook handle that answers when told to."""

    def __init__(self):
        self.outcome, self.killed = None, False

    def poll(self):
        return self.outcome

    def kill(self):
        from observer.host.hooks import HookOutcome
        self.killed = True
        self.outcome = HookOutcome(True, False, None, True, "killed")
        return self.outcome


class SlowHooks:
    on_exceed, on_action = "/x/exceed", None

    def __init__(self):
        self.handles = {}

    def start_exceed(self, record):
        self.handles[record["cgroup"]] = h = Pending()
        return h


def test_a_waiting_hook_holds_one_cgroup_and_delays_no_other():
    from observer.host.hooks import HookOutcome
    actor, ledger, hooks = Actor(), Ledger(), SlowHooks()
    e, records = enforcer(actor, hooks=hooks, ledger=ledger)
    e.enforce(over(Action.KILL, "/a"), {1: 1})
    assert actor.log == [("freeze", "/a")] and "/a" in e.waiting
    assert ledger.saved[-1] == {("/a", 5)}          # the hold is in the ledger
    e.enforce(over(Action.KILL, "/a"), {1: 1})      # a retry while it decides: nothing new
    e.poll()
    assert actor.log == [("freeze", "/a")] and records == []
    hooks.on_exceed = None                          # /b has no hook to wait for
    e.enforce(over(Action.KILL, "/b"), {2: 1})
    assert actor.log[-1] == ("kill", "/b") and records[-1]["cgroup"] == "/b"
    hooks.handles["/a"].outcome = HookOutcome(True, False, 0, False, "exit 0")
    e.poll()
    assert actor.log[-2:] == [("kill", "/a"), ("thaw", "/a")]
    assert records[-1]["cgroup"] == "/a" and records[-1]["hook"] == "exit 0"
    assert not e.waiting and ledger.saved[-1] == set()


def test_stop_kills_a_waiting_hook_and_thaws_its_hold():
    hooks = SlowHooks()
    e, records = enforcer(Actor(), hooks=hooks, ledger=Ledger())
    e.enforce(over(Action.KILL, "/a"), {1: 1})
    assert e.close() == ["/a"]
    assert hooks.handles["/a"].killed and not e.waiting and not e.held


def test_a_thaw_that_fails_is_recorded():
    from observer.host.hooks import HookOutcome
    hooks = SlowHooks()
    e, records = enforcer(Actor(fail="thaw"), hooks=hooks)
    e.enforce(over(Action.KILL, "/a"), {1: 1})
    hooks.handles["/a"].outcome = HookOutcome(True, True, 1, False, "vetoed")
    e.poll()
    thaw = [r for r in records if r["event"] == "thaw"]
    assert len(thaw) == 1 and not thaw[0]["ok"] and "thaw failed" in thaw[0]["detail"]
    assert records[-1]["vetoed"]


# issue 11: victims and grace


class VictimActor(Actor):
    """Adds what victim selection and grace need; `alive` and the candidates are set by
    the test."""

    def __init__(self, candidates=(), groups=()):
        super().__init__()
        self.cands, self.groups, self.living = list(candidates), set(groups), True

    def candidates(self, limited, scope, usage, prefer, avoid):
        self.log.append(("candidates", limited, scope.value, prefer, avoid))
        return self.cands, self.groups

    def signal_process(self, limited, cid, pid, start_time, sig):
        self.log.append(("signal", pid, start_time, sig))
        return ActionResult("kill", limited, [pid], True, f"sig {sig} to {pid}")

    def kill_within(self, name, limited, cid, sig):
        self.log.append(("kill_within", name, sig))
        return ActionResult("kill", name, [9], True, f"sig {sig} to {name}")

    def alive(self, cgroup, pid, start_time):
        return self.living


def limited(scope=KillScope.CGROUP, grace=0.0, **kw):
    acc = Account("/job", 5, Limit(100, None, Action.KILL, kill_scope=scope, grace=grace, **kw))
    acc.on_estimate(200)
    acc.on_exact(150, 1.0)
    return acc


def test_child_scope_kills_the_largest_child_and_says_why():
    actor = VictimActor([Candidate("/job/a", 10), Candidate("/job/b", 90),
                         Candidate("/job/c", 95, "avoid")])
    e, records = enforcer(actor)
    e.enforce(limited(KillScope.CHILD, avoid=("c",)), {1: 1})
    assert actor.log[-1] == ("kill_within", "/job/b", signal.SIGKILL)
    (rec,) = records
    assert rec["scope"] == "child" and rec["victim"] == {"cgroup": "/job/b"}
    assert "not marked avoid" in rec["reason"] and rec["signal"] == "SIGKILL"
    assert [c["cgroup"] for c in rec["candidates"]] == ["/job/b", "/job/a", "/job/c"]


def test_process_scope_signals_one_pid_with_its_start_time():
    actor = VictimActor([Candidate("/job", 10, None, 7, "a", 70),
                         Candidate("/job/x", 99, None, 8, "b", 80)])
    e, records = enforcer(actor)
    e.enforce(limited(KillScope.PROCESS), {7: 1, 8: 1})
    assert actor.log[-1] == ("signal", 8, 80, signal.SIGKILL)
    assert records[0]["victim"] == {"pid": 8, "comm": "b", "cgroup": "/job/x"}


def test_an_oom_group_is_killed_whole():
    actor = VictimActor([Candidate("/job/svc/w", 99, None, 8, "b", 80)], groups={"/job/svc"})
    e, records = enforcer(actor)
    e.enforce(limited(KillScope.PROCESS), {8: 1})
    assert actor.log[-1] == ("kill_within", "/job/svc", signal.SIGKILL)
    assert "oom.group" in records[0]["reason"]


class Clock:
    def __init__(self):
        self.t = 10.0

    def __call__(self):
        return self.t


def grace_enforcer(actor, over_after):
    from observer.core.usage import Usage
    clock, records = Clock(), []
    e = Enforcer(actor, records.append, clock,
                 measure=lambda acc: Usage.of_rss({1: 150 if over_after else 50}))
    return e, records, clock


@pytest.mark.parametrize("over_after", [True, False])
def test_grace_sends_sigterm_then_sigkill_only_if_still_over(over_after):
    actor = VictimActor()
    e, records, clock = grace_enforcer(actor, over_after)
    acc = limited(KillScope.CGROUP, grace=5.0)
    e.enforce(acc, {1: 150})
    assert actor.log == [("kill_within", "/job", signal.SIGTERM)]
    assert records[0]["signal"] == "SIGTERM" and records[0]["grace_s"] == 5.0
    assert e.busy() and "/job" in e.waiting          # beside the loop: nothing blocked
    e.enforce(acc, {1: 150})                          # a retry meanwhile: covered
    clock.t += 4.9
    e.poll()
    assert len(actor.log) == 1 and len(records) == 1
    clock.t += 0.2
    e.poll()
    assert not e.busy()
    last = records[-1]
    assert last["after_grace"] and last["grace_ended"] == "grace over"
    if over_after:
        assert actor.log[-1] == ("kill", "/job") and last["signal"] == "SIGKILL"
    else:
        assert len(actor.log) == 1 and last["signal"] is None
        assert "no SIGKILL" in last["detail"] and last["usage_after_grace_bytes"] == 50


def test_grace_ends_early_when_the_victim_exits_on_sigterm():
    actor = VictimActor([Candidate("/job", 10, None, 7, "a", 70)])
    e, records, clock = grace_enforcer(actor, over_after=False)
    e.enforce(limited(KillScope.PROCESS, grace=30.0), {7: 150})
    assert actor.log[-1] == ("signal", 7, 70, signal.SIGTERM)
    e.poll()
    assert e.busy()
    actor.living = False
    e.poll()
    assert not e.busy() and records[-1]["grace_ended"] == "victim gone"
    assert all(x[-1] != signal.SIGKILL for x in actor.log)


def test_grace_releases_a_hook_hold_before_sigterm():
    class Hooks:
        on_exceed, on_action = "/x", None

        def before_action(self, rec):
            from observer.host.hooks import HookOutcome
            return HookOutcome(True, False, 0, False, "go on")
    actor = VictimActor()
    e, records, clock = grace_enforcer(actor, over_after=True)
    e.hooks = __import__("observer.app.enforcer", fromlist=["_SyncHooks"])._SyncHooks(Hooks())
    e.enforce(limited(KillScope.CGROUP, grace=1.0), {1: 150})
    order = [x[0] for x in actor.log]
    assert order[:3] == ["freeze", "thaw", "kill_within"]   # thawed: SIGTERM is handled
    assert not e.held
