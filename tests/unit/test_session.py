"""The session's wiring against a fake kernel side, fake /proc and a fake cgroup tree."""

from __future__ import annotations

import ctypes
import os

import pytest

from observer.kernel import wire
from observer.host.actions import ActionResult
from observer.host.cgroupfs import CgroupFS
from observer.core.config import Action, Limit
from observer.kernel.loader import Probes
from observer.core.model import LeafBounds
from observer.host.procfs import PAGE_SIZE, ProcFS
from observer.app.session import Session, Watch

MiB = 1 << 20


class FakeProbes:
    """Stands in for loader.Probes: counters are set by the test, writes are logged."""

    def __init__(self, log):
        self.log = log
        self.vm: dict[int, int] = {}
        self.growth: dict[int, int] = {}
        self.bounds: dict[int, LeafBounds] = {}
        self.seeded: dict[int, tuple[int, int]] = {}
        self.faults_on = False
        self.stat = [0] * wire.STAT_MAX
        self.callback_errors = 0
        self.has_fault_tracepoint = True
        self.closed = False

    def start(self):
        self.log.append(("start",))

    def counters(self):
        ids = set(self.vm) | set(self.growth)
        return {c: (self.vm.get(c, 0), self.growth.get(c, 0)) for c in ids}

    def set_bounds(self, cid, b):
        self.bounds[cid] = b
        self.log.append(("bounds", cid, b.slow))

    def enable_faults(self, on):
        if on != self.faults_on:
            self.log.append(("faults", on))
        self.faults_on = on

    def seed_process(self, tgid, pages, cid):
        if tgid in self.seeded:
            return False
        self.seeded[tgid] = (pages, cid)
        return True

    def forget_process(self, tgid, pages, cid):
        return self.seeded.pop(tgid, None) is not None

    def stats(self):
        return list(self.stat)

    def poll(self, timeout_ms):
        pass

    def close(self):
        self.closed = True


class RecordingActor:
    def __init__(self, log):
        self.log = log

    def kill(self, name, cid):
        self.log.append(("kill", name))
        return ActionResult("kill", name, [1234], True, "cgroup.kill")

    def hold(self, name, cid):   # Actor.hold: a freeze that records no members
        return self.freeze(name, cid).ok

    def freeze(self, name, cid):
        self.log.append(("freeze", name))
        return ActionResult("freeze", name, [1234], True, "cgroup.freeze")

    def thaw(self, name, cid):
        self.log.append(("thaw", name))
        return ActionResult("thaw", name, [1234], True, "")

    def report(self, name):
        return ActionResult("report", name, [1234], True, "")


class LoggingProcFS(ProcFS):
    def __init__(self, root, log):
        super().__init__(root)
        self.log = log

    def statm(self, pid):
        self.log.append(("statm", pid))
        return super().statm(pid)


class Host:
    """A fake cgroup2 mount and /proc in tmp_path."""

    def __init__(self, tmp_path):
        self.cgroot = tmp_path / "cgroup"
        self.proc = tmp_path / "proc"
        self.cgroot.mkdir()
        self.proc.mkdir()
        (self.cgroot / "cgroup.procs").write_text("")
        self.log: list = []
        self.cg = CgroupFS(str(self.cgroot))
        self.procfs = LoggingProcFS(str(self.proc), self.log)

    def cgroup(self, name):
        d = self.cgroot / name.strip("/")
        d.mkdir(parents=True, exist_ok=True)
        for f in ("cgroup.procs", "cgroup.freeze", "cgroup.kill"):
            (d / f).touch()
        return self.cg.cgroup_id(name)

    def process(self, pid, cgroup, vm, rss, pss=None):
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        self.set_rss(pid, vm, rss, pss)
        (d / "cgroup").write_text(f"0::{cgroup}\n")
        procs = self.cgroot / cgroup.strip("/") / "cgroup.procs"
        procs.write_text(procs.read_text() + f"{pid}\n")

    def set_rss(self, pid, vm, rss, pss=None):
        """statm and smaps_rollup; pss defaults to rss (nothing shared)."""
        (self.proc / str(pid) / "statm").write_text(f"{vm // PAGE_SIZE} {rss // PAGE_SIZE} 0 0 0 0 0\n")
        pss = rss if pss is None else pss
        (self.proc / str(pid) / "smaps_rollup").write_text(
            "00400000-7fff0000 ---p 00000000 00:00 0    [rollup]\n"
            f"Rss:  {rss // 1024} kB\nPss:  {pss // 1024} kB\nSwap:  0 kB\nSwapPss:  0 kB\n")

    def session(self, watches, **kw):
        self.records = []
        self.probes = FakeProbes(self.log)
        self.actor = RecordingActor(self.log)
        kw.setdefault("tree_gap", 0.0)
        s = Session(watches, self.cg, self.procfs, self.probes, self.actor, self.records.append,
                    clock=lambda: self.now, **kw)
        self.now = 1000.0
        return s

    def events(self, kind, cgroup=None):
        return [r for r in self.records if r["event"] == kind and (cgroup is None or r["cgroup"] == cgroup)]


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def test_processes_running_before_start_are_seeded(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 300 * MiB, 10 * MiB)
    host.process(101, "/job", 200 * MiB, 10 * MiB)
    s = host.session([Watch("/job", cid, Limit(1024 * MiB))])
    s.start()
    s.snapshot()
    snap = host.events("snapshot", "/job")[-1]
    assert snap["estimate_bytes"] == 500 * MiB
    assert snap["mode"] == "fast" and snap["exact_bytes"] is None
    # attach comes before the seed, so no change in between is missed
    assert host.log[0] == ("start",)
    assert host.events("start", None)[-1]["refused_features"] == {}
    # fast mode: the bound leaves exactly the headroom, and faults are not followed
    assert host.probes.bounds[cid].vm_high == (1024 - 500) * MiB // PAGE_SIZE
    assert not host.probes.faults_on


