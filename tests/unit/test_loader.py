"""The loader's checks that need no kernel: refusing to run blind, offsets from BTF."""

from __future__ import annotations

import os

import pytest

from observer.kernel.loader import (MMAP_LOCK_TRACEPOINT, REQUIRED_TRACEPOINTS, REQUIRED_VM_SYSCALLS,
                             ProbeError, ProbeOptions, Probes, probe_source)


def fake_tracefs(tmp_path, skip=()):
    events = tmp_path / "events"
    wanted = list(REQUIRED_TRACEPOINTS) + [MMAP_LOCK_TRACEPOINT] + [
        ("syscalls", f"sys_exit_{s}") for s in REQUIRED_VM_SYSCALLS]
    for cat, ev in wanted:
        if f"{cat}:{ev}" not in skip:
            (events / cat / ev).mkdir(parents=True)
    return str(tmp_path)


def test_all_present_passes_and_prefers_the_mmap_lock_hook(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path))
    p.check()
    assert p.vm_hook == "mmap-lock"


@pytest.mark.parametrize("missing", ["sched:sched_process_fork", "cgroup:cgroup_attach_task",
                                     "sched:sched_process_exit"])
def test_a_missing_tracepoint_is_an_error_naming_it(tmp_path, missing):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path, skip={missing}))
    with pytest.raises(ProbeError, match=missing):
        p.check()
    assert p.bpf is None


def test_without_mmap_lock_tracepoints_syscalls_are_followed(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path, skip={"mmap_lock:mmap_lock_released"}))
    p.check()
    assert p.vm_hook == "syscalls"


def test_without_either_hook_it_refuses(tmp_path):
    skip = {"mmap_lock:mmap_lock_released", "syscalls:sys_exit_mmap"}
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path, skip=skip))
    with pytest.raises(ProbeError, match="sys_exit_mmap"):
        p.check()


def test_forcing_the_syscall_hook(tmp_path):
    p = Probes(lambda e: None, ProbeOptions(vm_hook="syscalls"), tracefs=fake_tracefs(tmp_path))
    p.check()
    assert p.vm_hook == "syscalls"
    assert "-DVM_HOOK_MMAP_LOCK=1" not in p.cflags({})
    p2 = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path / "b"))
    p2.check()
    assert "-DVM_HOOK_MMAP_LOCK=1" in p2.cflags({})


def test_probe_source_is_absolute_and_independent_of_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = probe_source()
    assert os.path.isabs(path) and os.path.exists(path)
    assert os.path.exists(os.path.join(os.path.dirname(path), "observer.h"))


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no kernel BTF")
def test_kernel_offsets_from_this_kernels_btf():
    from observer.kernel.btf import BTF
    from observer.kernel.loader import kernel_offsets
    offs = kernel_offsets(BTF.from_file())
    assert set(offs) >= {"OFF_TASK_MM", "OFF_MM_TOTAL_VM", "OFF_KERNFS_NODE_ID"}
    assert all(isinstance(v, int) and v >= 0 for v in offs.values())
    assert offs["SIZE_RSS_COUNTER"] >= 8
