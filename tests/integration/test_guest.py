"""The kernel-sensitive contract in few sessions, for the VM guests of `make test-kernels`.

Under QEMU TCG every `beanwatch watch` spends 20-60 s compiling its programs (about 1 s on a
host), so the per-scenario tests of test_soundness.py and test_watch.py (one session each)
would take hours per kernel. These tests check the same things with one session each:

- soundness: every scenario of tests/programs/shapes.c (and the 32-bit build) in a cgroup
  of its own, all watched by one session, under each address-space hook the kernel has;
- enforcement: a toucher killed near its limit (cgroup.kill, or freeze + pidfd where the
  kernel has no cgroup.kill), a reservation only measured, a quiet sibling untouched, all
  in one session.

They run on the host too (`make test`), so they are checked wherever the suite runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import ROOT
from test_soundness import COMPAT_SCENARIOS, SCENARIOS, SYSCALL_HOOK_SLACK, Shapes, settle

MiB = 1 << 20
pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("guest")
    progs = {}
    for name, src, flags in (("shapes", "tests/programs/shapes.c", ["-pthread"]),
                             ("shapes32", "tests/programs/shapes.c", ["-pthread", "-m32"]),
                             ("toucher", "bench/programs/toucher.c", [])):
        exe = str(out / name)
        if subprocess.run(["gcc", "-O1", *flags, "-o", exe, os.path.join(ROOT, src)]).returncode:
            assert name == "shapes32", f"cannot build {src}"
            continue
        progs[name] = exe
    return progs


def hooks_here() -> list[str]:
    """The syscall hook always; mmap-lock where the kernel has its tracepoints."""
    from observer.kernel.loader import MMAP_LOCK_TRACEPOINT, find_tracefs, tracepoint_exists
    tracefs = find_tracefs()
    return (["mmap-lock"] if tracefs and tracepoint_exists(tracefs, *MMAP_LOCK_TRACEPOINT)
            else []) + ["syscalls"]


@pytest.mark.parametrize("hook", ["mmap-lock", "syscalls"])
def test_every_scenario_in_one_session(cgroups, watcher, built, hook):
    if hook not in hooks_here():
        pytest.skip(f"no {hook} hook on this kernel")
    cases = [(s, "shapes") for s in sorted(SCENARIOS)]
    if "shapes32" in built:
        cases += [(s, "shapes32") for s in COMPAT_SCENARIOS]
    names = {}
    args = ["--interval", "0.1", "--vm-hook", hook]
    for scenario, prog in cases:
        cg = cgroups.make(f"{prog}-{scenario}")
        names[(scenario, prog)] = cg
        args += ["--limit", f"{cg}=64G"]
    w = watcher(*args)
    w.started(timeout=120)
    for (scenario, prog), cg in names.items():
        shapes = Shapes(cgroups, cg, [built[prog], scenario])
        seen = []
        for checkpoint in shapes.checkpoints():
            if prog == "shapes32" and hook == "syscalls":
                settle(w, cgroups, cg, checkpoint, timeout=1.0, exact=False)
            else:
                slack = SYSCALL_HOOK_SLACK.get(scenario, 0) if hook == "syscalls" else 0
                settle(w, cgroups, cg, checkpoint, slack=slack)
            seen.append(checkpoint)
        shapes.close()
        assert seen == SCENARIOS[scenario], (prog, scenario, seen)
        w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                   and r["estimate_bytes"] == 0, what=f"{prog} {scenario}: back to 0 after exit")
    assert w.stop() == 0


def test_enforcement_in_one_session(cgroups, watcher, built):
    hog, quiet = cgroups.make("hog"), cgroups.make("quiet")
    reserver = cgroups.make("reserver")
    w = watcher("--limit", f"{hog}=128M", "--limit", f"{reserver}=256M",
                "--action", "kill", "--interval", "0.5")
    w.started(timeout=120)
    sibling = cgroups.workload(quiet, "touch:64M", "hold")
    res = cgroups.workload(reserver, "reserve:1G", "touch:16M", "hold")
    check = w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == reserver
                       and r["estimate_bytes"] > 1024 * MiB, timeout=60,
                       what="exact check of the reservation")
    assert check["exact_bytes"] < 256 * MiB
    p = cgroups.spawn(hog, [built["toucher"], "1024"])
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = -signal.SIGKILL
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    peak = usage.ru_maxrss * 1024
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == hog, timeout=60,
                     what="kill record")
    assert act["action"] == "kill" and act["ok"], act
    assert 126 * MiB < peak < 128 * MiB + 64 * MiB, f"peak {peak / MiB:.1f} MiB"  # per-CPU lag
    time.sleep(1.0)
    assert sibling.poll() is None and res.poll() is None
    assert not w.of("action", quiet) and not w.of("action", reserver)
    assert w.stop() == 0


def test_the_guest_survives_kernel_text_patching():
    """The runner, not beanwatch: every program attached or detached patches the guest
    kernel's text, and under QEMU's multi-threaded TCG a guest with more than one CPU dies
    of that within seconds ("Oops: int3" and a panic on 6.12, an RCU-stall hang on 6.1),
    which killed whole guest runs in session 3. scripts/vm.sh runs TCG single-threaded; if
    it stops doing so this test kills the guest and the run fails."""
    if os.environ.get("BW_VM_ACCEL") != "tcg":
        pytest.skip("only in a scripts/vm.sh TCG guest (it turns tracing on and off machine-wide)")
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "textpoke-stress.sh"), "30"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "survived 30s" in out.stdout, out.stdout + out.stderr
    flips = int(out.stdout.split("flips ")[1].split()[0])
    assert flips > 20, f"only {flips} flips: the stress did not stress"