def test_crossing_switches_to_slow_and_measures_after_following_faults(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 100 * MiB, 20 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    host.log.clear()
    host.probes.vm[cid] = 900 * MiB // PAGE_SIZE  # the kernel counted a 900 MiB mmap
    s.on_event(wire.Event(wire.EV_VM_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    s.reconcile()
    assert [r["mode"] for r in host.events("mode")] == ["slow"]
    check = host.events("check")[-1]
    assert check["exact_bytes"] == 20 * MiB and check["estimate_bytes"] == 1000 * MiB
    # the slow flag reaches the kernel and faults are followed before /proc is read
    order = [e[0] for e in host.log]
    assert order.index("bounds") < order.index("statm")
    assert order.index("faults") < order.index("statm")
    b = host.probes.bounds[cid]
    assert b.slow and b.rss_high == (256 - 20) * MiB // PAGE_SIZE
    assert not host.events("action")


def test_growth_past_limit_kills_once(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 20 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    assert host.events("mode")[-1]["mode"] == "slow"
    host.set_rss(100, 2048 * MiB, 300 * MiB)
    for _ in range(2):  # two wake-ups before the kill takes effect
        host.probes.growth[cid] = 280 * MiB // PAGE_SIZE
        s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
        s.handle_pending()
        s.reconcile()
    acts = host.events("action", "/job")
    assert len(acts) == 1 and acts[0]["action"] == "kill" and acts[0]["ok"]
    assert acts[0]["rss_by_pid"] == {"100": 300 * MiB}
    assert [e for e in host.log if e[0] == "kill"] == [("kill", "/job")]
    # recorded once, on the way past the limit; the second check is counted (failcnt)
    assert [e["failcnt"] for e in host.events("exceeded", "/job")] == [1]
    assert host.events("check", "/job")[-1]["failcnt"] == 2


def test_report_mode_records_exceeded_on_the_way_over_then_reminds(host):
    """A cgroup that stays over its limit in report mode: one `exceeded` record, then a
    reminder every REMIND_EVERY seconds with the checks in between counted; over again
    after a dip under the limit: recorded again at once."""
    from observer.core.policy import REMIND_EVERY
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, 200 * MiB, Action.REPORT))])
    s.start()
    for _ in range(7):
        host.now += 0.005
        s.reconcile(periodic=True)
    over = host.events("exceeded", "/job")
    assert [(e["reminder"], e["repeats"]) for e in over] == [(False, 0)]
    host.now += REMIND_EVERY
    s.reconcile(periodic=True)
    over = host.events("exceeded", "/job")
    assert [(e["reminder"], e["repeats"]) for e in over] == [(False, 0), (True, 7)]
    assert over[-1]["failcnt"] == 9                     # every check counted
    host.set_rss(100, 2048 * MiB, 220 * MiB)             # under the limit, over the barrier
    s.reconcile(periodic=True)
    assert [e["reminder"] for e in host.events("barrier", "/job")] == [False]
    host.set_rss(100, 2048 * MiB, 300 * MiB)
    s.reconcile(periodic=True)
    assert len(host.events("exceeded", "/job")) == 3     # over again: at once
    assert len(host.events("action", "/job")) == 2       # report: once per time over


def test_lost_events_force_an_exact_check_and_never_act_on_the_estimate(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 20 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    checks = len(host.events("check"))
    host.probes.stat[wire.STAT_RINGBUF_FULL] = 7
    s.reconcile()
    lost = host.events("lost", "/job")
    assert lost and lost[-1]["events_lost"] == 7
    assert len(host.events("check")) == checks + 1
    assert not host.events("action")  # estimate 2 GiB over a 256 MiB limit, exact 20 MiB
    s.reconcile()
    assert len(host.events("lost")) == 1  # counted once


def test_unaccounted_processes_make_every_limited_cgroup_slow(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 10 * MiB, 5 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.start()
    assert host.events("snapshot") == [] and not host.events("mode")
    host.probes.stat[wire.STAT_PROCS_FULL] = 1
    s.reconcile()
    assert host.events("mode", "/job")[-1]["mode"] == "slow"
    full = host.events("map_full")
    assert len(full) == 1 and full[0]["map_full"] == 1 and s.map_full == 1
    assert host.probes.faults_on
    # more failures: counted, never reported again (no flood)
    host.probes.stat[wire.STAT_LEAVES_FULL] = 500
    s.reconcile()
    s.reconcile()
    assert len(host.events("map_full")) == 1 and s.map_full == 501
    assert not host.events("lost")


def test_return_to_fast_mode_has_hysteresis(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 300 * MiB, 5 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.start()
    assert host.events("mode")[-1]["mode"] == "slow"
    host.probes.vm[cid] = -60 * MiB // PAGE_SIZE   # 240 MiB: under the limit, above 230.4
    s.reconcile()
    assert host.events("mode")[-1]["mode"] == "slow"
    host.probes.vm[cid] = -80 * MiB // PAGE_SIZE   # 220 MiB: under limit x 0.9
    s.reconcile()
    assert host.events("mode")[-1]["mode"] == "fast"
    assert not host.probes.bounds[cid].slow
    # the fault programs stay attached for a grace period (detaching stalls the loop)
    assert host.probes.faults_on
    host.now += 11
    s.reconcile()
    assert not host.probes.faults_on


def test_stop_thaws_what_was_frozen(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.FREEZE))])
    s.start()
    assert host.events("action")[-1]["action"] == "freeze"
    assert s.stop() == ["/job"]
    assert ("thaw", "/job") in host.log and host.probes.closed


def test_stop_keeps_frozen_when_asked(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.FREEZE))], keep_frozen=True)
    s.start()
    assert s.stop() == [] and ("thaw", "/job") not in host.log


