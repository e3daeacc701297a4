"""Barrier actions (issue 12, item 3) and kernel OOM kills (item 4), without a kernel: the
latch, the parsing and precedence, the session with a real Actor on a fake cgroup tree
(memory.high is a file there), the ledger, the wire and the records."""

from __future__ import annotations

import signal

import pytest

from observer.app.session import Watch
from observer.core.config import (Action, BarrierAction, ConfigError, Limit,
                                  parse_barrier_action, parse_limit_spec)
from observer.core.policy import BarrierLatch
from observer.host.actions import Actor
from observer.host.state import ThrottleLedger
from observer.kernel import wire

from test_actions import FakeSignaller
from test_session import Host, MiB

OWN, INIT = "/beanwatch.service", "/init.scope"


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


# --- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("report", BarrierAction()), ("throttle", BarrierAction("throttle")),
    ("hook", BarrierAction("hook")), ("signal:SIGUSR1", BarrierAction("signal", signal.SIGUSR1)),
    ("signal:usr1", BarrierAction("signal", signal.SIGUSR1)),
    ("signal:15", BarrierAction("signal", signal.SIGTERM)),
])
def test_barrier_actions_parse(text, expected):
    assert parse_barrier_action(text) == expected
    assert parse_barrier_action(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "signal", "signal:", "signal:SIGNOPE", "signal:0",
                                  "signal:99999", "throttle:1", "freeze", "kill", "report:x",
                                  "signal:٣"])
def test_bad_barrier_actions_are_one_line_errors(text):
    with pytest.raises(ConfigError) as e:
        parse_barrier_action(text)
    assert "\n" not in str(e.value)


# --- the latch: once per crossing, re-armed under the barrier less the hysteresis -------------

def test_the_latch_fires_once_per_crossing_and_rearms_below_the_hysteresis():
    latch, barrier, rearm = BarrierLatch(), 100, 90
    seen = [latch.note(x, barrier, rearm) for x in (50, 100, 101, 150, 101, 95, 90, 89, 99, 101)]
    assert seen == [None, None, "crossed", None, None, None, None, "rearmed", None, "crossed"]
    assert latch.note(None, barrier, rearm) is None          # not measured: nothing changes
    assert latch.rearm() == "rearmed" and latch.rearm() is None   # back to fast mode


# --- precedence and refusals -------------------------------------------------------------------

PRECEDENCE = """\
[defaults]
barrier_action = "signal:SIGUSR2"

[cgroup."own"]
limit = "1G"
barrier = "512M"
barrier_action = "report"

[cgroup."inherits"]
limit = "1G"
barrier = "512M"
"""


class _Cg:
    def resolve(self, spec, missing_ok=False):
        return "/" + spec.strip("/")

    def cgroup_id(self, name):
        raise FileNotFoundError(name)


class _Host:
    cg = _Cg()


def _resolve(limits=(), cli=None, text=PRECEDENCE, has_on_action=True):
    from observer.app.runtime import resolve_watches
    from observer.host.configfile import parse_config
    return {w.name: str(w.limit.barrier_action) for w in resolve_watches(
        _Host(), [parse_limit_spec(l) for l in limits], None, None,
        file_config=parse_config(text) if text else None, wait_for_missing=True,
        barrier_action=cli, has_on_action=has_on_action)}


def test_barrier_action_precedence_is_the_documented_one():
    # the file alone: own table, then [defaults]; a --limit takes [defaults] too
    assert _resolve(["cli=1G:512M"]) == {"/cli": "signal:SIGUSR2", "/own": "report",
                                         "/inherits": "signal:SIGUSR2"}
    # the command line beats [defaults], never a cgroup's own setting
    assert _resolve(["cli=1G:512M"], BarrierAction("throttle")) == {
        "/cli": "throttle", "/own": "report", "/inherits": "throttle"}
    # the built-in default last
    assert _resolve(text='[cgroup."a"]\nlimit = "1G"\n') == {"/a": "report"}


def test_a_barrier_action_without_a_barrier_is_refused():
    with pytest.raises(ConfigError, match="has no barrier"):
        _resolve(["job=1G"], BarrierAction("signal", 10), text=None)
    from observer.host.configfile import ConfigFileError, parse_config
    with pytest.raises(ConfigFileError, match="needs a barrier"):
        parse_config('[cgroup."a"]\nlimit = "1G"\nbarrier_action = "throttle"\n')
    # a table with a vm_limit only has no barrier either (its key is not silently dropped)
    with pytest.raises(ConfigFileError, match="barrier_action needs a limit with a barrier"):
        parse_config('[cgroup."a"]\nvm_limit = "1G"\nbarrier_action = "throttle"\n')
    with pytest.raises(ConfigFileError, match="barrier_action must be a string"):
        parse_config('[cgroup."a"]\nlimit = "1G"\nbarrier = "1G"\nbarrier_action = 1\n')
    # report needs nothing
    assert _resolve(["job=1G"], BarrierAction(), text=None) == {"/job": "report"}


