"""The loader's checks that need no kernel: refusing to run blind, offsets from BTF."""

from __future__ import annotations

import os

import pytest

from observer.kernel.loader import (MMAP_LOCK_TRACEPOINT, REQUIRED_TRACEPOINTS, REQUIRED_VM_SYSCALLS,
                             ProbeError, ProbeOptions, Probes, has_task_btf, probe_source)


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


EXIT_FORMAT_610 = """name: sched_process_exit
ID: 300
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;
"""


def test_exit_layout_comes_from_the_tracepoint_format(tmp_path):
    from observer.kernel.loader import tracepoint_fields
    root = fake_tracefs(tmp_path)
    fmt = tmp_path / "events" / "sched" / "sched_process_exit" / "format"
    fmt.write_text(EXIT_FORMAT_610)
    assert tracepoint_fields(root, "sched", "sched_process_exit") == {
        "common_type", "comm", "pid", "prio"}
    p = Probes(lambda e: None, tracefs=root)
    p.check()
    assert "-DEXIT_HAS_GROUP_DEAD=1" not in p.cflags({})
    fmt.write_text(EXIT_FORMAT_610 + "\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n")
    p.check()
    assert "-DEXIT_HAS_GROUP_DEAD=1" in p.cflags({})
    assert tracepoint_fields(root, "sched", "nosuch") == set()


def test_gaps_are_said_for_the_syscall_hook(tmp_path):
    p = Probes(lambda e: None, ProbeOptions(vm_hook="syscalls"), tracefs=fake_tracefs(tmp_path))
    p.check()
    gaps = " ".join(p.not_covered())
    assert "stack growth" in gaps and "32-bit" in gaps and "resident growth" in gaps
    p2 = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path / "b"))
    p2.check()
    assert not any("stack" in g for g in p2.not_covered())
    assert p2.slow_source == "periodic"   # the fake tracefs has neither rss_stat nor faults


def test_slow_mode_follows_rss_stat_where_there_is_one(tmp_path):
    root = fake_tracefs(tmp_path)
    (tmp_path / "events" / "exceptions" / "page_fault_user").mkdir(parents=True)
    p = Probes(lambda e: None, tracefs=root)
    p.check()
    assert p.slow_source == "page-faults" and not p.rss_stat_raw
    assert "-DFOLLOW_RSS_STAT=1" not in p.cflags({})
    assert any("process_vm_writev" in g for g in p.not_covered())
    (tmp_path / "events" / "kmem" / "rss_stat").mkdir(parents=True)
    (tmp_path / "events" / "oom" / "mark_victim").mkdir(parents=True)   # else a gap, said
    p = Probes(lambda e: None, tracefs=root)
    p.check()
    assert p.slow_source == "rss-stat" and p.rss_stat_raw
    assert "-DFOLLOW_RSS_STAT=1" in p.cflags({})
    if p.btf() is not None and p.btf().has_member("mm_struct", "owner"):
        assert p.not_covered() == []


def test_a_raw_tracepoint_whose_mm_is_not_first_is_not_used(tmp_path, monkeypatch):
    """Raw tracepoint programs read ctx->args[0] as the mm: a kernel whose TP_PROTO says
    otherwise (by BTF) gets the syscall hook and the fault tracepoints instead."""
    root = fake_tracefs(tmp_path)
    (tmp_path / "events" / "kmem" / "rss_stat").mkdir(parents=True)

    class FakeBTF:
        def tracepoint_args(self, event):
            return ["int", "struct mm_struct *"]

    p = Probes(lambda e: None, tracefs=root)
    monkeypatch.setattr(p, "btf", lambda: FakeBTF())
    p.check()
    assert p.vm_hook == "syscalls" and not p.rss_stat_raw


def test_map_sizes_come_from_the_host_within_bounds():
    from observer.kernel.loader import LEAVES_CAP, LEAVES_FLOOR, PROCS_CAP, PROCS_FLOOR, map_sizes
    assert map_sizes(32768, 100) == (32768, LEAVES_FLOOR)
    assert map_sizes(4194304, 10000) == (PROCS_CAP, 80000)
    assert map_sizes(None, 10**7) == (PROCS_FLOOR, LEAVES_CAP)
    assert map_sizes(1000, 1) == (PROCS_FLOOR, LEAVES_FLOOR)
    assert map_sizes(4194304, 10, procs=5000, leaves=64) == (5000, 64)