def test_a_sibling_is_not_covered(host):
    a = host.cgroup("/a")
    b = host.cgroup("/ab")  # a name prefix, not a child
    host.process(100, "/ab", 4096 * MiB, 1024 * MiB)
    s = host.session([Watch("/a", a, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    assert host.events("snapshot") == []
    s.snapshot()
    assert host.events("snapshot", "/a")[-1]["estimate_bytes"] == 0
    assert b not in s.leaves_of["/a"]
    assert not host.events("action")


def test_exception_in_event_callback_is_counted():
    got = []
    probes = Probes(got.append)
    bad = ctypes.create_string_buffer(b"\x63" * wire.EVENT_SIZE)  # unknown kind
    good = ctypes.create_string_buffer(wire.encode(wire.Event(wire.EV_VM_HIGH, 1, 2, 3, 0, 4)))
    assert probes._callback(None, ctypes.addressof(bad), wire.EVENT_SIZE) == 0
    assert probes._callback(None, ctypes.addressof(good), wire.EVENT_SIZE) == 0
    assert probes.callback_errors == 1
    assert got == [wire.Event(wire.EV_VM_HIGH, 1, 2, 3, 0, 4)]


def test_reload_keeps_the_state_of_cgroups_still_watched(host):
    a = host.cgroup("/a")
    b = host.cgroup("/b")
    host.process(100, "/a", 300 * MiB, 5 * MiB)
    s = host.session([Watch("/a", a, Limit(256 * MiB)), Watch("/b", b, Limit(1024 * MiB))])
    s.start()
    acc_a = s.accounts[0]
    assert acc_a.mode.value == "slow" and acc_a.switches == 1
    # /b goes, /c comes, /a gets a higher limit: it keeps its counts and returns to fast
    c = host.cgroup("/c")
    s.apply_watches([Watch("/a", a, Limit(2048 * MiB)), Watch("/c", c, Limit(64 * MiB))])
    assert [x.name for x in s.accounts] == ["/a", "/c"]
    assert s.accounts[0] is acc_a and acc_a.switches == 2 and acc_a.mode.value == "fast"
    assert host.probes.bounds[a].vm_high == (2048 - 300) * MiB // PAGE_SIZE
    assert c in s.leaves_of["/c"] and "/b" not in s.leaves_of


def test_reload_of_a_recreated_cgroup_starts_afresh(host):
    a = host.cgroup("/a")
    s = host.session([Watch("/a", a, Limit(256 * MiB))])
    s.start()
    s.accounts[0].failcnt = 3
    s.apply_watches([Watch("/a", a + 1000, Limit(256 * MiB))])
    # started afresh, then resolved by path to the cgroup there now
    assert s.accounts[0].failcnt == 0 and s.accounts[0].cgroup_id == a


class Exploding(FakeProbes):
    def __init__(self, log):
        super().__init__(log)
        self.polls = 0

    def poll(self, timeout_ms):
        self.polls += 1
        if self.polls == 2:
            raise RuntimeError("boom")


def test_an_error_in_one_round_is_logged_and_the_loop_goes_on(host):
    cid = host.cgroup("/job")
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.probes = Exploding(host.log)
    s.start()
    rounds = iter(range(6))
    s.run(None, lambda: next(rounds, None) is None)
    assert s.probes.polls == 6
    errors = host.events("error")
    assert len(errors) == 1 and "boom" in errors[0]["detail"] and s.loop_errors == 1


def test_a_dead_beanwatchs_frozen_cgroups_are_thawed_at_start(host, tmp_path):
    from observer.host.state import FrozenLedger
    cid = host.cgroup("/job")
    dead = FrozenLedger(str(tmp_path / "state"), pid=2**22 + 12345)  # above pid_max: not running
    dead.save({("/job", cid)})
    s = host.session([Watch("/job", cid, Limit(256 * MiB))],
                     ledger=FrozenLedger(str(tmp_path / "state")))
    s.start()
    assert ("thaw", "/job") in host.log
    assert host.events("thaw", "/job")[0]["ok"]
    assert not os.path.exists(dead.path)


def test_a_freeze_is_recorded_until_the_thaw_at_exit(host, tmp_path):
    from observer.host.state import FrozenLedger
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    ledger = FrozenLedger(str(tmp_path / "state"))
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.FREEZE))], ledger=ledger)
    s.start()
    assert os.path.exists(ledger.path)
    s.stop()
    assert not os.path.exists(ledger.path)


class FakeHooks:
    def __init__(self, veto):
        from observer.host.hooks import HookOutcome
        self.on_exceed, self.on_action = "/x/exceed", "/x/action"
        self.veto = veto
        self.Outcome = HookOutcome
        self.seen = []

    def before_action(self, record):
        self.seen.append(("exceed", record["action"], record["pids"]))
        return self.Outcome(True, self.veto, 1 if self.veto else 0, False, "decided")

    def after_action(self, record):
        self.seen.append(("action", record["action"], record["ok"]))
        return self.Outcome(True, False, 0, False, "ran")


def test_on_exceed_veto_holds_frozen_then_thaws_and_nothing_is_killed(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    hooks = FakeHooks(veto=True)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))], hooks=hooks)
    s.start()
    acted = [e for e in host.log if e[0] in ("freeze", "kill", "thaw")]
    assert acted == [("freeze", "/job"), ("thaw", "/job")]
    act = host.events("action", "/job")[-1]
    assert act["vetoed"] and not act["ok"] and act["pids"] == [100]   # what the hook was given
    assert hooks.seen == [("exceed", "kill", [100])]   # no on-action hook without an action


def test_on_exceed_proceed_kills_while_held_then_thaws_and_on_action_runs(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    hooks = FakeHooks(veto=False)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))], hooks=hooks)
    s.start()
    acted = [e for e in host.log if e[0] in ("freeze", "kill", "thaw")]
    assert acted == [("freeze", "/job"), ("kill", "/job"), ("thaw", "/job")]
    assert host.events("action", "/job")[-1]["hook"] == "decided"
    assert hooks.seen[-1] == ("action", "kill", True)
    assert host.events("hook", "/job")[-1]["detail"] == "ran"


def test_report_mode_never_freezes_even_for_a_hook(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))], hooks=FakeHooks(veto=False))
    s.start()
    assert not [e for e in host.log if e[0] in ("freeze", "kill", "thaw")]
    assert host.events("action", "/job")[-1]["action"] == "report"


class RacingProbes(FakeProbes):
    """The kernel counter moves past the new bound while Python writes it (disarmed)."""

    def __init__(self, log, cid, jump):
        super().__init__(log)
        self.cid, self.jump, self.armed_writes = cid, jump, 0

    def set_bounds(self, cid, b):
        super().set_bounds(cid, b)
        if cid == self.cid and self.jump:
            self.vm[cid] = self.vm.get(cid, 0) + self.jump   # an mmap that sent no event
            self.jump = 0