def test_hook_needs_an_on_action_hook():
    with pytest.raises(ConfigError, match="needs --on-action"):
        _resolve(["job=1G:512M"], BarrierAction("hook"), text=None, has_on_action=False)
    assert _resolve(["job=1G:512M"], BarrierAction("hook"), text=None) == {"/job": "hook"}


def test_the_cli_refuses_bad_values_and_barrier_actions_without_limits():
    from click.testing import CliRunner
    from observer.app.cli import cli
    res = CliRunner().invoke(cli, ["watch", "--barrier-action", "signal:NOPE"],
                             prog_name="beanwatch")
    assert res.exit_code == 2 and "is not a signal" in res.output
    res = CliRunner().invoke(cli, ["watch", "--barrier-action", "throttle"], prog_name="beanwatch")
    assert res.exit_code == 2 and "--limit or --config" in res.output


# --- the session, with a real Actor on a fake tree ---------------------------------------------

def _session(host, tmp_path, action="throttle", high="max", hysteresis=0.1, hooks=None):
    cid = host.cgroup("/job")
    (host.cgroot / "job" / "memory.high").write_text(high + "\n")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/job", cid, Limit(1024 * MiB, 256 * MiB, Action.REPORT, hysteresis,
                                               barrier_action=parse_barrier_action(action)))],
                     throttle_ledger=ThrottleLedger(str(tmp_path / "state")), hooks=hooks)
    sig = FakeSignaller()
    actor = Actor(host.cg, OWN, INIT, signaller=sig, procfs=host.procfs)
    s.actor = s.barrier.actor = s.enforcer.actor = actor
    return s, sig, cid


def _high(host):
    return (host.cgroot / "job" / "memory.high").read_text().strip()


def test_signal_once_per_crossing(host, tmp_path):
    s, sig, _ = _session(host, tmp_path, "signal:SIGUSR1")
    s.start()
    for _ in range(5):
        host.now += 1
        s.reconcile(periodic=True)
    assert sig.sent == [(100, signal.SIGUSR1)]
    (rec,) = host.events("barrier_action", "/job")
    assert rec["action"] == "signal" and rec["signal"] == "SIGUSR1" and rec["ok"]
    assert rec["pids"] == [100]
    host.set_rss(100, 2048 * MiB, 240 * MiB)     # under the barrier, above 0.9 of it
    s.reconcile(periodic=True)
    host.set_rss(100, 2048 * MiB, 300 * MiB)
    s.reconcile(periodic=True)
    assert len(sig.sent) == 1                    # not re-armed: no second signal
    host.set_rss(100, 2048 * MiB, 200 * MiB)     # under barrier x 0.9: re-armed
    s.reconcile(periodic=True)
    host.set_rss(100, 2048 * MiB, 300 * MiB)
    s.reconcile(periodic=True)
    assert sig.sent == [(100, signal.SIGUSR1)] * 2
    assert _high(host) == "max"                  # signal writes no cgroup file


def test_throttle_writes_memory_high_and_puts_it_back_when_usage_falls(host, tmp_path):
    s, _, cid = _session(host, tmp_path)
    s.start()
    assert _high(host) == str(256 * MiB)
    (rec,) = host.events("barrier_action", "/job")
    assert rec["action"] == "throttle" and rec["ok"] and rec["memory_high_bytes"] == 256 * MiB
    assert s.barrier.ledger.path and open(s.barrier.ledger.path).read().count('"max"') == 1
    host.set_rss(100, 2048 * MiB, 100 * MiB)
    s.reconcile(periodic=True)
    assert _high(host) == "max"
    undo = host.events("barrier_action", "/job")[-1]
    assert undo["action"] == "unthrottle" and undo["ok"] and undo["memory_high"] == "max"
    import os
    assert not os.path.exists(s.barrier.ledger.path)


def test_throttle_never_loosens_and_keeps_a_value_changed_since(host, tmp_path):
    s, _, _ = _session(host, tmp_path, high=str(128 * MiB))
    s.start()
    assert _high(host) == str(128 * MiB)         # already tighter: left alone
    assert "left as is" in host.events("barrier_action")[-1]["detail"]
    s.stop()
    assert _high(host) == str(128 * MiB)

    (tmp_path / "two").mkdir()
    host2 = Host(tmp_path / "two")
    s, _, _ = _session(host2, tmp_path / "two")
    s.start()
    (host2.cgroot / "job" / "memory.high").write_text(str(300 * MiB))   # someone else
    s.stop()
    assert _high(host2) == str(300 * MiB)
    assert "changed to" in host2.events("barrier_action")[-1]["detail"]


