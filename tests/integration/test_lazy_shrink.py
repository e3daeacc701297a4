"""Lazy shrinking, on the real probes: a process's small shrinks wait (its recorded total stays
at its high-water mark, never below VmSize and at most wire.vm_slack above it), a big one is
counted at once and in full, and exit, moves and seeding stay consistent with the recorded
totals (tests/programs/pairs.c: many small mmap+munmap and brk pairs, then unmaps)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import ROOT, vm_size
from observer.core.sizes import PAGE_SIZE
from observer.kernel.wire import vm_slack

pytestmark = pytest.mark.kernel

KiB, MiB = 1 << 10, 1 << 20
RESERVE = 256     # MiB: the process's slack is then about 4 MiB


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("pairs") / "pairs")
    subprocess.run(["gcc", "-O1", "-Wall", "-o", exe,
                    os.path.join(ROOT, "tests", "programs", "pairs.c")], check=True)
    return exe


class Pairs:
    def __init__(self, cgroups, cg, exe, n=2000, reserve=RESERVE):
        self.p = cgroups.spawn(cg, [exe, str(reserve), str(n)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)

    def expect(self, step):
        assert self.p.stdout.readline().strip() == f"ready {step}"

    def next(self, step):
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        self.expect(step)

    def close(self):
        self.p.stdin.close()    # at a step, end of input ends the program
        assert self.p.wait(timeout=10) == 0


def estimate(w, cg, pid, settled=lambda est, size: True, timeout=5.0):
    """(estimate, VmSize) from the first snapshot taken after /proc was read that settled
    says is final (else the last one within the timeout). Every snapshot seen must be at or
    above VmSize and within the slack of it."""
    deadline = time.time() + timeout
    while True:
        size = vm_size(pid)
        since = time.time()
        snap = w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                          and r["ts"] > since, what="a snapshot")
        est = snap["estimate_bytes"]
        assert vm_size(pid) == size, "the process changed between the steps"
        # (a) never below the process's total, (b) within its slack
        assert size <= est <= size + vm_slack(size // PAGE_SIZE) * PAGE_SIZE, (est, size)
        if settled(est, size) or time.time() > deadline:
            return est, size, snap


@pytest.mark.parametrize("seeded", [False, True], ids=["live", "seeded"])
@pytest.mark.parametrize("hook", ["auto", "syscalls"])
def test_small_shrinks_wait_within_the_slack_and_a_big_one_is_counted_at_once(
        cgroups, watcher, pairs, hook, seeded):
    cg = cgroups.make("lazy")
    limit = 192   # MiB: the reservation alone is past it; half of it is well under
    args = ("--limit", f"{cg}={limit}M", "--interval", "0.1", "--vm-hook", hook,
            "--hysteresis", "0.1", "--fixed-hysteresis")
    if seeded:   # running before beanwatch starts: its recorded total comes from /proc
        prog = Pairs(cgroups, cg, pairs)
        prog.expect("reserved")
        w = watcher(*args)
    else:
        w = watcher(*args)
        w.started()
        prog = Pairs(cgroups, cg, pairs)
        prog.expect("reserved")
    pid = prog.p.pid
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size)
    assert est == size > RESERVE * MiB
    w.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == cg and r["mode"] == "slow",
               what="slow mode: the reservation is past the limit")

    # thousands of pairs of up to 256 KiB: the recorded total stays at the high-water mark,
    # one pair's size above VmSize (counting every shrink at once would give VmSize)
    prog.next("pairs")
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size + 256 * KiB)
    assert est == size + 256 * KiB, "the small shrinks were not left waiting"

    # a shrink within the slack waits too
    prog.next("small")
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size + 768 * KiB)
    assert est == size + 768 * KiB
    assert 768 * KiB <= vm_slack(size // PAGE_SIZE) * PAGE_SIZE

    # (c) half the reservation, far past the slack: counted at once and in full, and the
    # cgroup is back under the low water, so fast mode again
    prog.next("big")
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size)
    assert est == size < limit * MiB * 0.9   # under the low water
    w.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == cg and r["mode"] == "fast",
               what="fast mode after the big shrink")

    # exit takes out what was recorded: nothing is left
    prog.close()
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
               and r["estimate_bytes"] == 0, what="estimate back to 0 after exit")
    assert w.stop() == 0


def test_a_small_process_s_pairs_wait_within_the_256_kib_floor(cgroups, watcher, pairs):
    """A process of a few MiB, whose 1/64 is less than the 256 KiB floor: its 256 KiB pairs
    (an allocator's malloc and free of a big block) wait too, and a shrink past the floor is
    counted at once."""
    cg = cgroups.make("lazy-small")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1")
    w.started()
    prog = Pairs(cgroups, cg, pairs, reserve=4)
    prog.expect("reserved")
    pid = prog.p.pid
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size)
    assert est == size < 16 * MiB, "growth is counted exactly"
    assert (size // PAGE_SIZE) >> 6 < 64 == vm_slack(size // PAGE_SIZE), "1/64 is under the floor"
    prog.next("pairs")
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size + 256 * KiB)
    assert est == size + 256 * KiB, "a small process's 256 KiB pairs were counted each time"
    prog.next("small")   # 512 KiB more: 768 KiB below the high-water mark, past the floor
    est, size, _ = estimate(w, cg, pid, lambda est, size: est == size)
    assert est == size
    prog.close()
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
               and r["estimate_bytes"] == 0, what="estimate back to 0 after exit")
    assert w.stop() == 0


def test_a_move_takes_the_recorded_total_out_and_the_exact_one_in(cgroups, watcher, pairs):
    a, b = cgroups.make("lazy-a"), cgroups.make("lazy-b")
    w = watcher("--limit", f"{a}=64G", "--limit", f"{b}=64G", "--interval", "0.1")
    w.started()
    prog = Pairs(cgroups, a, pairs)
    prog.expect("reserved")
    pid = prog.p.pid
    prog.next("pairs")
    prog.next("small")
    est, size, _ = estimate(w, a, pid, lambda est, size: est == size + 768 * KiB)
    assert est == size + 768 * KiB
    with open(os.path.join(cgroups.path(b), "cgroup.procs"), "w") as f:
        f.write(str(pid))
    est_b, size, _ = estimate(w, b, pid, lambda est, size: est == size)
    assert est_b == size
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == a
               and r["estimate_bytes"] == 0, what="nothing left in the old cgroup")
    prog.close()
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == b
               and r["estimate_bytes"] == 0, what="estimate back to 0 after exit")
    assert w.stop() == 0


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("seen") / "seen")
    subprocess.run(["gcc", "-O1", "-Wall", "-pthread", "-o", exe,
                    os.path.join(ROOT, "tests", "programs", "seen.c")], check=True)
    return exe


def move(cgroups, rel, pid):
    with open(os.path.join(cgroups.path(rel), "cgroup.procs"), "w") as f:
        f.write(str(pid))


@pytest.mark.parametrize("mode", ["moves", "threads", "shared"])
def test_what_a_process_last_recorded_is_not_taken_as_unchanged_when_stale(
        cgroups, watcher, seen, mode):
    """tests/programs/seen.c: after moves away and back (which record the exact total, under
    the waiting high-water mark), after another thread's big shrink on another CPU, and in a
    process sharing another's memory (CLONE_VM) after the other grew it, a release at the
    total last recorded (or last seen on that CPU) is counted: the mmap-lock program's
    per-process record is invalidated by a move and shared by the threads; its per-CPU slot
    is invalidated by another CPU's shrink and never filled for a shared mm. The estimate is
    then VmSize, never below it."""
    cg = cgroups.make(f"seen-{mode}")
    away = cgroups.make(f"seen-{mode}-away")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1")
    w.started()
    # shared: the first process lives away; the one sharing its memory is moved here
    p = cgroups.spawn(away if mode == "shared" else cg, [seen, mode], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, text=True)
    pid = p.pid
    try:
        if mode == "shared":
            line = p.stdout.readline().split()
            assert line[0] == "ready", line
            pid = int(line[1])
            move(cgroups, cg, pid)
            w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                       and r["estimate_bytes"] > 0, what="the sharer's move seen")
            p.stdin.write("\n")
            p.stdin.flush()
        if mode == "moves":
            assert p.stdout.readline().strip() == "ready shrunk"
            est, size, _ = estimate(w, cg, p.pid, lambda est, size: est == size + 100 * KiB)
            assert est == size + 100 * KiB, "the shrink did not wait"
            for rel in (away, cg):
                move(cgroups, rel, p.pid)
                w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                           and r["estimate_bytes"] == (size if rel == cg else 0),
                           what=f"the move to {rel} seen")
            p.stdin.write("\n")
            p.stdin.flush()
        assert p.stdout.readline().strip() == "ready"
        est, size, _ = estimate(w, cg, pid, lambda est, size: est == size)
        assert est == size
    finally:
        p.stdin.close()
    assert p.wait(timeout=10) == 0
    assert w.stop() == 0
