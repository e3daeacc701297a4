"""The end-to-end contract on the real kernel: estimate, modes, exact checks, actions."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import no_programs_left, vm_size
from observer.core.sizes import PAGE_SIZE
from observer.kernel.wire import vm_slack

MiB = 1 << 20


def snap_with(w, cg, pred, timeout=20.0, what="snapshot"):
    return w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg and pred(r),
                      timeout, what)


def test_estimate_is_the_vmsize_of_a_known_mapping(cgroups, watcher):
    cg = cgroups.make("known")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.2")
    w.started()
    # 23 separate mappings of 1 MiB each, a prime number, untouched
    p = cgroups.workload(cg, *(["reserve:1M"] * 23), "hold")
    snap_with(w, cg, lambda r: r["estimate_bytes"] >= 23 * MiB, what="estimate with 23 MiB")
    time.sleep(0.5)
    expected = vm_size(p.pid)
    since = time.time()
    last = snap_with(w, cg, lambda r: r["ts"] > since, what="a later snapshot")
    # the process's VmSize, or above it by no more than its small shrinks may wait
    waits = vm_slack(expected // PAGE_SIZE) * PAGE_SIZE
    assert expected <= last["estimate_bytes"] <= expected + waits, (last, expected, waits)
    assert last["mode"] == "fast" and last["exact_bytes"] is None
    assert w.stop() == 0


def test_reservation_only_goes_slow_and_is_not_killed(cgroups, watcher):
    cg = cgroups.make("reserver")
    w = watcher("--limit", f"{cg}=256M", "--action", "kill", "--interval", "0.2")
    w.started()
    p = cgroups.workload(cg, "reserve:1G", "touch:16M", "hold")
    w.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == cg and r["mode"] == "slow",
               what="switch to slow mode")
    # Between fork and exec the child carries a copy of the test runner's address space,
    # which may switch the cgroup to slow mode by itself: wait for the 1 GiB reservation.
    check = w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == cg
                       and r["estimate_bytes"] > 1024 * MiB, what="exact check of the reservation")
    assert check["exact_bytes"] < 256 * MiB
    assert check["mode"] == "slow"
    time.sleep(1.0)
    assert p.poll() is None, "reservation-only workload was killed"
    assert not w.of("action", cg) and not w.of("exceeded", cg)
    assert w.stop() == 0


def test_toucher_past_the_limit_is_killed(cgroups, watcher):
    hog = cgroups.make("hog")
    quiet = cgroups.make("quiet")
    w = watcher("--limit", f"{hog}=128M", "--action", "kill", "--interval", "0.5")
    w.started()
    sibling = cgroups.workload(quiet, "touch:300M", "hold")
    p = cgroups.workload(hog, "reserve:1G", "touch:1G", "hold")
    assert p.wait(timeout=30) == -signal.SIGKILL
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == hog, what="kill record")
    assert act["action"] == "kill" and act["ok"] and p.pid in act["pids"]
    assert act["exact_bytes"] > 128 * MiB
    overshoot = act["exact_bytes"] - 128 * MiB
    assert overshoot < 64 * MiB, f"caught {overshoot / MiB:.1f} MiB past the limit"
    time.sleep(0.5)
    assert sibling.poll() is None, "the quiet sibling was touched"
    assert not w.of("action", quiet)
    assert w.stop() == 0


def test_report_only_reports_and_the_toucher_keeps_running(cgroups, watcher):
    cg = cgroups.make("reported")
    w = watcher("--limit", f"{cg}=64M", "--action", "report", "--interval", "0.2")
    w.started()
    p = cgroups.workload(cg, "touch:128M", "hold")
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="report record")
    assert act["action"] == "report" and p.pid in act["pids"]
    exceeded = w.of("exceeded", cg)
    assert exceeded and exceeded[0]["failcnt"] >= 1
    time.sleep(1.0)
    assert p.poll() is None, "report mode must not kill"
    assert cgroups.events(cg)["frozen"] == 0
    # one report for one excursion, however many checks see it
    assert len(w.of("action", cg)) == 1
    assert w.stop() == 0


def test_freeze_freezes_and_exit_thaws(cgroups, watcher):
    cg = cgroups.make("frozen")
    w = watcher("--limit", f"{cg}=64M", "--action", "freeze", "--interval", "0.2")
    w.started()
    p = cgroups.workload(cg, "touch:128M", "hold")
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="freeze record")
    assert act["action"] == "freeze" and act["ok"]
    deadline = time.time() + 5
    while cgroups.events(cg)["frozen"] != 1 and time.time() < deadline:
        time.sleep(0.05)
    assert cgroups.events(cg)["frozen"] == 1
    assert p.poll() is None
    # SIGTERM ends the session cleanly: probes detached, nothing left frozen
    assert w.stop(signal.SIGTERM) == 0
    assert cgroups.events(cg)["frozen"] == 0
    assert "thawed" in w.stderr
    assert no_programs_left()


def test_duration_ends_cleanly(cgroups, watcher):
    cg = cgroups.make("short")
    w = watcher("--limit", f"{cg}=1G", "--duration", "1.5", "--interval", "0.5")
    w.started()
    assert w.proc.wait(timeout=20) == 0
    assert w.stop() == 0
    assert no_programs_left()
    assert all(set(r) >= {"event", "ts", "cgroup"} for r in w.records)


def test_sigint_ends_cleanly(cgroups, watcher):
    cg = cgroups.make("interrupted")
    w = watcher("--limit", f"{cg}=1G", "--interval", "0.2")
    w.started()
    assert w.stop(signal.SIGINT) == 0
    assert no_programs_left()


def test_lost_events_are_counted_and_the_cgroup_still_caught(cgroups, watcher):
    """Reader lag with a one-page ring buffer: beanwatch is stopped while 150 new cgroups
    each wake it, and a hog crosses its limit. After it resumes, the losses are reported,
    the counters (kept in maps, never lost) resynchronise the model, and the hog dies."""
    hog = cgroups.make("hog")
    w = watcher("--limit", f"{hog}=96M", "--action", "kill", "--interval", "0.2",
                "--ringbuf-pages", "1")
    w.started()
    os.kill(w.proc.pid, signal.SIGSTOP)
    try:
        flood = []
        for i in range(150):
            cg = cgroups.make(f"flood/{i}")
            flood.append(cgroups.spawn(cg, ["/bin/true"]))
        for p in flood:
            p.wait(timeout=10)
        p = cgroups.workload(hog, "touch:256M", "hold")
        deadline = time.time() + 20
        while time.time() < deadline:
            with open(f"/proc/{p.pid}/statm") as f:
                if int(f.read().split()[1]) * 4096 > 200 * MiB:
                    break
            time.sleep(0.05)
    finally:
        os.kill(w.proc.pid, signal.SIGCONT)
    lost = w.wait_for(lambda r: r["event"] == "lost" and r["events_lost"] > 0, what="lost record")
    assert lost["events_lost"] > 0
    assert p.wait(timeout=20) == -signal.SIGKILL
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == hog, what="kill record")
    assert act["ok"] and act["exact_bytes"] > 96 * MiB
    assert w.stop() == 0
