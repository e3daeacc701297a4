"""The estimate is an upper bound of RSS under every way a process gains memory.

Each scenario is a real program (tests/programs/shapes.c) in a fresh cgroup, stopping at
checkpoints; at each, beanwatch's estimate is compared with /proc: it must equal the summed
VmSize (the estimate follows total_vm; small shrinks may wait, so it may be above it by each
process's slack, wire.vm_slack) and so be at least the summed VmRSS.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT
from observer.core.sizes import PAGE_SIZE
from observer.kernel.wire import vm_slack

MiB = 1 << 20
PROGRAMS = os.path.join(ROOT, "tests", "programs")


@pytest.fixture(scope="session")
def programs(tmp_path_factory):
    out = tmp_path_factory.mktemp("programs")
    built = {}
    for name, src, flags in (("shapes", "tests/programs/shapes.c", ["-pthread"]),
                             ("bigbss", "tests/programs/bigbss.c", []),
                             ("holder", "tests/programs/holder.c", []),
                             ("toucher", "bench/programs/toucher.c", [])):
        exe = str(out / name)
        subprocess.run(["gcc", "-O1", "-Wall", *flags, "-o", exe, os.path.join(ROOT, src)], check=True)
        built[name] = exe
    # the same scenarios as a 32-bit program: its syscalls are compat syscalls
    exe = str(out / "shapes32")
    if subprocess.run(["gcc", "-m32", "-O1", "-Wall", "-pthread", "-o", exe,
                       os.path.join(ROOT, "tests/programs/shapes.c")]).returncode == 0:
        built["shapes32"] = exe
    return built


def truth(cgroups, cg) -> tuple[int, int, list[int], int]:
    """(summed VmSize, summed VmRSS, pids, how far above VmSize small shrinks waiting may
    leave the estimate) of the cgroup's processes from /proc."""
    with open(os.path.join(cgroups.path(cg), "cgroup.procs")) as f:
        pids = [int(x) for x in f.read().split()]
    size = rss = waits = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        vm = int(line.split()[1]) * 1024
                        size += vm
                        waits += vm_slack(vm // PAGE_SIZE) * PAGE_SIZE
                    elif line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) * 1024
        except FileNotFoundError:
            pass
    return size, rss, pids, waits


def settle(w, cgroups, cg, checkpoint, timeout=5.0, slack=0, exact=True):
    """Waits for a snapshot taken after /proc was read that matches VmSize, and checks it:
    the estimate is the summed VmSize, or above it by no more than the processes' small
    shrinks may wait (wire.vm_slack). slack: how far below VmSize the estimate may settle
    (never below RSS); exact=False: only the bound est >= RSS is checked (a stale estimate
    may be above VmSize)."""
    deadline = time.time() + timeout
    while True:
        size, rss, pids, waits = truth(cgroups, cg)
        since = time.time()
        snap = w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                          and r["ts"] > since, what=f"snapshot at {checkpoint}")
        size2, rss2, _, _ = truth(cgroups, cg)
        est = snap["estimate_bytes"]
        assert est >= min(rss, rss2), (
            f"{checkpoint}: estimate {est} below RSS {min(rss, rss2)} (pids {pids})")
        if (size == size2 and size - slack <= est <= size + waits) or time.time() > deadline:
            break
    if not exact:
        return est, rss
    assert size - slack <= est <= size + waits, (
        f"{checkpoint}: estimate {est} not summed VmSize {size} (RSS {rss}, slack {slack}, "
        f"shrinks waiting up to {waits})")
    return est, rss


