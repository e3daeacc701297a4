"""The probes alone, without a session: a cgroup's counters and bounds share one map entry
(`leaves`), and Python writes bounds by running the apply_bounds program (BPF_PROG_TEST_RUN).
A bounds write must keep the counts BPF added, re-arm the wake-ups, and make the entry of a
cgroup not seen yet; the hot programs count through whichever reads this kernel allows
(BTF direct loads from 5.11, probe reads before)."""

from __future__ import annotations

import os
import time

import pytest

from conftest import TIME_SCALE, no_programs_left

from observer.core.model import LeafBounds
from observer.kernel import wire
from observer.kernel.loader import Probes, has_task_btf

pytestmark = pytest.mark.kernel

MiB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


def wait_for(pred, what, timeout=10.0):
    deadline = time.time() + timeout * TIME_SCALE
    while not pred():
        assert time.time() < deadline, f"no {what}"
        time.sleep(0.02)


@pytest.fixture
def probes():
    events = []
    p = Probes(events.append)
    p.start()
    p.events = events
    try:
        yield p
    finally:
        p.close()
        assert no_programs_left(), "probes left loaded"


def counted(probes, cgid) -> int:
    return probes.counters_of([cgid]).get(cgid, (0, 0))[0]


def test_bounds_writes_keep_the_counts_and_rearm(cgroups, probes):
    # on 5.11+ the hot programs read the task by BTF direct loads: a refused load would
    # have fallen back to probe reads silently, which this catches
    assert probes.task_btf == has_task_btf()
    # and the per-process record in task storage loads wherever the mmap-lock program
    # reads the task through BTF (6.1, 6.12 and 6.18 guests and hosts): a refusal would drop
    # it silently, which this catches
    assert probes.seen_cache == (probes.task_btf and probes.vm_hook == "mmap-lock"
                                 and probes.rss_stat_raw)
    # and before it the per-CPU slot, as a BTF tracepoint, wherever mm->owner is (CONFIG_MEMCG)
    assert probes.lock_slot == (probes.seen_cache and "OFF_MM_OWNER" in probes._offsets())
    cg = cgroups.make("leaves")
    cgid = os.stat(cgroups.path(cg)).st_ino
    far = 1 << 50
    # an entry made by the bounds write itself (no process of the cgroup ran yet)
    assert probes.set_bounds(cgid, LeafBounds(vm_high=far, vm_low=-far))
    assert probes.counters_of([cgid]) == {cgid: (0, 0)}
    w = cgroups.workload(cg, "reserve:64M", "hold")
    try:
        # the workload's mappings are counted as changes since it was first seen
        wait_for(lambda: counted(probes, cgid) >= 64 * MiB // PAGE, "64 MiB counted")
        before = counted(probes, cgid)
        for i in range(50):
            assert probes.set_bounds(cgid, LeafBounds(vm_high=far - i, vm_low=-far))
        assert counted(probes, cgid) == before, "a bounds write changed the count"
        # a bound below the count fires at the next growth, once; a write re-arms it
        probes.events.clear()
        assert probes.set_bounds(cgid, LeafBounds(vm_high=before, vm_low=-far))
        g = cgroups.workload(cg, "reserve:8M", "hold")
        try:
            wait_for(lambda: (probes.poll(50) or True)
                     and any(e.kind == wire.EV_VM_HIGH and e.cgid == cgid for e in probes.events),
                     "EV_VM_HIGH after a bound was set below the count")
            highs = [e for e in probes.events if e.kind == wire.EV_VM_HIGH and e.cgid == cgid]
            assert highs[0].value > before
        finally:
            g.kill()
            g.wait()
        assert counted(probes, cgid) >= before
    finally:
        w.kill()
        w.wait()
    wait_for(lambda: counted(probes, cgid) <= 0, "the exits taken out of the count")


def test_a_bounds_write_for_a_removed_cgroup_makes_no_entry(cgroups, probes):
    """A churning tenant's cgroup is often gone by the time Python bounds it: the write must
    say so and make no entry (one made then was never freed: the map filled up with them)."""
    if "-DHAS_CGROUP_RMDIR=1" not in probes.cflags({}):
        pytest.skip("no cgroup:cgroup_rmdir tracepoint here: dead ids are not known")
    cg = cgroups.make("removed")
    cgid = os.stat(cgroups.path(cg)).st_ino
    os.rmdir(cgroups.path(cg))
    far = 1 << 50
    assert probes.set_bounds(cgid, LeafBounds(vm_high=far, vm_low=-far)) == wire.BOUNDS_GONE
    assert probes.counters_of([cgid]) == {}
    alive = cgroups.make("alive")
    aid = os.stat(cgroups.path(alive)).st_ino
    assert probes.set_bounds(aid, LeafBounds(vm_high=far, vm_low=-far)) is True
