"""The frozen-cgroup ledger: who wrote it is alive only with the same pid AND start time."""

from __future__ import annotations

import json
import os

from observer.host.procfs import ProcFS
from observer.host.state import FrozenLedger, start_time


def test_own_start_time_is_field_22_of_proc_stat():
    with open(f"/proc/{os.getpid()}/stat") as f:
        field22 = int(f.read().rsplit(")", 1)[1].split()[19])
    assert start_time(ProcFS(), os.getpid()) == field22
    assert FrozenLedger("/nonexistent").start_time == field22


def test_a_live_pid_with_another_start_time_is_a_dead_beanwatch(tmp_path):
    """The ledger's pid now belongs to another process (here: our parent, alive, but
    started at another time): its cgroups are orphans, to be thawed."""
    state = tmp_path / "state"
    other = os.getppid()
    reused = FrozenLedger(str(state), pid=other)
    reused.start_time = start_time(ProcFS(), other) + 12345   # as written by the dead one
    reused.save({("/job", 7)})
    assert json.load(open(reused.path))["start_time"] == reused.start_time
    me = FrozenLedger(str(state))
    assert me.orphans() == [("/job", 7, reused.path)]


def test_a_live_writer_with_its_own_start_time_is_left_alone(tmp_path):
    state = tmp_path / "state"
    live = FrozenLedger(str(state), pid=os.getppid())
    live.save({("/job", 7)})
    assert FrozenLedger(str(state)).orphans() == []


def test_a_dead_pid_and_an_old_format_ledger(tmp_path):
    state = tmp_path / "state"
    dead = FrozenLedger(str(state), pid=2**22 + 12345)   # above pid_max: never running
    dead.save({("/a", 1)})
    old = state / f"frozen.{os.getppid()}.json"          # the format without start time
    old.write_text(json.dumps([{"cgroup": "/b", "id": 2}]))
    assert FrozenLedger(str(state)).orphans() == [("/a", 1, dead.path)]   # /b: pid alone, alive
