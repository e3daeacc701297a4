"""`beanwatch trace` against a C program growing its address space by known steps: every
change at or above --min-size is traced with its exact bytes (VmSize after minus before),
the right pid and kind; nothing below the size, nothing else.

Run in every kernel guest (-m kernel). Where the kernel has no mmap_lock tracepoints (5.10:
the syscall hook) trace sees the same mmap, brk, mremap, shm and fork changes, but:
- stack growth is a page fault, not a hooked syscall: it is seen at the next change of the
  process's resident count the kernel reports (its faults are batched, at the latest when
  exec drops the old address space), with its exact bytes but as kind "mapping" (no
  syscall number can be read there before 5.15);
- exec is one change, the new address space's total at exec against the old one's (the
  program loader's mappings are not seen one by one)."""

import os
import re
import subprocess
import time

import pytest

from conftest import ROOT, TIME_SCALE, vm_size

MiB = 1 << 20
MIN = 4 * MiB


@pytest.fixture(scope="module")
def exes(tmp_path_factory):
    out = tmp_path_factory.mktemp("trace-programs")
    built = {}
    for name in ("grower", "bigbss"):
        exe = str(out / name)
        subprocess.run(["gcc", "-O1", "-Wall", "-o", exe,
                        os.path.join(ROOT, "tests", "programs", f"{name}.c")], check=True)
        built[name] = exe
    return built


def started(tracer, timeout=30.0):
    """Waits for trace's start line; returns the hook it names (mmap-lock or syscalls)."""
    deadline = time.time() + timeout * TIME_SCALE
    while "tracing address-space growth" not in tracer.stderr_so_far():
        assert tracer.proc.poll() is None, tracer.stderr_so_far()
        assert time.time() < deadline, "trace did not start: " + tracer.stderr_so_far()
        time.sleep(0.05)
    m = re.search(r"address space via ([\w-]+)", tracer.stderr_so_far())
    assert m, tracer.stderr_so_far()
    return m.group(1)


