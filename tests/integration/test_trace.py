"""`beanwatch trace` against a C program growing its address space by known steps: every
change at or above --min-size is traced with its exact bytes (VmSize after minus before),
the right pid and kind; nothing below the size, nothing else."""

import os
import subprocess
import time

import pytest

from conftest import ROOT, vm_size

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
    deadline = time.time() + timeout
    while "tracing address-space growth" not in tracer.stderr_so_far():
        assert tracer.proc.poll() is None, tracer.stderr_so_far()
        assert time.time() < deadline, "trace did not start: " + tracer.stderr_so_far()
        time.sleep(0.05)


def test_trace_names_every_growth_at_or_above_the_size(cgroups, watcher, exes):
    cg = cgroups.make("trace")
    tracer = watcher("--cgroup", cg, "--min-size", "4M", command="trace")
    started(tracer)
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
    step(f"stack {6 * MiB}", "stack")
    parent_vm = vm_size(p.pid)
    p.stdin.write("fork\n")
    p.stdin.flush()
    reply = p.stdout.readline().split()
    child = int(reply[1])
    assert vm_size(child) == parent_vm
    expected.append((child, "fork", parent_vm, None))
    p.stdin.write(f"exec {exes['bigbss']}\n")
    p.stdin.flush()
    assert p.stdout.readline() == "ready bss\n"

    ours = {p.pid, child}

    def got():
        return [r for r in tracer.of("grow") if r["pid"] in ours]
    tracer.wait_for(lambda r: r["event"] == "grow" and r["kind"] == "exec", what="exec growth")
    time.sleep(0.3)
    records = got()
    execs = [r for r in records if r["kind"] == "exec"]
    rest = [(r["pid"], r["kind"], r["bytes"]) for r in records if r["kind"] != "exec"]
    assert rest == [(pid, kind, size) for pid, kind, size, _ in expected], records
    # the program loader maps bigbss's 192 MiB .bss in one change; a position-independent
    # executable's whole image span is also mapped (then trimmed) at its first segment:
    # one or two changes, each the size of the image, all in the process exec'ing
    sizes = [r["bytes"] for r in execs]
    assert 1 <= len(execs) <= 2 and all(r["pid"] == p.pid for r in execs), execs
    assert all(191 * MiB <= b <= 193 * MiB for b in sizes), sizes
    for rec in records:
        assert rec["cgroup"] == cg and rec["cgroup_id"] == os.stat(cgroups.path(cg)).st_ino
        assert rec["bytes"] >= MIN
    # the cgroup's estimate after the change: its only process's VmSize then
    for rec, (_pid, _kind, _size, after) in zip(records, expected):
        if after is not None and rec["kind"] != "fork":
            assert rec["estimate_bytes"] == after, (rec, after)
    p.stdin.close()
    p.wait(timeout=10)
    assert tracer.stop() == 0
