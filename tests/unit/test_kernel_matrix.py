"""scripts/kernel_matrix.py (the `make test-kernels` driver) and scripts/vm.sh's argument checks,
without booting anything."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location("kernel_matrix", os.path.join(ROOT, "scripts", "kernel_matrix.py"))
km = importlib.util.module_from_spec(spec)
spec.loader.exec_module(km)


def test_features_come_from_whichever_record_has_them_and_check_wins():
    check = "\n".join([
        json.dumps({"event": "check", "name": "root", "ok": True}),
        "not json at all {",
        json.dumps({"event": "check", "name": "hooks", "vm_hook": "syscalls", "kill_path": "freeze+pidfd"}),
    ])
    demo = json.dumps({"event": "snapshot", "vm_hook": "mmap-lock", "slow_source": "page-faults"})
    assert km.features(check, demo) == {"vm_hook": "syscalls", "kill_path": "freeze+pidfd",
                                        "slow_source": "page-faults"}
    assert km.features("", "[1, 2]\n{}") == {"vm_hook": None, "kill_path": None, "slow_source": None}


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t.a" name="ok1"/>'
        '<testcase classname="t.a" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t.b" name="err"><error message="y"/></testcase>'
        '<testcase classname="t.b" name="skip"><skipped message="z"/></testcase>'
        '<testcase classname="t.b" name="ok2"><system-out>hi</system-out></testcase>'
        '</testsuite></testsuites>')
    c = km.junit_counts(str(xml))
    assert (c["passed"], c["failed"], c["skipped"]) == (2, 2, 1)
    assert c["failed_names"] == ["t.a::bad", "t.b::err"]
    assert km.junit_counts(str(tmp_path / "missing.xml"))["passed"] == 0


def row(**kw):
    base = {"kernel": "6.1", "release": "6.1.0-57-amd64", "seconds": 80.0, "boot_seconds": 9.0,
            "check_ok": True, "demo_ok": True, "tests_rc": 0, "passed": 3, "failed": 0, "skipped": 0,
            "failed_names": [], "vm_hook": "mmap-lock", "kill_path": "cgroup.kill", "slow_source": None}
    base.update(kw)
    return base


@pytest.mark.parametrize("kw, ok", [
    ({}, True),
    ({"check_ok": False}, False),
    ({"demo_ok": False}, False),
    ({"failed": 1, "tests_rc": 1}, False),
    ({"passed": 0, "tests_rc": 5}, False),      # no kernel test selected proves nothing
    ({"tests_rc": None}, False),                # pytest timed out
    ({"error": "no result from the guest"}, False),
])
def test_row_ok(kw, ok):
    assert km.row_ok(row(**kw)) is ok


def test_table_marks_failures_and_unknown_features():
    text = km.table([row(), row(kernel="5.10", check_ok=False, check_error="beanwatch: btf",
                             failed=1, failed_names=["t::x"], tests_rc=1)])
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["kernel", "release", "check", "demo", "tests"]
    assert "mmap-lock" in lines[2] and "cgroup.kill" in lines[2] and "?" in lines[2]
    assert lines[2].rstrip().endswith("ok") and lines[3].rstrip().endswith("FAIL")
    assert "5.10: check: beanwatch: btf" in text and "5.10: FAILED t::x" in text


def test_unknown_kernel_is_refused():
    p = subprocess.run([os.path.join(ROOT, "scripts", "kernel_matrix.py"), "--kernels", "4.19"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown kernel '4.19'" in p.stderr and p.stdout == ""


@pytest.mark.parametrize("args, env, message", [
    (["4.19", "true"], {}, "unknown kernel '4.19'"),
    (["6.1", "true"], {"VM_MEM": "lots"}, "VM_MEM must look like"),
    (["6.1", "true"], {"VM_CPUS": "0"}, "VM_CPUS must be"),
    (["6.1", "true"], {"VM_TIMEOUT": "-5"}, "VM_TIMEOUT must be"),
    (["6.1", "true"], {"VM_HEADERS": "mine"}, "VM_HEADERS must be"),
    (["6.1", "true"], {"BW_VM_CACHE": "/var/cache/bw"}, "hidden from the guest"),
])
def test_vm_sh_refuses_bad_input_before_doing_anything(args, env, message):
    p = subprocess.run([os.path.join(ROOT, "scripts", "vm.sh"), *args], capture_output=True,
                       text=True, env={**os.environ, **env})
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("vm.sh: ") and message in p.stderr and len(p.stderr.splitlines()) == 1
    assert p.stdout == ""


def test_vm_sh_without_a_command_prints_usage():
    p = subprocess.run([os.path.join(ROOT, "scripts", "vm.sh"), "6.1"], capture_output=True, text=True)
    assert p.returncode == 2 and "KERNEL COMMAND" in p.stderr and p.stdout == ""


def test_a_lock_held_by_a_parent_is_not_waited_for(tmp_path):
    """`flock LOCK make test-kernels`: the matrix's own per-guest flock of LOCK would wait
    for its parent forever (CI deadlocked so); a lock held elsewhere is still waited for."""
    lock = str(tmp_path / "vm.lock")
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('km', sys.argv[1]); "
            "km = importlib.util.module_from_spec(spec); spec.loader.exec_module(km)\n"
            "with km.locked(sys.argv[2]): print('inside', flush=True)")
    script = os.path.join(ROOT, "scripts", "kernel_matrix.py")
    p = subprocess.Popen(["flock", lock, "python3", "-c", code, script, lock],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=20)
    finally:   # waiting for itself: the whole group goes, the child holding the lock too
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0 and out == "inside\n", (p.returncode, out)
    # held by an unrelated process: waited for until it lets go
    holder = subprocess.Popen(["flock", lock, "sleep", "1.5"])
    try:
        deadline = time.time() + 10
        while not km.flock_holders(lock) and time.time() < deadline:
            time.sleep(0.02)
        assert km.flock_holders(lock) == {holder.pid}
        t0 = time.monotonic()
        p = subprocess.run(["python3", "-c", code, script, lock], capture_output=True, text=True,
                           timeout=20)
        assert p.stdout == "inside\n" and time.monotonic() - t0 > 0.5, p
    finally:
        holder.wait(timeout=10)
