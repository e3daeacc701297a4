"""Pure cgroup2 with the memory controller, as real hosts run it (the VM guests of
`make test-kernels`; this development host is hybrid and skips them, saying why).

- `watch` without --limit takes each cgroup's limit from memory.max;
- a beanwatch limit below a memcg limit on a parent acts first, and the kernel's OOM killer
  never has to;
- the kernel's own memory.max beside beanwatch on the same toucher: both overshoots are
  printed (the bench's memory.max row is filled from these guests).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import ROOT, TIME_SCALE

MiB = 1 << 20


def memcg_ready(cgroups) -> bool:
    try:
        with open(os.path.join(cgroups.mount, "cgroup.controllers")) as f:
            return "memory" in f.read().split()
    except OSError:
        return False


@pytest.fixture
def memcg(cgroups):
    if not memcg_ready(cgroups):
        pytest.skip("no cgroup2 memory controller on this host (hybrid); runs in VM guests")
    with open(cgroups.mount + cgroups.prefix + "/cgroup.subtree_control", "w") as f:
        f.write("+memory")
    return cgroups


@pytest.fixture(scope="module")
def toucher(tmp_path_factory):
    import subprocess
    exe = str(tmp_path_factory.mktemp("memcg") / "toucher")
    subprocess.run(["gcc", "-O1", "-o", exe, os.path.join(ROOT, "bench/programs/toucher.c")],
                   check=True)
    return exe


def write(cgroups, rel, name, value):
    with open(os.path.join(cgroups.path(rel), name), "w") as f:
        f.write(value)


def memory_events(cgroups, rel) -> dict:
    with open(os.path.join(cgroups.path(rel), "memory.events")) as f:
        return {k: int(v) for k, v in (line.split() for line in f)}


@pytest.mark.kernel
def test_without_limit_the_limits_come_from_memory_max(memcg, watcher):
    cg = memcg.make("fromfile")
    write(memcg, cg, "memory.max", str(512 * MiB))
    w = watcher("--interval", "0.2")
    snap = w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg,
                      timeout=60, what="snapshot of the memory.max cgroup")
    assert snap["limit_bytes"] == 512 * MiB
    # a 1 GiB reservation with 64 MiB touched: slow mode, measured, nothing done
    p = memcg.workload(cg, "reserve:1G", "touch:64M", "hold")
    # the touching goes on after the reservation crossed the limit (slowly under TCG): wait
    # for a check that sees it
    check = w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == cg
                       and r["estimate_bytes"] > 512 * MiB
                       and (r["exact_bytes"] or 0) > 60 * MiB, timeout=120, what="exact check")
    assert 60 * MiB < check["exact_bytes"] < 512 * MiB
    assert p.poll() is None
    assert not w.of("action", cg)
    assert w.stop() == 0


@pytest.mark.kernel
def test_limits_from_memory_max_follow_new_cgroups_and_changed_values_live(memcg, watcher):
    """Issue 10 item 10: without --limit the limits are not frozen at start. A cgroup made
    after the start is taken with its memory.max and measured against it; a memory.max
    changed (lowered, then set to max) is followed with a `limit` record; a cgroup removed
    is dropped without an error. The tree and memory.max are read again at least every 2 s."""
    def snap(cg, limit):
        return lambda r: (r["event"] == "snapshot" and r["cgroup"] == cg
                          and r["limit_bytes"] == limit)

    old = memcg.make("live-old")
    write(memcg, old, "memory.max", str(768 * MiB))
    w = watcher("--interval", "0.2")
    w.wait_for(snap(old, 768 * MiB), timeout=60, what="snapshot of the cgroup there at start")
    started = len(w.records)

    # a cgroup made after the start, with its own memory.max
    new = memcg.make("live-new")
    write(memcg, new, "memory.max", str(512 * MiB))
    w.wait_for(snap(new, 512 * MiB), timeout=30, what="the new cgroup with its memory.max")
    # and measured against it: a 1 GiB reservation with 64 MiB touched crosses 512 MiB in the
    # estimate, so the new cgroup goes to slow mode and gets exact checks
    p = memcg.workload(new, "reserve:1G", "touch:64M", "hold")
    check = w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == new
                       and r["estimate_bytes"] > 512 * MiB
                       and (r["exact_bytes"] or 0) > 60 * MiB, timeout=120,
                       what="an exact check of the new cgroup")
    assert check["limit_bytes"] == 512 * MiB

    # a changed value: lowered, then lifted (max: no limit)
    write(memcg, old, "memory.max", str(256 * MiB))
    lowered = w.wait_for(lambda r: r["event"] == "limit" and r["cgroup"] == old
                         and r["limit_bytes"] == 256 * MiB, timeout=30, what="lowered limit")
    assert lowered["previous_limit_bytes"] == 768 * MiB
    w.wait_for(snap(old, 256 * MiB), timeout=30, what="snapshot with the lowered limit")
    write(memcg, old, "memory.max", "max")
    lifted = w.wait_for(lambda r: r["event"] == "limit" and r["cgroup"] == old
                        and r["limit_bytes"] is None, timeout=30, what="lifted limit")
    assert lifted["previous_limit_bytes"] == 256 * MiB

    # a cgroup removed goes from the snapshots, and nothing fails
    p.kill()
    p.wait()
    from observer.host.scratch import remove_cgroup
    remove_cgroup(memcg.path(new))
    time.sleep(3 * TIME_SCALE)   # past one more walk of the tree (at least every 2 s)
    last = len(w.records)
    time.sleep(1 * TIME_SCALE)
    after = [r["cgroup"] for r in w.records[last:] if r["event"] == "snapshot"]
    assert old in after and new not in after
    assert not [r for r in w.records[started:] if r["event"] == "error"]
    assert p.returncode == -signal.SIGKILL
    assert w.stop() == 0


@pytest.mark.kernel
def test_a_limit_below_a_parents_memcg_limit_acts_first(memcg, watcher, toucher):
    parent = memcg.make("memcg-parent")
    write(memcg, parent, "cgroup.subtree_control", "+memory")
    child = memcg.make("memcg-parent/job")
    write(memcg, parent, "memory.max", str(512 * MiB))
    w = watcher("--limit", f"{child}=128M", "--action", "kill", "--interval", "0.5")
    w.started(timeout=60)
    p = memcg.spawn(child, [toucher, "1024"])
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = -signal.SIGKILL
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == child,
                     timeout=30, what="kill record")
    assert act["ok"]
    assert memory_events(memcg, parent)["oom_kill"] == 0, "the kernel had to kill"
    peak = usage.ru_maxrss * 1024
    assert 126 * MiB < peak < 512 * MiB   # ru_maxrss lags by a batch per CPU
    print(f"\nbeanwatch 128M under memcg 512M: peak {peak / MiB:.1f} MiB")
    assert w.stop() == 0


@pytest.mark.kernel
def test_memory_max_and_beanwatch_side_by_side(memcg, watcher, toucher):
    """The same toucher against the kernel's memory.max and against beanwatch's limit.
    memory.max holds the charge at the limit (the toucher is OOM-killed or stalls in
    reclaim); beanwatch lets it run past by its reaction time. Both are printed."""
    limit = 128 * MiB
    kern = memcg.make("kernel-limit")
    write(memcg, kern, "memory.max", str(limit))
    write(memcg, kern, "memory.swap.max", "0") if os.path.exists(
        os.path.join(memcg.path(kern), "memory.swap.max")) else None
    p = memcg.spawn(kern, [toucher, "512"])
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = status
    kernel_peak = usage.ru_maxrss * 1024
    assert os.WIFSIGNALED(status), "memory.max did not stop the toucher"
    assert memory_events(memcg, kern)["oom_kill"] >= 1

    ours = memcg.make("beanwatch-limit")
    w = watcher("--limit", f"{ours}=128M", "--action", "kill", "--interval", "0.5")
    w.started(timeout=60)
    t0 = time.monotonic()
    q = memcg.spawn(ours, [toucher, "512"])
    _, status, usage = os.wait4(q.pid, 0)
    q.returncode = status
    took = time.monotonic() - t0
    ours_peak = usage.ru_maxrss * 1024
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == ours, what="kill record")
    print(f"\nmemory.max 128M: peak {kernel_peak / MiB:.1f} MiB (overshoot "
          f"{(kernel_peak - limit) / MiB:+.1f}); beanwatch 128M: peak {ours_peak / MiB:.1f} MiB "
          f"(overshoot {(ours_peak - limit) / MiB:+.1f}) in {took:.2f}s")
    assert kernel_peak <= limit + 4 * MiB
    assert limit - 2 * MiB < ours_peak < limit + 64 * MiB
    assert w.stop() == 0
