"""Barrier actions (issue 12, item 3) and kernel OOM kills (item 4), on the real kernel.

On this host (hybrid cgroups, no memory controller): report and signal, and throttle
refused at start where memory.high is missing. In the VM guests (`-m kernel`, pure cgroup2
with the memory controller): throttle sets and puts back memory.high (when usage falls
back, at exit, and after a beanwatch that was SIGKILLed), and a kernel OOM kill under
memory.max is an `oom_kill` record and a metric.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, TIME_SCALE

MiB = 1 << 20

# A process that counts the SIGUSR1s it gets (one line each in OUT), holding SIZE MiB
# touched; at its first signal it lets its memory go, and takes it again after 2 s: the
# barrier is crossed twice, with a fall back in between.
SIGNALLED = r"""
import mmap, signal, sys, time
out, size = sys.argv[1], int(sys.argv[2]) << 20
got = []
def on_usr1(signum, frame):
    got.append(time.time())
    with open(out, "a") as f:
        f.write(f"{time.time()}\n")
signal.signal(signal.SIGUSR1, on_usr1)
def take():
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, size, mmap.PAGESIZE):
        m[off] = 1
    return m
m = take()
released = False
while True:
    time.sleep(0.05)
    if got and not released:
        m.close(); m = None; released = True
        time.sleep(2)
        m = take()
