"""`check`: what the host offers, judged against fake tracefs and cgroup trees."""

from __future__ import annotations

import pytest

from observer.app import hostcheck
from observer.core.errors import BeanwatchError
from observer.host.cgroupfs import Mounts
from observer.kernel import loader


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Every tracepoint present, a cgroup2 tree with one child, a BTF without problems."""
    tracefs = tmp_path / "tracing"
    wanted = list(loader.REQUIRED_TRACEPOINTS) + [loader.FAULT_TRACEPOINT] + [
        ("syscalls", f"sys_exit_{s}") for s in loader.REQUIRED_VM_SYSCALLS]
    for cat, ev in wanted:
        (tracefs / "events" / cat / ev).mkdir(parents=True)
    cg = tmp_path / "cgroup"
    (cg / "job").mkdir(parents=True)
    for f in ("cgroup.kill", "memory.max"):
        (cg / "job" / f).touch()
    monkeypatch.setattr(loader, "find_tracefs", lambda: str(tracefs))
    monkeypatch.setattr(hostcheck, "find_mounts", lambda: Mounts(str(cg), None))
    monkeypatch.setattr(hostcheck.BTF, "from_file", classmethod(lambda cls: object()))
    monkeypatch.setattr(loader, "kernel_offsets", lambda btf: {})
    # loading the real programs is the integration tests' job
    monkeypatch.setattr(hostcheck, "_load_probes",
                        lambda: hostcheck.Result("probes", True, "loaded (fake)"))
    monkeypatch.setattr(loader, "refusal_problem", lambda: "no BPF LSM (fake)")
    return tracefs, cg


def by_name(results):
    return {r.name: r for r in results}


def test_a_complete_host(host):
    r = by_name(hostcheck.run_checks())
    for name in ("btf", "tracefs", "sched:sched_process_exec", "syscalls:sys_exit_mmap",
                 "cgroup2", "cgroup.kill", "exceptions:page_fault_user", "memory limits"):
        assert r[name].ok, r[name]
    assert not r["cgroup.kill"].required and not r["exceptions:page_fault_user"].required
    assert r["memory limits"].detail == "cgroup2 memory.max"


def test_a_missing_required_tracepoint_is_required_and_named(host):
    tracefs, _ = host
    (tracefs / "events" / "sched" / "sched_process_fork").rmdir()
    r = by_name(hostcheck.run_checks())
    assert not r["sched:sched_process_fork"].ok and r["sched:sched_process_fork"].required
    assert r["sched:sched_process_fork"].detail == "missing"


def test_missing_fault_tracepoint_and_cgroup_kill_are_optional(host):
    tracefs, cg = host
    (tracefs / "events" / "exceptions" / "page_fault_user").rmdir()
    (cg / "job" / "cgroup.kill").unlink()
    r = by_name(hostcheck.run_checks())
    assert not r["exceptions:page_fault_user"].ok and not r["exceptions:page_fault_user"].required
    assert "periodic exact checks" in r["exceptions:page_fault_user"].detail
    assert not r["cgroup.kill"].ok and "freeze + SIGKILL" in r["cgroup.kill"].detail


def test_a_btf_problem_is_reported_not_raised(host, monkeypatch):
    def broken(cls):
        raise BeanwatchError("no /sys/kernel/btf/vmlinux")
    monkeypatch.setattr(hostcheck.BTF, "from_file", classmethod(broken))
    r = by_name(hostcheck.run_checks())
    assert not r["btf"].ok and r["btf"].required and "vmlinux" in r["btf"].detail


def test_no_cgroup2(host, monkeypatch):
    monkeypatch.setattr(hostcheck, "find_mounts", lambda: Mounts(None, None))
    r = by_name(hostcheck.run_checks())
    assert not r["cgroup2"].ok and "cgroup.kill" not in r


def test_cgroup_kill_is_judged_from_a_child_cgroup(tmp_path):
    assert hostcheck._cgroup_kill_known(str(tmp_path)) is None     # no child to look at
    (tmp_path / "a").mkdir()
    assert hostcheck._cgroup_kill_known(str(tmp_path)) is False
    (tmp_path / "a" / "cgroup.kill").touch()
    assert hostcheck._cgroup_kill_known(str(tmp_path)) is True
    assert hostcheck._cgroup_kill_known(str(tmp_path / "missing")) is None


def test_any_has_looks_in_the_first_child(tmp_path):
    assert not hostcheck._any_has(str(tmp_path), "memory.max")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "memory.max").touch()
    assert hostcheck._any_has(str(tmp_path), "memory.max")


def test_summary_names_hook_kill_path_and_gaps(host, monkeypatch):
    monkeypatch.setattr(hostcheck, "PROBE_FACTS", {"vm_hook": "syscalls", "slow_source":
                        "page-faults", "not_covered": ["stack growth"]})
    facts = hostcheck.summary(hostcheck.run_checks())
    assert facts["ok"] and facts["vm_hook"] == "syscalls" and facts["kill_path"] == "cgroup.kill"
    assert facts["not_covered"] == ["stack growth"]
    tracefs, cg = host
    (cg / "job" / "cgroup.kill").unlink()
    assert hostcheck.summary(hostcheck.run_checks())["kill_path"] == "freeze+pidfd"


def test_a_probe_load_failure_fails_check(host, monkeypatch):
    monkeypatch.setattr(hostcheck, "_load_probes",
                        lambda: hostcheck.Result("probes", False, "BPF programs failed to load"))
    r = by_name(hostcheck.run_checks())
    assert not r["probes"].ok and r["probes"].required
    assert not hostcheck.summary(list(r.values()))["ok"]


def test_scratch_probe_ignores_a_directory_that_is_no_cgroup(tmp_path):
    found, why = hostcheck._scratch_has(str(tmp_path), "cgroup.kill")
    assert found is None and why
    assert list(tmp_path.iterdir()) == []


def test_check_names_the_hook_watch_will_use(host, monkeypatch):
    """mmap_lock tracepoints: watch uses them, and the syscall tracepoints are not needed
    (a kernel without CONFIG_FTRACE_SYSCALLS runs); without them, the syscalls are."""
    monkeypatch.setattr(hostcheck, "PROBE_FACTS", {})
    tracefs, _ = host
    r = by_name(hostcheck.run_checks())
    assert "(syscalls)" in r["address-space hook"].detail
    assert r["syscalls:sys_exit_mmap"].required
    (tracefs / "events" / "mmap_lock" / "mmap_lock_released").mkdir(parents=True)
    for s in loader.REQUIRED_VM_SYSCALLS:
        (tracefs / "events" / "syscalls" / f"sys_exit_{s}").rmdir()
    monkeypatch.setattr(hostcheck, "PROBE_FACTS", {})
    results = hostcheck.run_checks()
    r = by_name(results)
    assert "(mmap-lock)" in r["address-space hook"].detail
    assert "syscalls:sys_exit_mmap" not in r
    facts = hostcheck.summary(results)
    assert facts["ok"] and facts["vm_hook"] == "mmap-lock"


def test_without_cap_sys_ptrace_the_precise_tier_is_said_to_be_partial(host, monkeypatch):
    monkeypatch.setattr(hostcheck, "has_capability", lambda bit: bit != hostcheck.CAP_SYS_PTRACE)
    r = by_name(hostcheck.run_checks())["precise tier"]
    assert not r.ok and not r.required and "RSS counts instead" in r.detail
    monkeypatch.setattr(hostcheck, "has_capability", lambda bit: True)
    assert by_name(hostcheck.run_checks())["precise tier"].ok


def test_has_capability_reads_cap_eff(tmp_path):
    from observer.host.procfs import CAP_SYS_PTRACE, has_capability
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000080000\n")
    assert has_capability(CAP_SYS_PTRACE, str(status))
    assert not has_capability(CAP_SYS_PTRACE + 1, str(status))