def test_a_crossing_while_disarmed_is_caught_by_the_recheck(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 10 * MiB, 5 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.probes = RacingProbes(host.log, cid, 1024 * MiB // PAGE_SIZE)
    s.start()
    assert s.dirty, "the counter past its fresh bound was not noticed"
    s.reconcile()
    assert host.events("mode", "/job")[-1]["mode"] == "slow"


def test_a_cgroup_the_walk_cannot_read_is_skipped_reported_once_and_counted(host, monkeypatch):
    import errno
    import observer.host.cgroupfs as cgroupfs
    cid = host.cgroup("/job")
    host.cgroup("/job/locked/inner")
    host.process(100, "/job", 300 * MiB, 10 * MiB)
    real_open = os.open
    locked = os.stat(host.cgroot / "job" / "locked").st_ino

    def open_(path, flags, *a, dir_fd=None, **kw):
        if path == "inner" and dir_fd is not None and os.fstat(dir_fd).st_ino == locked:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, *a, dir_fd=dir_fd, **kw)
    monkeypatch.setattr(cgroupfs.os, "open", open_)
    s = host.session([Watch("/job", cid, Limit(1024 * MiB))])
    s.start()
    s.refresh_tree()
    skipped = host.events("skipped")
    assert [r["cgroup"] for r in skipped] == ["/job/locked/inner"]
    assert skipped[0]["detail"] == "Too many open files" and s.cgroups_skipped == 1
    s.snapshot()
    assert host.events("snapshot", "/job")[-1]["estimate_bytes"] == 300 * MiB


def test_a_cgroup_removed_and_made_again_is_followed_by_its_path(host):
    import shutil
    cid = host.cgroup("/svc")
    s = host.session([Watch("/svc", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    shutil.rmtree(host.cgroot / "svc")
    host.cgroup("/other")          # so that the new directory cannot take the old inode
    new = host.cgroup("/svc")
    assert new != cid
    s.refresh_tree()
    rec = host.events("recreated", "/svc")
    assert len(rec) == 1 and rec[0]["previous_id"] == cid and rec[0]["cgroup_id"] == new
    assert s.accounts[0].cgroup_id == new and s.covering(new) == [s.accounts[0]]
    s.refresh_tree()
    assert len(host.events("recreated")) == 1


def test_a_watched_cgroup_missing_at_start_is_waited_for(host):
    s = host.session([Watch("/later", 0, Limit(256 * MiB))])
    s.start()
    assert [r["cgroup"] for r in host.events("waiting")] == ["/later"]
    s.refresh_tree()
    assert len(host.events("waiting")) == 1
    cid = host.cgroup("/later")
    s.refresh_tree()
    assert host.events("appeared", "/later") and s.accounts[0].cgroup_id == cid


def test_the_id_is_checked_before_measuring(host):
    import shutil
    cid = host.cgroup("/svc")
    host.process(100, "/svc", 2048 * MiB, 300 * MiB)
    s = host.session([Watch("/svc", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    assert [e for e in host.log if e[0] == "kill"]   # killed: measured and acted on /svc
    shutil.rmtree(host.cgroot / "svc")
    host.cgroup("/other")
    new = host.cgroup("/svc")
    host.process(200, "/svc", 2048 * MiB, 300 * MiB)
    host.now += 5
    s.check_exact(s.accounts[0], host.now)
    # re-resolved before measuring: the record and the action name the new cgroup's id
    assert s.accounts[0].cgroup_id == new
    assert host.events("action")[-1]["cgroup_id"] == new


def test_limits_from_memory_max_are_followed_live(host):
    from observer.app.session import memory_max_template
    a = host.cgroup("/a")
    (host.cgroot / "a" / "memory.max").write_text(f"{256 * MiB}\n")
    s = host.session([Watch("/a", a, Limit(256 * MiB))],
                     memory_max=memory_max_template(0.1, False))
    s.start()
    by = lambda: {acc.name: acc for acc in s.accounts}   # noqa: E731
    assert by()["/a"].limit.limit == 256 * MiB and by()["/a"].limit.action is Action.REPORT
    # a new cgroup with a limit, and a changed limit, are taken at the next walk
    host.cgroup("/b")
    (host.cgroot / "b" / "memory.max").write_text(f"{64 * MiB}\n")
    (host.cgroot / "a" / "memory.max").write_text(f"{512 * MiB}\n")
    s.refresh_tree()
    assert by()["/b"].limit.limit == 64 * MiB and by()["/a"].limit.limit == 512 * MiB
    assert host.events("limit", "/a")[-1]["previous_limit_bytes"] == 256 * MiB
    (host.cgroot / "a" / "memory.max").write_text("max\n")
    import shutil
    shutil.rmtree(host.cgroot / "b")
    s.refresh_tree()
    assert by()["/a"].limit is None and "/b" not in by()


def test_an_event_storm_from_one_cgroup_is_rate_limited_and_resynchronised(host):
    a, b = host.cgroup("/t/a"), host.cgroup("/t/b")
    other = host.cgroup("/o")
    s = host.session([Watch("/t", host.cg.cgroup_id("/t"), Limit(256 * MiB)),
                      Watch("/o", other, Limit(256 * MiB))], event_rate=10, event_burst=5)
    s.start()
    t0 = 5 * 10**9
    for i in range(1000):   # a process moved between /t/a and /t/b in a loop, in 0.1 s
        src, dst = (a, b) if i % 2 else (b, a)
        s.on_event(wire.Event(wire.EV_MOVED, 1, dst, 0, src, t0 + i * 100_000))
    s.on_event(wire.Event(wire.EV_VM_HIGH, 2, other, 0, 0, t0 + 10**8))
    s.handle_pending()
    assert s.events_seen == 1001
    assert s.events_throttled == 1000 - 2 * 5   # a burst of 5 each (0.1 s refills < 1 token)
    assert other in s.rearm                          # the other tenant is still served
    assert s.resync == {a, b}
    s.resynchronise()
    assert {a, b} <= s.rearm and not s.resync and s.dirty


# issue 11: usage counts each shared page once; records never mix stale and fresh figures


def test_sharers_over_by_rss_sum_but_not_by_pss_are_not_killed(host):
    """4 forked processes sharing 160 MiB, a 256 MiB limit: the RSS sum says 640 MiB."""
    cid = host.cgroup("/job")
    for pid in (100, 101, 102, 103):
        host.process(pid, "/job", 600 * MiB, 160 * MiB, pss=40 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    check = host.events("check", "/job")[-1]
    assert (check["exact_bytes"], check["rss_bytes"], check["pss_bytes"]) == (
        160 * MiB, 640 * MiB, 160 * MiB)
    assert check["exact_ts"] == 1000.0
    assert check["estimate_bytes"] >= check["rss_bytes"] >= check["pss_bytes"]
    assert not host.events("action") and not host.events("exceeded")
    # re-armed on the precise figure: (256 - 160) MiB of resident growth before a wake-up
    assert host.probes.bounds[cid].rss_high == 96 * MiB // PAGE_SIZE
    # one sharer writes 100 MiB of its own: now over by PSS too
    host.set_rss(100, 600 * MiB, 260 * MiB, pss=140 * MiB)
    host.probes.growth[cid] = 100 * MiB // PAGE_SIZE
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    s.reconcile()
    (act,) = host.events("action", "/job")
    assert act["exact_bytes"] == 260 * MiB and act["pss_by_pid"]["100"] == 140 * MiB


def test_the_precise_tier_is_not_read_while_the_rss_sum_is_under(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 2048 * MiB, 20 * MiB)
    reads = []
    orig = host.procfs.smaps_rollup
    host.procfs.smaps_rollup = lambda pid: reads.append(pid) or orig(pid)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    check = host.events("check", "/job")[-1]
    assert check["exact_bytes"] == check["rss_bytes"] == 20 * MiB and check["pss_bytes"] is None
    assert reads == []


def test_a_child_counted_by_proc_first_is_in_the_estimate_of_the_same_record(host):
    """/proc lists a child the estimate read before it did not count yet: the estimate is
    taken after /proc, so exact never shows above it."""
    cid = host.cgroup("/job")
    host.process(100, "/job", 300 * MiB, 20 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.start()
    assert host.events("mode", "/job")[-1]["mode"] == "slow"
    host.process(101, "/job", 300 * MiB, 20 * MiB)   # forked: in cgroup.procs already
    statm = host.procfs.statm

    def statm_then_fork_counted(pid):
        if pid == 101:   # the fork tracepoint runs just after /proc listed the child
            host.probes.vm[cid] = host.probes.vm.get(cid, 0) + 300 * MiB // PAGE_SIZE
        return statm(pid)
    host.procfs.statm = statm_then_fork_counted
    s.exact_due.add("/job")
    s.reconcile()
    check = host.events("check", "/job")[-1]
    assert check["rss_bytes"] == 40 * MiB and check["estimate_bytes"] == 600 * MiB


def test_after_the_switch_back_to_fast_no_old_exact_is_shown(host):
    cid = host.cgroup("/job")
    host.process(100, "/job", 300 * MiB, 18 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.start()
    assert host.events("check", "/job")[-1]["exact_bytes"] == 18 * MiB
    host.probes.vm[cid] = -300 * MiB // PAGE_SIZE     # the process unmapped everything
    s.reconcile()
    mode = host.events("mode", "/job")[-1]
    assert mode["mode"] == "fast" and mode["estimate_bytes"] == 0
    assert (mode["exact_bytes"], mode["rss_bytes"], mode["exact_ts"]) == (None, None, None)


def test_rss_plus_swap_counts_vmswap_then_swappss(tmp_path):
    """--count rss+swap: VmSwap in the cheap tier, SwapPss in the precise one."""
    from observer.app.session import measure_usage
    from observer.core.config import Count
    host = Host(tmp_path)
    host.cgroup("/job")
    host.process(100, "/job", 900 * MiB, 100 * MiB)
    (host.proc / "100" / "status").write_text("Name:\tx\nVmSwap:\t  204800 kB\n")
    (host.proc / "100" / "smaps_rollup").write_text(
        "0-1 ---p 0 00:00 0 [rollup]\nRss: 102400 kB\nPss: 51200 kB\n"
        "Swap: 204800 kB\nSwapPss: 102400 kB\n")
    rss_only = measure_usage(host.cg, host.procfs, "/job", Limit(256 * MiB), 1.0)
    assert (rss_only.rss, rss_only.pss) == (100 * MiB, None)      # 100 MiB: under
    swap = Limit(256 * MiB, count=Count.RSS_SWAP)
    u = measure_usage(host.cg, host.procfs, "/job", swap, 1.0)
    # 100 + 200 MiB of swap is over: the precise tier, swap in it too
    assert (u.rss, u.pss, u.figure) == (300 * MiB, 150 * MiB, 150 * MiB)
    assert u.count is Count.RSS_SWAP


def test_the_cgroup_is_held_while_pss_is_read_only_near_or_over_the_limit(host):
    """First read over by RSS: held (frozen, then thawed: PSS is under). Sharers found well
    under by PSS: read again without a hold. Near the limit: held again."""
    cid = host.cgroup("/job")
    for pid in (100, 101, 102, 103):
        host.process(pid, "/job", 600 * MiB, 160 * MiB, pss=40 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    acts = lambda: [e for e in host.log if e[0] in ("freeze", "thaw", "kill")]  # noqa: E731
    assert acts() == [("freeze", "/job"), ("thaw", "/job")]
    assert host.events("check", "/job")[-1]["held_while_measured"] is True
    assert not s.enforcer.held
    s.exact_due.add("/job")
    s.reconcile()
    assert len(acts()) == 2 and "held_while_measured" not in host.events("check", "/job")[-1]
    host.set_rss(100, 600 * MiB, 260 * MiB, pss=140 * MiB)     # 260 MiB by PSS: over
    s.exact_due.add("/job")
    s.reconcile()
    assert host.events("action", "/job")
    assert acts()[2:] == [("kill", "/job")]   # last PSS well under: read without a hold


def killer_at_256m(host):
    """/job with one process (1 GiB mapped, 100 MiB resident) under a 256 MiB kill limit,
    started (slow, checked), the log cleared: (session, cgroup id)."""
    cid = host.cgroup("/job")
    host.process(100, "/job", 1024 * MiB, 100 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    host.log.clear()
    return s, cid


def test_just_under_by_pss_the_bound_is_rearmed_from_the_hold_before_the_thaw(host):
    """A toucher over by its RSS sum, just under by PSS (its libraries are shared): the
    growth bound starts from the counter read while it is held (the figure decided on),
    not from the one read before statm, and is written before the thaw, so growth past
    what is left wakes the loop at once. It grows 2 MiB between statm and the hold."""
    s, cid = killer_at_256m(host)
    host.set_rss(100, 1024 * MiB, 257 * MiB, pss=(256 * MiB) - 512 * 1024)
    host.probes.growth[cid] = 157 * MiB // PAGE_SIZE
    freeze = s.enforcer.actor.freeze

    def freeze_after_growth(name, cid_):
        host.probes.growth[cid] += 2 * MiB // PAGE_SIZE   # ran on until the freeze
        return freeze(name, cid_)
    s.enforcer.actor.freeze = freeze_after_growth
    s.exact_due.add("/job")
    s.reconcile()
    assert not host.events("action")
    check = host.events("check", "/job")[-1]
    assert check["held_while_measured"] is True and check["pss_bytes"] < 256 * MiB
    steps = [e[0] for e in host.log if e[0] in ("freeze", "bounds", "thaw")]
    assert steps[:3] == ["freeze", "bounds", "thaw"]
    # 512 KiB left above the counter at the hold (159 MiB), not above the earlier 157 MiB
    assert host.probes.bounds[cid].rss_high == (159 * MiB + 512 * 1024) // PAGE_SIZE


def test_over_by_rss_but_well_under_by_pss_does_not_wake_at_fault_speed(host):
    """Sharers whose RSS sum is far over but PSS well under: the bound leaves them the
    whole headroom PSS leaves (no wake-up per fault), and they are read without a hold."""
    cid = host.cgroup("/job")
    for pid in (100, 101, 102, 103):
        host.process(pid, "/job", 600 * MiB, 160 * MiB, pss=40 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    host.probes.growth[cid] = 10
    s.exact_due.add("/job")
    host.log.clear()
    s.reconcile()
    assert not [e for e in host.log if e[0] in ("freeze", "thaw")]
    assert host.probes.bounds[cid].rss_high - 10 == 96 * MiB // PAGE_SIZE


def test_a_bound_written_again_without_a_check_keeps_counting_from_the_check(host):
    """After a check, another event (here a new cgroup) makes the loop write bounds again
    with grown counters: the growth since the check still counts, and a counter already
    past the bound gets a check at once."""
    cid = host.cgroup("/job")
    host.process(100, "/job", 1024 * MiB, 100 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    first = host.probes.bounds[cid].rss_high
    assert first == host.probes.growth.get(cid, 0) + 156 * MiB // PAGE_SIZE
    checks = len(host.events("check", "/job"))
    host.probes.growth[cid] = 100 * MiB // PAGE_SIZE     # grew 100 MiB, under the bound
    other = host.cgroup("/other")
    s.on_event(wire.Event(wire.EV_NEW_LEAF, 1, other, 0, 0, 0))
    s.handle_pending()
    s.reconcile()
    assert host.probes.bounds[cid].rss_high == first       # not moved by the rewrite
    assert len(host.events("check", "/job")) == checks
    host.probes.growth[cid] = 157 * MiB // PAGE_SIZE     # past it: caught by the re-read
    s.rearm.add(cid)
    s.reconcile()
    s.reconcile()
    assert len(host.events("check", "/job")) == checks + 1


def test_a_flapping_cgroup_floods_no_mode_or_check_records(host):
    """A process moved in and out of a limited cgroup in a loop: its estimate crosses the
    limit and falls back at every move. Each crossing still switches the mode (and measures);
    the records of it are limited per cgroup and say how many were left out. Another
    cgroup's records are not affected."""
    from observer.app.session import RECORD_BURST, RECORD_RATE
    cid = host.cgroup("/job")
    other = host.cgroup("/other")
    host.process(100, "/job", 8 * MiB, 8 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB)),
                      Watch("/other", other, Limit(256 * MiB))])
    s.start()
    host.records.clear()
    flips = 2000
    for i in range(flips):          # 2,000 crossings in 10 s
        host.now = 1000.0 + i * 0.005
        host.probes.vm[cid] = (600 * MiB if i % 2 == 0 else 0) // PAGE_SIZE
        s.reconcile()
    acc = next(a for a in s.accounts if a.name == "/job")
    assert acc.switches >= flips                     # the model followed every crossing
    modes, checks = host.events("mode", "/job"), host.events("check", "/job")
    seconds = flips * 0.005
    assert len(modes) <= RECORD_BURST + RECORD_RATE["mode"] * seconds + 1
    assert len(checks) <= RECORD_BURST + RECORD_RATE["check"] * seconds + 1
    assert len(modes) >= RECORD_RATE["mode"] * seconds   # still told, at the rate
    told = len(modes) + sum(r.get("suppressed", 0) for r in modes)
    # every switch is either in a record, counted in a later one's `suppressed`, or waiting
    # to be counted in the next one
    assert told + s.left_out["mode"].get(cid, 0) == flips
    assert s.records_suppressed >= flips - len(modes)
    # the other cgroup, crossing once now, is told at once
    host.probes.vm[other] = 600 * MiB // PAGE_SIZE
    s.reconcile()
    assert [r["mode"] for r in host.events("mode", "/other")] == ["slow"]


def test_trace_tells_rss_growth_from_the_checks_slow_mode_makes_anyway(host):
    """`trace`'s wiring: limits from memory.max, the session's own statm reads per check
    (none more for rss), one rss record per process grown by rss_min per interval, the
    switch passed on; report only: nothing frozen or killed."""
    from dataclasses import replace
    from observer.app.session import memory_max_template
    from observer.app.trace import Tracer
    cid = host.cgroup("/job")
    (host.cgroot / "job" / "memory.max").write_text(f"{64 * MiB}\n")
    host.process(100, "/job", 300 * MiB, 8 * MiB)
    host.process(101, "/job", 10 * MiB, 2 * MiB)
    out = []
    template = memory_max_template(0.1, True)
    s = host.session([Watch("/job", cid, replace(template, limit=64 * MiB))],
                     memory_max=template)
    t = Tracer(s, out.append, min_pages=1, rss_min=MiB)
    s.sink = lambda rec: (host.records.append(rec), t.on_record(rec))
    s.enforcer.sink = s.barrier.sink = s.sink
    s.on_measured = t.on_measured
    s.start()                                   # 310M mapped, limit 64M: slow at once
    assert [r["event"] for r in out] == ["mode"] and out[0]["mode"] == "slow"
    t.tick()                                    # the switch's check is the baseline
    assert len(out) == 1

    def interval():
        host.now += 1.0
        host.log.clear()
        s.reconcile(periodic=True)
        assert sorted(e[1] for e in host.log if e[0] == "statm") == sorted(
            int(p) for p in (host.cgroot / "job" / "cgroup.procs").read_text().split())
        assert not [e for e in host.log if e[0] in ("freeze", "kill", "thaw")]
        t.tick()
    host.set_rss(100, 300 * MiB, 24 * MiB)      # +16M
    host.set_rss(101, 10 * MiB, 2 * MiB + 512 * 1024)   # +512K: under rss_min
    interval()
    rss = [r for r in out if r["event"] == "rss"]
    assert [(r["pid"], r["growth_bytes"], r["rss_bytes"]) for r in rss] == \
        [(100, 16 * MiB, 24 * MiB)]
    assert rss[0]["exact_bytes"] == 26 * MiB + 512 * 1024 and rss[0]["limit_bytes"] == 64 * MiB
    assert rss[0]["interval_s"] == 1.0 and rss[0]["ts"] == host.now
    host.process(102, "/job", 20 * MiB, 3 * MiB)      # new since: counts from 0
    host.set_rss(100, 300 * MiB, 90 * MiB)      # past the limit: reported, never acted on
    interval()
    rss = [r for r in out if r["event"] == "rss"][1:]
    assert [(r["pid"], r["growth_bytes"]) for r in rss] == [(100, 66 * MiB), (102, 3 * MiB)]
    assert host.events("exceeded", "/job")
    interval()                                  # nothing grew
    assert len([r for r in out if r["event"] == "rss"]) == 3


def test_trace_watches_match_the_memory_max_template_and_stay_inside_cgroup(host):
    """trace's accounts: limits from memory.max as the session follows them (no spurious
    `limit` record at the first walk), every --cgroup known, a --limit outside them refused."""
    from observer.app import runtime
    from observer.app.session import memory_max_template
    from observer.core.config import DEFAULT_HYSTERESIS, ConfigError, parse_limit_spec
    host.cgroup("/t/b")
    a = host.cgroup("/t/a")
    (host.cgroot / "t" / "a" / "memory.max").write_text(f"{64 * MiB}\n")
    h = runtime.Host(host.cg, host.procfs, "/", "/")
    watches, names = runtime.trace_watches(h, [], ["/t/b"])
    assert names == ["/t/b"]
    assert {w.name: w.limit and w.limit.limit for w in watches}["/t/a"] == 64 * MiB
    s = host.session(watches, memory_max=memory_max_template(DEFAULT_HYSTERESIS, True))
    s.start()
    assert host.events("limit") == []
    watches, _ = runtime.trace_watches(h, [parse_limit_spec("/t/a=32M")], ["/t"])
    assert [(w.name, w.limit and w.limit.action) for w in watches] == \
        [("/t/a", Action.REPORT), ("/t", None)]
    with pytest.raises(ConfigError, match="outside every --cgroup"):
        runtime.trace_watches(h, [parse_limit_spec("/t/a=32M")], ["/t/b"])


def test_a_process_that_shrank_after_proc_read_it_keeps_the_estimate_above_the_rss(host):
    """/proc read a forked child before its exec (its parent's copy: 300 MiB resident); the
    exec shrank it before the estimate was read after /proc. The estimate read before /proc
    bounded that moment: the record never shows exact above its estimate (CI, session 4)."""
    cid = host.cgroup("/job")
    host.process(100, "/job", 300 * MiB, 20 * MiB)
    s = host.session([Watch("/job", cid, Limit(256 * MiB))])
    s.start()
    assert host.events("mode", "/job")[-1]["mode"] == "slow"
    host.process(101, "/job", 400 * MiB, 300 * MiB)   # the child, still its parent's copy
    host.probes.vm[cid] = host.probes.vm.get(cid, 0) + 400 * MiB // PAGE_SIZE
    statm = host.procfs.statm

    def statm_then_exec(pid):
        out = statm(pid)
        if pid == 101:   # exec: 400 MiB mapped -> 10 MiB, once /proc has read the copy
            host.probes.vm[cid] -= 390 * MiB // PAGE_SIZE
        return out
    host.procfs.statm = statm_then_exec
    s.exact_due.add("/job")
    s.reconcile()
    check = host.events("check", "/job")[-1]
    assert check["rss_bytes"] == 320 * MiB        # after the exec: 310 MiB mapped
    assert check["estimate_bytes"] == 700 * MiB   # the figure read before /proc
    assert check["estimate_bytes"] >= check["rss_bytes"]


def test_a_crossing_of_the_growth_bound_holds_before_proc_is_read(host):
    """A toucher past its limit: the cgroup is frozen as the event is handled, before the
    round reads the counters, cgroup.procs or statm; the check measures it held (RSS, then
    PSS), the kill follows, and nothing is left held."""
    s, cid = killer_at_256m(host)
    host.set_rss(100, 1024 * MiB, 258 * MiB)
    host.probes.growth[cid] = 158 * MiB // PAGE_SIZE   # 2 MiB past the 156 MiB left
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    assert host.log == [("freeze", "/job")]
    s.reconcile()
    steps = [e for e in host.log if e[0] in ("freeze", "statm", "kill", "thaw")]
    assert steps == [("freeze", "/job"), ("statm", 100), ("kill", "/job"), ("thaw", "/job")]
    assert host.events("check", "/job")[-1]["held_while_measured"] is True
    assert host.events("action", "/job")[-1]["pss_by_pid"] == {"100": 258 * MiB}
    assert not s.enforcer.held and not s.early_holds


def test_a_long_walk_goes_in_slices_and_a_crossing_between_them_is_acted_on(host, monkeypatch):
    """A tenant's thousands of cgroups make the walk long (16-57 us each): it goes in slices
    with rounds between them, in which events are handled with the tree as it was: a slow
    cgroup's crossing is held and killed before the walk ends. The last slice installs the
    whole new tree."""
    import observer.app.session as session_mod
    monkeypatch.setattr(session_mod, "WALK_SLICE", 0.0)
    monkeypatch.setattr(session_mod, "WALK_SLICE_MIN", 1)    # a slice: 16 cgroups
    s, cid = killer_at_256m(host)
    ids = {host.cgroup(f"/tenant/c{i}") for i in range(150)}
    assert not ids & s.tree.keys()
    s.maybe_refresh(periodic=True)
    s.walked_at = float("-inf")
    s.maybe_refresh(periodic=True)            # the first slice
    assert s.walker is not None and len(s.walk_found) == 16
    assert not ids & s.tree.keys(), "the tree is replaced only when the walk is done"
    host.set_rss(100, 1024 * MiB, 258 * MiB)
    host.probes.growth[cid] = 158 * MiB // PAGE_SIZE   # 2 MiB past the 156 MiB left
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()                         # a round between two slices
    assert host.log[0] == ("freeze", "/job") and s.walker is not None
    s.reconcile()
    assert host.events("action", "/job") and s.walker is not None
    slices = 1
    while s.walker is not None:
        s.maybe_refresh()
        slices += 1
    assert slices == -(-len(s.tree) // 16) == 10 and ids <= s.tree.keys() and cid in s.tree
    assert s.covered_by[cid] == [s.accounts[0]] and s.leaves_of["/job"] == [cid]
    assert not s.enforcer.held and not s.early_holds


def test_a_slice_ends_early_at_news_of_a_covered_cgroup_only(host, monkeypatch):
    """Inside a slice the ring buffer is polled every 16 cgroups: an event of a covered
    cgroup ends the slice at once (the round handles it), one of another cgroup (a
    churning tenant's) does not."""
    import observer.app.session as session_mod
    monkeypatch.setattr(session_mod, "WALK_SLICE", 60.0)
    monkeypatch.setattr(session_mod, "WALK_SLICE_MIN", 1)
    s, cid = killer_at_256m(host)
    other = host.cgroup("/other")
    for i in range(150):
        host.cgroup(f"/tenant/c{i}")
    polls = []

    def poll(timeout_ms):
        polls.append(timeout_ms)
        if len(polls) == 2:
            s.on_event(wire.Event(wire.EV_NEW_LEAF, 0, other, 0, 0, 0))
        if len(polls) == 4:
            s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    host.probes.poll = poll
    s.begin_walk()
    assert s.walker is not None and len(s.walk_found) == 4 * 16 and polls == [0] * 4
    s.handle_pending()
    s.maybe_refresh()                 # no news: the rest in one slice
    assert s.walker is None and len(s.tree) > 150


def test_a_walk_that_fails_midway_leaves_the_tree_in_use(host, monkeypatch):
    """An error inside a slice (the loop logs it and goes on) drops the walk: the tree in
    use stays whole, never the part walked so far."""
    import observer.app.session as session_mod
    monkeypatch.setattr(session_mod, "WALK_SLICE", 0.0)
    monkeypatch.setattr(session_mod, "WALK_SLICE_MIN", 1)
    s, cid = killer_at_256m(host)
    for i in range(100):
        host.cgroup(f"/tenant/c{i}")
    s.refresh_tree()
    tree = dict(s.tree)
    steps = s.cg.walk_steps

    def failing(*args):
        for n, step in enumerate(steps(*args)):
            if n == 40:
                raise session_mod.BeanwatchError("cannot read cgroup /tenant: I/O error")
            yield step
    monkeypatch.setattr(s.cg, "walk_steps", failing)
    s.begin_walk()
    with pytest.raises(session_mod.BeanwatchError):
        for _ in range(10):        # slices of 16: the third meets the error
            s.maybe_refresh()
    assert s.walker is None and s.tree == tree and s.covered_by[cid] == [s.accounts[0]]


def test_a_walk_of_a_small_tree_is_done_in_one_slice(host):
    s = host.session([])
    for i in range(40):
        host.cgroup(f"/tenant/c{i}")
    s.begin_walk()
    assert s.walker is None and len(s.tree) == 42   # with / and /tenant


def test_a_hold_at_a_crossing_is_released_where_the_check_finds_it_under(host):
    """The counters say past the headroom but the RSS sum is under (shrunk since): the hold
    taken at the event is this check's, released after the bound is re-armed; no action."""
    s, cid = killer_at_256m(host)
    host.probes.growth[cid] = 158 * MiB // PAGE_SIZE
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    s.reconcile()
    steps = [e[0] for e in host.log if e[0] in ("freeze", "bounds", "thaw", "kill")]
    assert steps[:3] == ["freeze", "bounds", "thaw"] and "freeze" not in steps[3:]
    assert host.events("check", "/job")[-1]["held_while_measured"] is True
    assert not host.events("action") and not s.enforcer.held and not s.early_holds


def test_no_hold_at_a_crossing_within_the_headroom_or_for_a_sharer_well_under(host):
    """An event whose cgroup's summed growth is not past the headroom (a stale one), and one
    of sharers found well under by PSS at their last check, freeze nothing before the check."""
    s, cid = killer_at_256m(host)
    host.probes.growth[cid] = 156 * MiB // PAGE_SIZE   # exactly the headroom
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    assert host.log == [] and "/job" in s.exact_due
    s.reconcile()
    assert not [e for e in host.log if e[0] in ("freeze", "thaw")]
    host.set_rss(100, 1024 * MiB, 400 * MiB, pss=100 * MiB)   # shared: well under by PSS
    s.exact_due.add("/job")
    s.reconcile()
    assert host.events("check", "/job")[-1]["pss_bytes"] == 100 * MiB
    host.log.clear()
    host.probes.growth[cid] += 200 * MiB // PAGE_SIZE
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    assert host.log == []


def test_a_hold_at_a_crossing_is_released_if_its_check_does_not_run(host):
    """Held at the event, then the process is gone before the round: the cgroup goes back
    to fast mode, no check runs, and the hold is released at the end of the round."""
    s, cid = killer_at_256m(host)
    host.probes.growth[cid] = 200 * MiB // PAGE_SIZE
    s.on_event(wire.Event(wire.EV_RSS_HIGH, 100, cid, 0, 0, 0))
    s.handle_pending()
    assert host.log == [("freeze", "/job")]
    host.probes.vm[cid] = -(1024 * MiB // PAGE_SIZE)   # its seeded address space unmapped
    s.reconcile()
    assert host.events("mode", "/job")[-1]["mode"] == "fast"
    assert [e for e in host.log if e[0] in ("freeze", "thaw", "statm")] == \
        [("freeze", "/job"), ("thaw", "/job")]
    assert not s.enforcer.held and not s.early_holds


def test_a_process_whose_pss_cannot_be_read_counts_by_its_rss_and_the_loop_goes_on(host):
    """smaps_rollup denied (a process whose capabilities beanwatch's do not cover, in a unit
    without CAP_SYS_PTRACE: the Debian 12 systemd guest, session 5): beanwatch exited 1 at
    each check and systemd gave up after 5 restarts. Now its RSS stands in for its PSS (an
    upper bound), the check is recorded with the PID, the operator is told once."""
    from observer.core.errors import Unreadable
    cid = host.cgroup("/job")
    for pid in (100, 101):
        host.process(pid, "/job", 600 * MiB, 160 * MiB, pss=40 * MiB)
    rollup = host.procfs.smaps_rollup

    def denied(pid):
        if pid == 101:
            raise Unreadable(f"cannot read /proc/{pid}/smaps_rollup: Permission denied")
        return rollup(pid)
    host.procfs.smaps_rollup = denied
    s = host.session([Watch("/job", cid, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    check = host.events("check", "/job")[-1]
    # 40 MiB (PSS of 100) + 160 MiB (RSS of 101, standing in): under 256 MiB, not killed
    assert (check["rss_bytes"], check["pss_bytes"]) == (320 * MiB, 200 * MiB)
    assert check["pss_unreadable_pids"] == [101]
    assert not host.events("action")
    errors = host.events("error")
    assert len(errors) == 1 and "smaps_rollup" in errors[0]["detail"]
    s.exact_due.add("/job")
    s.reconcile()   # again: told once only
    assert len(host.events("error")) == 1 and host.events("check", "/job")[-1]["pss_unreadable_pids"] == [101]
