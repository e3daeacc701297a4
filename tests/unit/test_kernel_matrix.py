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


def test_lock_holders_reads_holders_not_waiters(tmp_path):
    lock = tmp_path / "vm.lock"
    lock.write_text("")
    st = os.stat(lock)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = tmp_path / "locks"
    locks.write_text(f"1: FLOCK  ADVISORY  WRITE 11047 {dev} 0 EOF\n"
                     f"1: -> FLOCK  ADVISORY  WRITE 27370 {dev} 0 EOF\n"
                     f"2: FLOCK  ADVISORY  WRITE 999 00:00:1 0 EOF\n"
                     f"3: POSIX  ADVISORY  WRITE 555 {dev} 0 EOF\n")
    assert km.lock_holders(str(lock), str(locks)) == {11047}


LOCKER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("km", sys.argv[1])
km = importlib.util.module_from_spec(spec); spec.loader.exec_module(km)
with km.locked(sys.argv[2]):
    print("in", flush=True)
"""


def test_a_lock_held_by_an_ancestor_is_ours_not_a_deadlock(tmp_path):
    """`flock /tmp/bw-vm.lock make test-kernels` (CI wrapped in the lock) waited forever:
    kernel_matrix took the lock again under its own ancestor."""
    lock = str(tmp_path / "vm.lock")
    script = os.path.join(ROOT, "scripts", "kernel_matrix.py")
    p = subprocess.run(["flock", lock, "sh", "-c", f'"$0" -c \'{LOCKER}\' "$1" "$2"',
                        os.sys.executable, script, lock],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout == "in\n", p.stderr
    assert "held by our ancestor" in p.stderr


def test_a_lock_held_by_another_process_is_waited_for(tmp_path):
    lock = str(tmp_path / "vm.lock")
    holder = subprocess.Popen([os.sys.executable, "-c",
                               "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); time.sleep(30)", lock])
    try:
        deadline = 0
        while not (os.path.exists(lock) and km.lock_holders(lock)) and deadline < 100:
            deadline += 1
            subprocess.run(["sleep", "0.05"])
        waiter = subprocess.Popen([os.sys.executable, "-c", LOCKER,
                                   os.path.join(ROOT, "scripts", "kernel_matrix.py"), lock],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            waiter.wait(timeout=1.0)          # not ours: it waits
        holder.kill()
        holder.wait()
        out, err = waiter.communicate(timeout=10)
        assert out == "in\n" and "ancestor" not in err
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