@pytest.mark.kernel
def test_trace_names_every_growth_at_or_above_the_size(cgroups, watcher, exes):
    cg = cgroups.make("trace")
    tracer = watcher("--cgroup", cg, "--min-size", "4M", command="trace")
    hook = started(tracer)
    assert hook in ("mmap-lock", "syscalls"), hook
    p = cgroups.spawn(cg, [exes["grower"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      text=True)
    assert p.stdout.readline() == "ok\n"
    expected = []    # (pid, kind, bytes) in order

    def step(command, kind):
        before = vm_size(p.pid)
        p.stdin.write(command + "\n")
        p.stdin.flush()
        reply = p.stdout.readline().split()
        assert reply[0] == "ok", reply
        after = vm_size(p.pid)
        if kind is not None:
            assert after - before >= MIN, (command, after - before)
            expected.append((p.pid, kind, after - before, after))
        else:
            assert 0 < after - before < MIN, (command, after - before)
        return reply

    step(f"mmap {16 * MiB}", "mmap")
    # comm is read from /proc when the record is made: waited for here, before the exec
    first = tracer.wait_for(lambda r: r["event"] == "grow" and r["pid"] == p.pid, what="mmap")
    assert first["comm"] == "grower" and first["kind"] == "mmap", first
    step(f"mmap {2 * MiB}", None)                # below the size: not traced
    step(f"brk {8 * MiB}", "brk")
    step(f"brk {1 * MiB}", None)
    step(f"mremap {MIN}", "mremap")              # exactly the size: traced
    step(f"mremap {MIN - 4096}", None)           # one page short: not traced
    step(f"shm {8 * MiB}", "shm")
    step(f"stack {6 * MiB}", "stack" if hook == "mmap-lock" else "mapping")
    parent_vm = vm_size(p.pid)
    p.stdin.write("fork\n")
    p.stdin.flush()
    reply = p.stdout.readline().split()
    child = int(reply[1])
    assert vm_size(child) == parent_vm
    expected.append((child, "fork", parent_vm, None))
    before_exec = vm_size(p.pid)
    p.stdin.write(f"exec {exes['bigbss']}\n")
    p.stdin.flush()
    assert p.stdout.readline() == "ready bss\n"
    after_exec = vm_size(p.pid)

    ours = {p.pid, child}

    def got():
        return [r for r in tracer.of("grow") if r["pid"] in ours]
    tracer.wait_for(lambda r: r["event"] == "grow" and r["kind"] == "exec", what="exec growth")
    time.sleep(0.3 * TIME_SCALE)
    records = got()
    print(f"hook {hook}; trace's records (pid, kind, bytes):",   # shown with -rA (guest logs)
          *[(r["pid"], r["kind"], r["bytes"]) for r in records], sep="\n  ")
    execs = [r for r in records if r["kind"] == "exec"]
    others = [r for r in records if r["kind"] != "exec"]
    if hook == "syscalls":
        # the stack's growth is seen later, once: anywhere after its step, before the exec
        stack = [r for r in others if r["kind"] == "mapping"]
        assert [(r["pid"], r["bytes"]) for r in stack] == \
            [(pid, size) for pid, kind, size, _ in expected if kind == "mapping"], records
        others = [r for r in others if r["kind"] != "mapping"]
        expected = [e for e in expected if e[1] != "mapping"]
    rest = [(r["pid"], r["kind"], r["bytes"]) for r in others]
    assert rest == [(pid, kind, size) for pid, kind, size, _ in expected], records
    assert all(r["pid"] == p.pid for r in execs), execs
    if hook == "mmap-lock":
        # the program loader maps bigbss's 192 MiB .bss in one change; a position-independent
        # executable's whole image span is also mapped (then trimmed) at its first segment:
        # one or two changes, each the size of the image, all in the process exec'ing
        sizes = [r["bytes"] for r in execs]
        assert 1 <= len(execs) <= 2, execs
        assert all(191 * MiB <= b <= 193 * MiB for b in sizes), sizes
    else:
        # one change at exec: the new total (the image, its stack, the program loader's
        # mappings) against the old one; ld.so's own mmaps of libc come after it
        assert len(execs) == 1, execs
        assert after_exec - before_exec - 8 * MiB <= execs[0]["bytes"] <= after_exec - before_exec, \
            (execs, before_exec, after_exec)
    for rec in records:
        assert rec["cgroup"] == cg and rec["cgroup_id"] == os.stat(cgroups.path(cg)).st_ino
        assert rec["bytes"] >= MIN
    # the cgroup's estimate after the change: its only process's VmSize then
    for rec, (_pid, _kind, _size, after) in zip(others, expected):
        if after is not None and rec["kind"] != "fork":
            assert rec["estimate_bytes"] == after, (rec, after)
    p.stdin.close()
    p.wait(timeout=10)
    assert tracer.stop() == 0


def statm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.kernel
def test_trace_tells_resident_growth_per_interval_in_slow_mode(cgroups, watcher, exes):
    """A --limit below the mapped size puts the cgroup in slow mode (a mode record); then a
    process touching 16 MiB a step is told once per interval (rss: its pid, the growth to
    the page), an idle-ish sibling growing 512 KiB a step never (under --rss-min), and the
    process past its limit lives on, nothing frozen: trace only reports."""
    step, tol = 16 * MiB, 16 * 4096
    # around the step: pages the process makes resident besides it, first-run code and libc
    # pages faulted around 16 at a time, or file pages reclaimed (6.1 guest: +276 KiB on a
    # first step, RSS 116 KiB below the last record a moment later)
    extra = 512 * 1024
    cg = cgroups.make("trace-rss")
    sib = cgroups.spawn(cg, [exes["grower"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        text=True)
    p = cgroups.spawn(cg, [exes["grower"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                      text=True)

    def say(proc, command):
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "ok\n", command
    for proc in (sib, p):
        assert proc.stdout.readline() == "ok\n"
    say(sib, f"mmap {8 * MiB}")
    say(p, f"mmap {256 * MiB}")     # mapped 256M, limit 40M: slow mode from the start
    for proc in (sib, p):
        say(proc, "touch 0")        # the code touching is resident now (16 pages of fault-around)
    # Started after the processes: the first check of the slow period, in trace's start
    # (before its start message), is where their growth counts from. (A process new in
    # an interval counts from 0: spawned during the trace, each would first be told with
    # its whole RSS.)
    tracer = watcher("--cgroup", cg, "--limit", f"{cg}=40M", "--rss-min", "1M",
                     "--interval", "1", command="trace")
    started(tracer)
    switch = tracer.wait_for(lambda r: r["event"] == "mode", what="the switch to slow mode")
    assert (switch["cgroup"], switch["previous"], switch["mode"]) == (cg, "fast", "slow"), switch
    assert switch["limit_bytes"] == 40 * MiB and switch["estimate_bytes"] >= 256 * MiB, switch

    def rss_of(pid, since):
        return [r for r in tracer.records[since:] if r["event"] == "rss" and r["pid"] == pid]
    time.sleep(1.2 * TIME_SCALE)
    assert tracer.of("rss") == []   # a tick at least: idle processes grew by nothing
    steps = []
    for _ in range(3):
        since = len(tracer.records)
        # the sibling first: a check that sees p's step has seen the sibling's
        say(sib, f"touch {512 * 1024}")
        say(p, f"touch {step}")
        deadline = time.time() + 5 * TIME_SCALE
        # one record, unless a tick fell inside the touch: then two (a part under --rss-min
        # is not told, hence the slack below)
        while sum(r["growth_bytes"] for r in rss_of(p.pid, since)) < step - tol \
                and time.time() < deadline:
            time.sleep(0.05)
        got = rss_of(p.pid, since)
        grown = sum(r["growth_bytes"] for r in got)
        assert step - MiB < grown <= step + extra, (
            grown, [(r["pid"], r["ts"], r["growth_bytes"], r["rss_bytes"])
                    for r in tracer.records if r["event"] == "rss"],
            p.pid, sib.pid)
        if len(got) == 1:
            assert abs(got[0]["growth_bytes"] - step) <= extra, got
        steps.append(got)
    print("trace's rss records:", *[(r["pid"], r["growth_bytes"], r["rss_bytes"],
                                     r["interval_s"], r["exact_bytes"])
                                    for got in steps for r in got], sep="\n  ")
    last = steps[-1][-1]
    assert abs(last["rss_bytes"] - statm_rss(p.pid)) <= extra, (last, statm_rss(p.pid))
    for r in [r for got in steps for r in got]:
        assert (r["cgroup"], r["cgroup_id"], r["comm"]) == \
            (cg, os.stat(cgroups.path(cg)).st_ino, "grower"), r
        assert r["limit_bytes"] == 40 * MiB and 0 < r["interval_s"] <= 2.5 * TIME_SCALE, r
        assert r["exact_bytes"] >= r["rss_bytes"] and r["estimate_bytes"] >= 256 * MiB, r
    assert last["exact_bytes"] > 40 * MiB         # past its limit by now, and only reported
    time.sleep(1.5 * TIME_SCALE)
    assert [r for r in tracer.records if r["event"] == "rss" and r["pid"] == sib.pid] == []
    assert p.poll() is None and sib.poll() is None
    assert cgroups.events(cg)["frozen"] == 0
    for proc in (p, sib):
        proc.stdin.close()
        proc.wait(timeout=10)
    assert tracer.stop() == 0


from test_memcg import memcg  # noqa: E402,F401 - the fixture: +memory under the test prefix


@pytest.mark.kernel
def test_trace_without_limit_follows_memory_max(memcg, watcher, exes):
    """No --limit: memory.max is the limit, followed live. Below the mapped size it puts the
    cgroup in slow mode and growth is told; set to max, the limit goes (a limit record)
    and so do the rss records. Runs where the memory controller is (the VM guests)."""
    step, tol = 16 * MiB, 16 * 4096
    extra = 512 * 1024     # besides the step: first-run code, fault-around (see above)
    cg = memcg.make("trace-memmax")
    with open(os.path.join(memcg.path(cg), "memory.max"), "w") as f:
        f.write(str(128 * MiB))
    p = memcg.spawn(cg, [exes["grower"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    text=True)

    def say(command):
        p.stdin.write(command + "\n")
        p.stdin.flush()
        assert p.stdout.readline() == "ok\n", command
    assert p.stdout.readline() == "ok\n"
    say(f"mmap {256 * MiB}")
    say("touch 0")
    tracer = watcher("--cgroup", cg, "--interval", "1", command="trace")
    started(tracer, timeout=60)
    switch = tracer.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == cg,
                             what="the switch to slow mode")
    assert (switch["mode"], switch["limit_bytes"]) == ("slow", 128 * MiB), switch

    def grown(since):
        return sum(r["growth_bytes"] for r in tracer.records[since:]
                   if r["event"] == "rss" and r["pid"] == p.pid)
    since = len(tracer.records)
    say(f"touch {step}")
    deadline = time.time() + 5 * TIME_SCALE
    while grown(since) < step - tol and time.time() < deadline:
        time.sleep(0.05)
    assert step - MiB < grown(since) <= step + extra, tracer.records[since:]
    with open(os.path.join(memcg.path(cg), "memory.max"), "w") as f:
        f.write("max")
    lim = tracer.wait_for(lambda r: r["event"] == "limit" and r["cgroup"] == cg,
                          what="the limit gone from memory.max")
    assert (lim["previous_limit_bytes"], lim["limit_bytes"]) == (128 * MiB, None), lim
    since = len(tracer.records)
    say(f"touch {step}")
    time.sleep(3 * TIME_SCALE)
    assert grown(since) == 0, tracer.records[since:]
    assert p.poll() is None
    p.stdin.close()
    p.wait(timeout=10)
    assert tracer.stop() == 0