class Shapes:
    def __init__(self, cgroups, cg, argv):
        self.p = cgroups.spawn(cg, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def checkpoints(self):
        for line in self.p.stdout:
            word, _, name = line.strip().partition(" ")
            if word == "done":
                return
            assert word == "ready", line
            yield name
            self.p.stdin.write("\n")
            self.p.stdin.flush()

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(timeout=10) == 0


SCENARIOS = {
    "mmap-anon": ["reserved", "touched"],
    "mmap-file": ["read"],
    "fault-around": ["read"],
    "shared-anon": ["touched"],
    "populate": ["populated"],
    "fixed-over": ["mapped", "replaced"],
    "munmap": ["mapped", "partial", "three", "spanning", "never-mapped"],
    "brk": ["grown", "shrunk", "steps"],
    "malloc": ["allocated"],
    "mremap": ["mapped", "grown", "shrunk", "moved"],
    "fork": ["forked", "reaped"],
    "vfork-exec": ["execed"],
    "threads": ["threads"],
    "shm": ["attached", "detached"],
    "memfd": ["touched"],
    "thp": ["touched"],
    "stack": ["grown"],
}


# Stack growth is a fault, not a syscall: with the syscall hook (kernels without mmap_lock
# tracepoints) it is taken at the next resident-count update, at least every 64 faults of a
# thread, so up to 64 pages of it may not be counted yet. Everything else is exact.
SYSCALL_HOOK_SLACK = {"stack": 64 * 4096}


@pytest.mark.parametrize("hook", ["auto", "syscalls"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_estimate_follows_vmsize(cgroups, watcher, programs, scenario, hook):
    cg = cgroups.make(scenario)
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1", "--vm-hook", hook)
    rec = w.wait_for(lambda r: r["event"] == "start", what="start record")
    w.started()
    slack = SYSCALL_HOOK_SLACK.get(scenario, 0) if rec["vm_hook"] == "syscalls" else 0
    shapes = Shapes(cgroups, cg, [programs["shapes"], scenario])
    seen = []
    for checkpoint in shapes.checkpoints():
        settle(w, cgroups, cg, checkpoint, slack=slack)
        seen.append(checkpoint)
    shapes.close()
    assert seen == SCENARIOS[scenario]
    # everything gone: the estimate falls back to nothing
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
               and r["estimate_bytes"] == 0, what="estimate back to 0 after exit")
    assert w.stop() == 0


COMPAT_SCENARIOS = ("mmap-anon", "brk", "mremap", "stack", "threads", "munmap")


@pytest.mark.parametrize("hook", ["auto", "syscalls"])
@pytest.mark.parametrize("scenario", COMPAT_SCENARIOS)
def test_32bit_processes_stay_under_the_estimate(cgroups, watcher, programs, scenario, hook):
    """Syscall tracepoints skip compat syscalls: with that hook a 32-bit process's mappings
    are counted when its resident count changes, so the estimate stays at or above RSS
    (not equal to VmSize). With the mmap_lock hook they are exact like any other."""
    if "shapes32" not in programs:
        pytest.fail("gcc -m32 cannot build: install gcc-multilib (make setup does)")
    cg = cgroups.make(f"compat-{scenario}")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1", "--vm-hook", hook)
    rec = w.wait_for(lambda r: r["event"] == "start", what="start record")
    w.started()
    shapes = Shapes(cgroups, cg, [programs["shapes32"], scenario])
    for checkpoint in shapes.checkpoints():
        settle(w, cgroups, cg, checkpoint, timeout=1.0 if rec["vm_hook"] == "syscalls" else 5.0,
               exact=rec["vm_hook"] != "syscalls")
    shapes.close()
    assert w.stop() == 0


def test_exec_counts_the_program_loaders_mappings(cgroups, watcher, programs):
    cg = cgroups.make("exec")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1")
    w.started()
    shapes = Shapes(cgroups, cg, [programs["shapes"], "exec", programs["bigbss"]])
    seen = []
    for checkpoint in shapes.checkpoints():
        est, _ = settle(w, cgroups, cg, checkpoint)
        seen.append((checkpoint, est))
        if checkpoint == "bss":
            break
    shapes.p.stdin.close()
    shapes.p.wait(timeout=10)
    assert [c for c, _ in seen] == ["before", "bss"]
    assert seen[1][1] > 192 * MiB  # the 192 MiB .bss is counted
    assert w.stop() == 0


def test_processes_moved_in_and_out_are_followed(cgroups, watcher, programs):
    cg = cgroups.make("target")
    outside = cgroups.make("outside")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1")
    w.started()
    shapes = Shapes(cgroups, outside, [programs["shapes"], "hold", "96"])
    it = shapes.checkpoints()
    assert next(it) == "holding"
    with open(os.path.join(cgroups.path(cg), "cgroup.procs"), "w") as f:
        f.write(str(shapes.p.pid))
    est, rss = settle(w, cgroups, cg, "moved in")
    assert rss >= 96 * MiB
    with open(os.path.join(cgroups.path(outside), "cgroup.procs"), "w") as f:
        f.write(str(shapes.p.pid))
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
               and r["estimate_bytes"] == 0, what="estimate back to 0 after moving out")
    next(it, None)
    shapes.close()
    assert w.stop() == 0


def test_processes_started_before_beanwatch_are_counted(cgroups, watcher, programs):
    cg = cgroups.make("before")
    shapes = Shapes(cgroups, cg, [programs["shapes"], "hold", "80"])
    it = shapes.checkpoints()
    assert next(it) == "holding"
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.1")
    w.started()
    est, rss = settle(w, cgroups, cg, "seeded")
    assert rss >= 80 * MiB
    next(it, None)
    shapes.close()
    assert w.stop() == 0


@pytest.mark.parametrize("thp", [False, True], ids=["4k", "thp"])
def test_slow_mode_catches_a_full_speed_toucher(cgroups, watcher, programs, thp):
    """One fault may map 2 MiB: the kill must still land a few MiB past the limit."""
    cg = cgroups.make("toucher")
    limit = 128
    w = watcher("--limit", f"{cg}={limit}M", "--action", "kill", "--interval", "1")
    w.started()
    p = cgroups.spawn(cg, [programs["toucher"], "1024"] + (["thp"] if thp else []))
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = -signal.SIGKILL
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    peak_mib = usage.ru_maxrss / 1024
    # ru_maxrss comes from the mm's per-CPU RSS counters, which lag the pages by a batch per
    # CPU: a kill that lands right at the limit may show a peak a few pages below it.
    assert limit - 2 < peak_mib < limit + 32, f"peak RSS {peak_mib:.1f} MiB for a {limit} MiB limit"
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="kill record")
    assert act["ok"]
    assert w.stop() == 0


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def vm_write(pid: int, addr: int, data: ctypes.Array) -> int:
    """process_vm_writev(2) of data to addr in pid: bytes written, or -errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    local = _Iovec(ctypes.addressof(data), len(data))
    remote = _Iovec(addr, len(data))
    n = libc.process_vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return n if n >= 0 else -ctypes.get_errno()


def test_slow_mode_sees_resident_growth_made_from_outside(cgroups, watcher, programs):
    """A process whose pages are made resident by another process (process_vm_writev from
    the root cgroup: no fault, no mmap-lock release of its own) is killed soon after its
    cgroup passes the limit, long before the next periodic exact check (60 s)."""
    cg = cgroups.make("remote")
    limit = 256
    w = watcher("--limit", f"{cg}={limit}M", "--action", "kill", "--interval", "60")
    w.started()
    holder = cgroups.spawn(cg, [programs["holder"], "1024"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    addr = int(holder.stdout.readline())
    # 1 GiB mapped over a 256 MiB limit: slow mode, measured exactly once at the switch
    w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == cg, what="exact check")
    chunk = (ctypes.c_char * MiB)(*([b"x"] * 1))
    written, t0 = 0, time.monotonic()
    while written < 1024 * MiB and time.monotonic() - t0 < 30:
        n = vm_write(holder.pid, addr + written, chunk)
        if n < 0:
            break            # killed: ESRCH
        written += n
        time.sleep(0.002)    # ~500 MiB/s at most: the kill has time to land
    _, status, usage = os.wait4(holder.pid, 0)
    holder.returncode = -signal.SIGKILL
    assert written < (limit + 64) * MiB, (
        f"{written >> 20} MiB written from outside before the kill, "
        f"{time.monotonic() - t0:.1f} s after the first")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="kill record")
    assert act["ok"]
    assert w.stop() == 0
