"""What the host offers beanwatch: privileges, BPF, BTF, tracepoints, cgroups, headers."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from ..kernel import loader
from ..kernel.btf import BTF
from ..host.cgroupfs import find_mounts
from ..host.procfs import CAP_SYS_PTRACE, has_capability
from ..core.errors import BeanwatchError
from ..core.model import LeafBounds


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    required: bool = True


def run_checks() -> list[Result]:
    out = [Result("root", os.geteuid() == 0,
                  "running as root" if os.geteuid() == 0 else "beanwatch needs root")]
    ptrace = has_capability(CAP_SYS_PTRACE)
    out.append(Result("precise tier", ptrace,
                      "CAP_SYS_PTRACE: PSS (smaps_rollup) of every process can be read" if ptrace
                      else "no CAP_SYS_PTRACE: the PSS of another user's process, or of one "
                      "with capabilities beanwatch lacks, cannot be read; its RSS counts "
                      "instead (sound, but sharers pay for what they share)", required=False))
    try:
        import bcc  # noqa: F401  (only a presence check; the loader owns bcc)
        out.append(Result("bcc", True, "python3-bpfcc importable"))
    except ImportError:
        out.append(Result("bcc", False, "install python3-bpfcc; use a venv with --system-site-packages"))
    try:
        btf = BTF.from_file()
        loader.kernel_offsets(btf)
        out.append(Result("btf", True, "/sys/kernel/btf/vmlinux has every struct member needed"))
    except BeanwatchError as e:
        out.append(Result("btf", False, str(e)))
    build = f"/lib/modules/{platform.release()}/build"
    out.append(Result("kernel headers", os.path.exists(os.path.join(build, "include")),
                      f"{build} -> {os.path.realpath(build)}" if os.path.exists(build)
                      else f"{build} missing: install headers or run `make setup`"))
    tracefs = loader.find_tracefs()
    if tracefs is None and os.geteuid() == 0:
        try:
            tracefs = loader.ensure_tracefs()
        except BeanwatchError:
            tracefs = None
    out.append(Result("tracefs", tracefs is not None, tracefs or "not mounted"))
    if tracefs:
        # the hook watch will use, as the loader chooses it: mmap_lock tracepoints where the
        # kernel has them, else the mapping syscalls' exits (only then are those required)
        has_lock = loader.tracepoint_exists(tracefs, *loader.MMAP_LOCK_TRACEPOINT)
        hook = "mmap-lock" if has_lock else "syscalls"
        PROBE_FACTS.setdefault("vm_hook", hook)
        out.append(Result("address-space hook", True, {
            "mmap-lock": "watch will follow address-space changes at "
                         "mmap_lock:mmap_lock_released (mmap-lock)",
            "syscalls": "watch will follow address-space changes at the mapping syscalls' "
                        "exits (syscalls): no mmap_lock tracepoints on this kernel"}[hook],
            required=False))
        needed = list(loader.REQUIRED_TRACEPOINTS)
        needed += ([loader.MMAP_LOCK_TRACEPOINT] if has_lock else
                   [("syscalls", f"sys_exit_{s}") for s in loader.REQUIRED_VM_SYSCALLS])
        for cat, ev in needed:
            ok = loader.tracepoint_exists(tracefs, cat, ev)
            out.append(Result(f"{cat}:{ev}", ok, "present" if ok else "missing"))
        ok = loader.tracepoint_exists(tracefs, *loader.FAULT_TRACEPOINT)
        out.append(Result("exceptions:page_fault_user", ok,
                          "present: slow mode follows faults" if ok
                          else "missing (x86 only): slow mode uses periodic exact checks",
                          required=False))
    out.append(_load_probes())
    mounts = find_mounts()
    out.append(Result("cgroup2", mounts.cgroup2 is not None, mounts.cgroup2 or "not mounted"))
    if mounts.cgroup2:
        root = mounts.cgroup2
        has_kill, why = _scratch_has(root, "cgroup.kill")
        if has_kill is None:
            has_kill = _cgroup_kill_known(root)
        out.append(Result("cgroup.kill", bool(has_kill),
                          {True: "kernel kills whole cgroups",
                           False: "missing (before 5.14): kill falls back to freeze + SIGKILL",
                           None: f"not probed ({why}); kill uses cgroup.kill where it "
                                 "exists, else freeze + SIGKILL"}[has_kill],
                          required=False))
        out.append(Result("memory limits", True,
                          "cgroup2 memory.max" if os.path.exists(os.path.join(root, "memory.stat"))
                          or _any_has(root, "memory.max") else
                          (f"cgroup1 memory at {mounts.memory_v1}" if mounts.memory_v1
                           else "no memory controller: give limits with --limit"),
                          required=False))
    out.append(_refusal())
    return out


def _refusal() -> Result:
    """Whether `watch --vm-limit` can refuse allocations here (optional: without it,
    --vm-limit is refused at start)."""
    if os.geteuid() != 0:
        return Result("vm-limit refusal", False, "not tried: needs root", required=False)
    problem = loader.refusal_problem()
    return Result("vm-limit refusal", problem is None,
                  problem or "BPF LSM active and attachable: --vm-limit refuses mmap, shmat, "
                             "mremap (and brk where fmod_ret is allowed) with ENOMEM",
                  required=False)


def _load_probes() -> Result:
    """Compiles, loads and attaches the real programs, then detaches them: what `watch`
    will do, so that check predicts honestly whether it can run."""
    if os.geteuid() != 0:
        return Result("probes", False, "not tried: loading BPF programs needs root")
    probes = loader.Probes(lambda _ev: None)
    try:
        probes.start()
        # bounds are written by running a program (BPF_PROG_TEST_RUN): try it once, on an
        # id no cgroup has (cgroup2 ids start above 1), in the maps torn down just below
        if probes.set_bounds(0, LeafBounds()) is False:
            return Result("probes", False, "writing a cgroup's bounds failed (map full)")
    except BeanwatchError as e:
        return Result("probes", False, str(e))
    finally:
        probes.close()
    reads = "BTF direct loads" if probes.task_btf else "probe reads"
    seen = ("an unchanged process costs no helper call (per-CPU slot, BTF tracepoint)"
            if probes.lock_slot else
            "an unchanged process costs no map lookup (task storage)" if probes.seen_cache
            else "an unchanged process costs one map lookup")
    refused = "".join(f"; {feature} refused: {why}" for feature, why in probes.dropped.items())
    PROBE_FACTS.update(vm_hook=probes.vm_hook, slow_source=probes.slow_source,
                       not_covered=probes.not_covered(), task_reads=reads)
    return Result("probes", True, f"compiled, loaded and attached (address space via "
                                  f"{probes.vm_hook}; slow mode via {probes.slow_source}; "
                                  f"hot paths read the task by {reads}; {seen}{refused})")


# What the last _load_probes() learnt about this kernel (for check's summary).
PROBE_FACTS: dict = {}


def summary(results: list[Result]) -> dict:
    """The facts `check --json` and the kernel matrix read: hook, kill path, slow source."""
    by = {r.name: r for r in results}
    kill = by.get("cgroup.kill")
    return {
        "ok": all(r.ok or not r.required for r in results),
        "vm_hook": PROBE_FACTS.get("vm_hook"),
        "kill_path": None if kill is None else ("cgroup.kill" if kill.ok else "freeze+pidfd"),
        "slow_source": PROBE_FACTS.get("slow_source"),
        "not_covered": PROBE_FACTS.get("not_covered", []),
        "refusal": bool(by.get("vm-limit refusal") and by["vm-limit refusal"].ok),
        "kernel": platform.release(),
    }


def _scratch_has(root: str, name: str) -> tuple[bool | None, str]:
    """Looks for a core file in a scratch cgroup of our own: (found, "") or (None, why
    no scratch cgroup could be made)."""
    if os.geteuid() != 0:
        return None, "making a scratch cgroup needs root"
    path = os.path.join(root, f"beanwatch-check-{os.getpid()}")
    try:
        os.mkdir(path)
    except OSError as e:
        return None, f"cannot make a scratch cgroup in {root}: {e.strerror}"
    try:
        if not os.path.exists(os.path.join(path, "cgroup.procs")):
            return None, f"{root} is not a cgroup filesystem"
        return os.path.exists(os.path.join(path, name)), ""
    finally:
        try:
            os.rmdir(path)
        except OSError:
            pass


def _cgroup_kill_known(root: str) -> bool | None:
    """cgroup.kill exists in every non-root cgroup (5.14+); None when there is none to see."""
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                return os.path.exists(os.path.join(entry.path, "cgroup.kill"))
    except OSError:
        pass
    return None


def _any_has(root: str, name: str) -> bool:
    """Core files are absent from the root cgroup: look in its first child."""
    try:
        for entry in os.scandir(root):
            if entry.is_dir(follow_symlinks=False):
                return os.path.exists(os.path.join(entry.path, name))
    except OSError:
        pass
    return False