def test_no_atomic_fetch_is_a_define_and_a_stated_gap(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path))
    p.check()
    p._atomic_fetch = False
    assert "-DNO_ATOMIC_FETCH=1" in p.cflags({})
    assert any("atomic" in g for g in p.not_covered())
    p._atomic_fetch = True
    assert "-DNO_ATOMIC_FETCH=1" not in p.cflags({})
    assert not any("atomic" in g for g in p.not_covered())


def test_refuse_h_defines_no_function_accounting_c_or_oom_c_defines():
    """refuse.h is pasted into accounting.c with --vm-limit only: a name defined in both
    (current_syscall, once) compiles everywhere but there, and only BPF LSM guests see it."""
    import re
    probes = os.path.join(os.path.dirname(__file__), "..", "..", "probes")
    pat = re.compile(r"^static\s+__always_inline\s+[\w\s\*]+?\b(\w+)\s*\(", re.M)

    def names(f):
        with open(os.path.join(probes, f)) as fh:
            return set(pat.findall(fh.read()))
    refuse = names("refuse.h")
    assert refuse, "no functions found in refuse.h: the pattern is stale"
    assert not refuse & (names("accounting.c") | names("oom.c"))


@pytest.mark.parametrize("release, expected", [
    ("5.10.0-28-amd64", False), ("5.11.0", True), ("6.1.0-18-amd64", True),
    ("6.18.44-fc-v857", True), ("4.19.0", False), ("garbage", False)])
def test_btf_task_reads_from_5_11(release, expected):
    """bpf_get_current_task_btf came in 5.11: before, the hot programs use probe reads."""
    assert has_task_btf(release) is expected


def test_task_btf_is_a_define_that_can_be_turned_off(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path))
    p.check()
    p.task_btf = True
    assert "-DTASK_BTF=1" in p.cflags({})
    p.task_btf = False
    assert "-DTASK_BTF=1" not in p.cflags({})


def test_exact_vm_and_vm_limits_turn_waiting_shrinks_off(tmp_path, monkeypatch):
    """trace (exact_vm) reports each change's exact size and --vm-limit refuses against the
    exact total: both compile the probes with VM_EXACT; watch lets small shrinks wait."""
    from observer.kernel import loader
    monkeypatch.setattr(loader, "refuse_defs", lambda btf: {"VM_LIMITS": 1})
    tracefs = fake_tracefs(tmp_path)
    for options, exact in ((ProbeOptions(), False), (ProbeOptions(exact_vm=True), True),
                           (ProbeOptions(vm_limits=True), True)):
        p = Probes(lambda e: None, options, tracefs=tracefs)
        p.check()
        assert ("-DVM_EXACT=1" in p.cflags({})) is exact, options


def test_seen_cache_is_a_define_that_goes_with_task_btf(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path))
    p.check()
    p.task_btf, p.seen_cache = True, True
    assert "-DSEEN_CACHE=1" in p.cflags({})
    p.seen_cache = False
    assert "-DSEEN_CACHE=1" not in p.cflags({})
    p.task_btf, p.seen_cache = False, True    # the record is read through the BTF task
    assert "-DSEEN_CACHE=1" not in p.cflags({})
    p.task_btf, p.seen_cache, p.lock_slot = True, True, True
    assert "-DLOCK_SLOT=1" in p.cflags({})
    p.seen_cache = False                      # the slot's second level is the record
    assert "-DLOCK_SLOT=1" not in p.cflags({})


def test_a_refused_load_drops_the_newest_feature_first(tmp_path):
    p = Probes(lambda e: None, tracefs=fake_tracefs(tmp_path))
    tried = []

    def load(refusals):
        def attempt():
            tried.append((p.seen_cache, p.task_btf))
            if len(tried) <= refusals:
                raise Exception("verifier says no")
            return "loaded"
        return attempt
    p.task_btf, p.seen_cache, p.lock_slot = True, True, True
    assert p.load_dropping_features(load(1)) == "loaded"
    assert tried == [(True, True), (True, True)] and not p.lock_slot
    assert p.dropped == {"per-CPU slot": "verifier says no"}   # what `check` shows
    tried.clear()
    p.dropped.clear()
    p.task_btf, p.seen_cache = True, True
    assert p.load_dropping_features(load(1)) == "loaded"
    assert tried == [(True, True), (False, True)]
    assert p.dropped == {"task storage": "verifier says no"}
    tried.clear()
    p.task_btf, p.seen_cache = True, True
    assert p.load_dropping_features(load(2)) == "loaded"
    assert tried == [(True, True), (False, True), (False, False)]
    assert set(p.dropped) == {"task storage", "BTF direct loads"}
    tried.clear()
    p.task_btf, p.seen_cache = True, True
    with pytest.raises(Exception, match="verifier says no"):
        p.load_dropping_features(load(3))