def test_stop_puts_memory_high_back(host, tmp_path):
    s, _, _ = _session(host, tmp_path)
    s.start()
    assert _high(host) == str(256 * MiB)
    s.stop()
    assert _high(host) == "max"
    assert host.events("barrier_action")[-1]["detail"].startswith("stopping")


def test_a_dead_beanwatchs_memory_high_is_put_back_at_start(host, tmp_path):
    import os
    state = tmp_path / "state"
    dead = ThrottleLedger(str(state), pid=os.getppid())
    dead.start_time = (dead.start_time or 0) + 999            # its pid, reused since
    cid = host.cgroup("/job")
    (host.cgroot / "job" / "memory.high").write_text(str(256 * MiB))
    dead.save({("/job", cid, "max", str(256 * MiB))})
    s = host.session([Watch("/job", cid, Limit(1024 * MiB))],
                     throttle_ledger=ThrottleLedger(str(state)))
    s.actor = s.barrier.actor = Actor(host.cg, OWN, INIT, signaller=FakeSignaller(), procfs=host.procfs)
    s.start()
    assert _high(host) == "max"
    (rec,) = host.events("barrier_action", "/job")
    assert rec["action"] == "unthrottle" and "died" in rec["detail"] and rec["ok"]
    assert not os.path.exists(dead.path)


def test_signal_and_throttle_are_refused_on_beanwatchs_own_cgroup(host, tmp_path):
    s, sig, _ = _session(host, tmp_path, "signal:SIGTERM")
    s.actor.own_cgroup = "/job/beanwatch"        # beanwatch runs below /job
    s.start()
    rec = host.events("barrier_action", "/job")[-1]
    assert not rec["ok"] and "refused: it holds beanwatch" in rec["detail"]
    assert sig.sent == []


def test_hook_runs_the_on_action_hook_once_per_crossing(host, tmp_path):
    from test_session import FakeHooks
    hooks = FakeHooks(False)
    hooks.on_exceed = None
    told = []
    hooks.after_action = lambda rec: told.append(rec) or _done()
    s, _, _ = _session(host, tmp_path, "hook", hooks=hooks)
    s.start()
    s.reconcile(periodic=True)
    assert [r["event"] for r in told] == ["barrier_action"]
    assert told[0]["action"] == "hook"
    assert host.events("hook", "/job")


def _done():
    from observer.host.hooks import HookOutcome
    return HookOutcome(True, False, 0, False, "on-action hook exited 0")


# --- kernel OOM kills --------------------------------------------------------------------------

def test_an_oom_event_carries_the_comm():
    ev = wire.OomEvent(wire.EV_OOM_KILL, 42, 7, 43, 1, 5, comm=b"toucher")
    data = wire.encode(ev)
    assert len(data) == wire.EVENT_SIZE + wire.OOM_COMM_LEN
    assert wire.decode(data) == ev and wire.decode(data).kind_name == "oom_kill"
    full = wire.encode(wire.OomEvent(wire.EV_OOM_KILL, 1, 2, 3, 1, 5, comm=b"a" * 16))
    assert wire.decode(full).comm == b"a" * 16      # no NUL when 16 long: all of it


def test_oom_kills_in_watched_cgroups_are_recorded_counted_and_rate_limited(host):
    from observer.output.metrics import SessionCollector
    parent = host.cgroup("/jobs")
    child = host.cgroup("/jobs/one")
    other = host.cgroup("/other")
    s = host.session([Watch("/jobs", parent, Limit(1024 * MiB))])
    s.start()
    s.on_event(wire.OomEvent(wire.EV_OOM_KILL, 300, child, 301, 1, 10**9, comm=b"hog\xff"))
    s.on_event(wire.OomEvent(wire.EV_OOM_KILL, 400, other, 400, 1, 10**9, comm=b"elsewhere"))
    s.handle_pending()
    (rec,) = host.events("oom_kill")
    assert rec["cgroup"] == "/jobs/one" and rec["cgroup_id"] == child
    assert (rec["pid"], rec["tgid"], rec["comm"]) == (301, 300, "hog\ufffd")
    assert rec["watched"] == ["/jobs"] and rec["oom_kills"] == 1 and rec["unrecorded"] == 0
    for i in range(60):                          # a storm in one second: 20 recorded
        s.on_event(wire.OomEvent(wire.EV_OOM_KILL, 500 + i, child, 500 + i, 1, 10**9, comm=b"x"))
    s.handle_pending()
    assert len(host.events("oom_kill")) == 20 and s.oom_kills["/jobs"] == 61
    s.on_event(wire.OomEvent(wire.EV_OOM_KILL, 900, child, 900, 1, 5 * 10**9, comm=b"x"))
    s.handle_pending()
    assert host.events("oom_kill")[-1]["unrecorded"] == 41
    host.probes.stat[wire.STAT_OOM_KILLS] = 63
    host.probes.vm_hook = "mmap-lock"
    s.reconcile()
    text = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for m in SessionCollector(s).collect() for smp in m.samples}
    assert text[("beanwatch_cgroup_oom_kills_total", (("cgroup", "/jobs"), ("name", "/jobs")))] == 62
    assert text[("beanwatch_oom_kills_total", ())] == 63
    assert not host.events("action") and not host.events("lost")