"""


def signals_seen(path) -> int:
    try:
        with open(path) as f:
            return len(f.read().split())
    except FileNotFoundError:
        return 0


def test_signal_once_per_crossing_and_again_after_a_fall_back(cgroups, watcher, tmp_path):
    cg = cgroups.make("barrier-signal")
    out = tmp_path / "usr1"
    w = watcher("--limit", f"{cg}=1G:64M", "--barrier-action", "signal:USR1",
                "--interval", "0.2")
    w.started(timeout=60)
    p = cgroups.spawn(cg, [sys.executable, "-c", SIGNALLED, str(out), "96"])
    first = w.wait_for(lambda r: r["event"] == "barrier_action" and r["cgroup"] == cg,
                       timeout=30, what="first barrier action")
    assert first["action"] == "signal" and first["signal"] == "SIGUSR1" and first["ok"]
    assert first["pids"] == [p.pid] and first["exact_bytes"] > 64 * MiB
    # it let go, and took 96 MiB again: a second crossing, a second signal
    w.wait_for(lambda r: r["event"] == "barrier_action" and r["cgroup"] == cg
               and r["ts"] > first["ts"], timeout=30, what="second barrier action")
    deadline = time.time() + 10 * TIME_SCALE
    while signals_seen(out) < 2 and time.time() < deadline:
        time.sleep(0.05)
    # above the barrier for a while now (several checks): still only one signal per crossing
    time.sleep(1.5)
    checks_above = [r for r in w.of("check", cg) if (r["exact_bytes"] or 0) > 64 * MiB]
    assert len(checks_above) >= 4, checks_above
    assert signals_seen(out) == 2
    assert len(w.of("barrier_action", cg)) == 2
    assert p.poll() is None   # a signal it handles: it lives
    assert w.stop() == 0


def test_report_sends_no_signal_and_writes_nothing(cgroups, watcher, tmp_path):
    cg = cgroups.make("barrier-report")
    out = tmp_path / "usr1"
    w = watcher("--limit", f"{cg}=1G:64M", "--interval", "0.2")
    w.started(timeout=60)
    p = cgroups.spawn(cg, [sys.executable, "-c", SIGNALLED, str(out), "96"])
    w.wait_for(lambda r: r["event"] == "barrier" and r["cgroup"] == cg, timeout=30,
               what="barrier record")
    time.sleep(1.0)
    assert signals_seen(out) == 0 and p.poll() is None
    assert not w.of("barrier_action") and not w.of("action")
    assert w.stop() == 0


def run_watch(*args, timeout=60):
    exe = os.path.join(os.path.dirname(sys.executable), "beanwatch")
    return subprocess.run([exe, "watch", "--json", "--duration", "1", *args],
                          capture_output=True, text=True, timeout=timeout * TIME_SCALE, cwd="/")


def test_throttle_is_refused_at_start_where_memory_high_is_missing(cgroups):
    cg = cgroups.make("barrier-no-memcg")
    if os.path.exists(os.path.join(cgroups.path(cg), "memory.high")):
        pytest.skip("this cgroup has memory.high (memory controller): see the guest tests")
    res = run_watch("--limit", f"{cg}=1G:64M", "--barrier-action", "throttle")
    assert res.returncode == 2, res
    assert "no memory.high" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert res.stdout == ""


def test_a_barrier_action_on_the_root_cgroup_is_refused():
    res = run_watch("--limit", "/=1T:512G", "--barrier-action", "signal:TERM")
    assert res.returncode == 2 and "refused: it is the root cgroup" in res.stderr, res


# --- in guests: the memory controller -----------------------------------------------------

from test_memcg import memcg  # noqa: E402,F401 - the fixture: +memory under the test prefix


def read(cgroups, rel, name) -> str:
    with open(os.path.join(cgroups.path(rel), name)) as f:
        return f.read().strip()


def write(cgroups, rel, name, value) -> None:
    with open(os.path.join(cgroups.path(rel), name), "w") as f:
        f.write(value)


def wait_until(pred, timeout, what):
    deadline = time.time() + timeout * TIME_SCALE
    while not pred():
        if time.time() > deadline:
            raise AssertionError(f"no {what} within {timeout * TIME_SCALE}s")
        time.sleep(0.05)


@pytest.mark.kernel
def test_throttle_sets_memory_high_and_puts_it_back(memcg, watcher):
    cg = memcg.make("throttle")
    assert read(memcg, cg, "memory.high") == "max"
    w = watcher("--limit", f"{cg}=1G:64M", "--barrier-action", "throttle", "--interval", "0.3")
    w.started(timeout=120)
    p = memcg.workload(cg, "touch:96M", "hold")
    act = w.wait_for(lambda r: r["event"] == "barrier_action" and r["cgroup"] == cg,
                     timeout=120, what="throttle record")
    assert act["action"] == "throttle" and act["ok"], act
    assert act["memory_high_bytes"] == 64 * MiB
    assert read(memcg, cg, "memory.high") == str(64 * MiB)
    # usage falls back (the process goes): memory.high is put back
    p.kill()
    p.wait()
    undo = w.wait_for(lambda r: r["event"] == "barrier_action" and r["cgroup"] == cg
                      and r["action"] == "unthrottle", timeout=60, what="unthrottle record")
    assert undo["ok"] and undo["memory_high"] == "max", undo
    assert read(memcg, cg, "memory.high") == "max"
    # crossed again: throttled again; then beanwatch stops: put back at exit
    q = memcg.workload(cg, "touch:96M", "hold")
    w.wait_for(lambda r: r["event"] == "barrier_action" and r["action"] == "throttle"
               and r["ts"] > undo["ts"], timeout=120, what="second throttle")
    assert read(memcg, cg, "memory.high") == str(64 * MiB)
    assert w.stop() == 0
    assert read(memcg, cg, "memory.high") == "max"
    assert q.poll() is None
    q.kill()
    q.wait()


@pytest.mark.kernel
def test_a_throttle_left_by_a_killed_beanwatch_is_put_back_by_the_next(memcg, watcher):
    cg = memcg.make("throttle-crash")
    other = memcg.make("throttle-someone-else")
    w = watcher("--limit", f"{cg}=1G:64M", "--limit", f"{other}=1G:64M",
                "--barrier-action", "throttle", "--interval", "0.3")
    w.started(timeout=120)
    p = memcg.workload(cg, "touch:96M", "hold")
    q = memcg.workload(other, "touch:96M", "hold")
    for name in (cg, other):
        w.wait_for(lambda r, n=name: r["event"] == "barrier_action" and r["cgroup"] == n,
                   timeout=120, what=f"throttle of {name}")
    assert read(memcg, cg, "memory.high") == read(memcg, other, "memory.high") == str(64 * MiB)
    write(memcg, other, "memory.high", str(80 * MiB))   # an operator's own value since
    w.stop(signal.SIGKILL)
    assert read(memcg, cg, "memory.high") == str(64 * MiB)   # nobody put it back
    p.kill(), q.kill(), p.wait(), q.wait()
    w2 = watcher("--limit", f"{cg}=1G", "--interval", "0.3")
    w2.started(timeout=120)
    undo = [r for r in w2.records if r["event"] == "barrier_action"]
    assert {r["cgroup"] for r in undo} == {cg, other}, undo
    assert all(r["action"] == "unthrottle" and "died" in r["detail"] for r in undo)
    assert read(memcg, cg, "memory.high") == "max"
    assert read(memcg, other, "memory.high") == str(80 * MiB)   # theirs is kept
    assert w2.stop() == 0


def metrics_of(w) -> str:
    wait_until(lambda: "metrics on http://" in w.stderr_so_far(), 60, "metrics address")
    url = re.search(r"metrics on (http://\S+)", w.stderr_so_far()).group(1)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


@pytest.mark.kernel
def test_a_kernel_oom_kill_is_a_record_and_a_metric(memcg, watcher, tmp_path):
    exe = str(tmp_path / "toucher")
    subprocess.run(["gcc", "-O1", "-o", exe, os.path.join(ROOT, "bench/programs/toucher.c")],
                   check=True)
    parent = memcg.make("oom")
    write(memcg, parent, "cgroup.subtree_control", "+memory")
    cg = memcg.make("oom/job")
    write(memcg, cg, "memory.max", str(64 * MiB))
    if os.path.exists(os.path.join(memcg.path(cg), "memory.swap.max")):
        write(memcg, cg, "memory.swap.max", "0")
    # watched through its parent (a limit far above: beanwatch never acts)
    w = watcher("--limit", f"{parent}=1G", "--interval", "0.3", "--metrics", "127.0.0.1:0")
    w.started(timeout=120)
    p = memcg.spawn(cg, [exe, "256"])
    _, status, _ = os.wait4(p.pid, 0)
    p.returncode = status
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    oom = w.wait_for(lambda r: r["event"] == "oom_kill", timeout=60, what="oom_kill record")
    with open(os.path.join(memcg.path(cg), "memory.events")) as f:
        kernel_says = dict(line.split() for line in f)["oom_kill"]
    assert int(kernel_says) == 1
    assert oom["cgroup"] == cg and oom["pid"] == p.pid == oom["tgid"], oom
    assert oom["comm"] == os.path.basename(exe)[:15] and oom["watched"] == [parent]
    assert oom["oom_kills"] == 1 and oom["unrecorded"] == 0
    text = metrics_of(w)
    line = next(l for l in text.splitlines()
                if l.startswith("beanwatch_cgroup_oom_kills_total") and f'cgroup="{parent}"' in l)
    assert float(line.rsplit(" ", 1)[1]) == 1.0, line   # counted as the event is handled

    def kernel_count():
        text = metrics_of(w)
        total = next(l for l in text.splitlines() if l.startswith("beanwatch_oom_kills_total "))
        return float(total.rsplit(" ", 1)[1])
    # the kernel's own count (every cgroup) is read with the other statistics at each tick
    wait_until(lambda: kernel_count() >= 1.0, 10, "kernel OOM count in the metrics")
    assert not w.of("action")
    assert w.stop() == 0