def test_an_oom_kill_in_a_cgroup_made_since_the_last_walk_is_judged_after_the_next(host):
    parent = host.cgroup("/jobs")
    s = host.session([Watch("/jobs", parent, Limit(1024 * MiB))], tree_gap=3600.0)
    s.start()
    fresh = host.cgroup("/jobs/new")             # made after the walk
    s.on_event(wire.OomEvent(wire.EV_OOM_KILL, 7, fresh, 7, 1, 10**9, comm=b"late"))
    s.handle_pending()
    assert not host.events("oom_kill") and s.tree_wanted   # the walk is rate-limited
    s.refresh_tree()
    (rec,) = host.events("oom_kill")
    assert rec["cgroup"] == "/jobs/new" and rec["comm"] == "late"


OLD_FORMAT = """name: mark_victim
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
"""


def test_the_oom_tracepoints_form_is_read_at_load(tmp_path, monkeypatch):
    """Debian's 5.10, 6.1 and 6.12 pass the victim task (the comm is in the format); older
    kernels its pid alone; without the tracepoint, a gap is said."""
    from observer.kernel.loader import Probes
    from test_loader import fake_tracefs
    root = fake_tracefs(tmp_path)
    p = Probes(lambda e: None, tracefs=root)
    monkeypatch.setattr(p, "btf", lambda: None)          # the format file decides
    p.check()
    assert p.oom_form is None and "-DHAS_OOM_TP=1" not in p.cflags({})
    assert any("OOM kills" in g for g in p.not_covered())
    fmt = tmp_path / "events" / "oom" / "mark_victim"
    fmt.mkdir(parents=True)
    (fmt / "format").write_text(OLD_FORMAT)
    p.check()
    assert p.oom_form == "pid" and "-DHAS_OOM_TP=1" in p.cflags({})
    assert "-DOOM_VICTIM_TASK=1" not in p.cflags({})
    (fmt / "format").write_text(OLD_FORMAT + "\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n")
    p.check()
    assert p.oom_form == "task" and "-DOOM_VICTIM_TASK=1" in p.cflags({})
    assert not any("OOM kills" in g for g in p.not_covered())


def test_the_hook_barrier_action_runs_the_on_action_hook_with_its_event(tmp_path):
    import os
    from observer.app.barrier import BarrierActions
    from observer.app.enforcer import Enforcer
    from observer.core.model import Account
    from observer.host.hooks import HookRunner
    dump = tmp_path / "env"
    hook = tmp_path / "after"
    hook.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {dump}\n")
    hook.chmod(0o755)
    records = []
    e = Enforcer(None, records.append, lambda: 2.0,
                 hooks=HookRunner(str(hook), None, 2.0, required_uid=os.getuid()))
    b = BarrierActions(None, records.append, lambda: 2.0, enforcer=e)
    acc = Account("/job", 5, Limit(100 << 20, 50 << 20, barrier_action=BarrierAction("hook")))
    acc.on_estimate(200 << 20)
    acc.on_exact(60 << 20, 1.0)
    b.on_check(acc, 1.0)
    b.on_check(acc, 1.5)                         # still above: not again
    while e.busy():
        e.poll()
    env = dict(i.split("=", 1) for i in dump.read_bytes().decode().split("\0") if i)
    assert env["BEANWATCH_EVENT"] == "barrier_action" and env["BEANWATCH_ACTION"] == "hook"
    assert env["BEANWATCH_EXACT_BYTES"] == str(60 << 20)
    assert [r["event"] for r in records] == ["barrier_action", "hook"]
    assert records[1]["returncode"] == 0
