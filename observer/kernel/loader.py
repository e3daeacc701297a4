"""Loads beanwatch's BPF programs and reaches their maps: the only module that imports bcc."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import struct
from dataclasses import dataclass
from importlib import resources

from . import wire
from .btf import BTF
from ..core.errors import BeanwatchError
from ..core.model import LeafBounds, LeafCounters

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")

# Every syscall after which a process's total_vm may differ. The first four are required;
# the others are followed where the kernel has them. execve is followed by sched_process_exec.
REQUIRED_VM_SYSCALLS = ("mmap", "munmap", "brk", "mremap")
OPTIONAL_VM_SYSCALLS = ("shmat", "shmdt", "io_setup", "io_destroy", "map_shadow_stack")
# Tracepoints the always-on programs need (format tracepoints) and raw tracepoints.
REQUIRED_TRACEPOINTS = (("sched", "sched_process_exec"), ("sched", "sched_process_exit"),
                        ("sched", "sched_process_fork"), ("cgroup", "cgroup_attach_task"))
FAULT_TRACEPOINT = ("exceptions", "page_fault_user")
# Raw tracepoint programs read the kernel's TP_PROTO arguments: the mm must come first.
MM_FIRST = "struct mm_struct *"
# Faults taken in kernel mode on user memory (read() into an untouched buffer) grow RSS too.
KERNEL_FAULT_TRACEPOINT = ("exceptions", "page_fault_kernel")
MMAP_LOCK_TRACEPOINT = ("mmap_lock", "mmap_lock_released")
# Where mmap_lock tracepoints are missing, resident-count changes re-read total_vm; in slow
# mode, every resident-count change of a slow cgroup's process is followed there.
RSS_STAT_TRACEPOINT = ("kmem", "rss_stat")
# Frees a removed cgroup's map entries (cgroup2 ids only, from its hierarchy field).
RMDIR_TRACEPOINT = ("cgroup", "cgroup_rmdir")
VM_HOOKS = ("auto", "mmap-lock", "syscalls")
# Kernel OOM kills (probes/oom.c), taken raw: the victim task first on kernels whose
# format has its comm, else the victim's pid alone.
OOM_TRACEPOINT = ("oom", "mark_victim")
TASK_FIRST = "struct task_struct *"

BPF_NOEXIST = 1

# --vm-limit (probes/refuse.h)
MAX_VM_LIMITS = 1024
COMMIT_CHECK_PROG = b"kmod_ret__security_vm_enough_memory_mm"
# the mmap-lock program with its per-CPU slot, loaded as a BTF tracepoint (accounting.c LOCK_SLOT)
LOCK_SLOT_PROG = b"lock_released_btf"
LSM_LIST = "/sys/kernel/security/lsm"
SECURITYFS = "/sys/kernel/security"
# Hooks the refusal needs: a BPF LSM program attaches to the kernel's bpf_lsm_NAME.
REFUSAL_LSM_HOOKS = ("mmap_file", "mmap_addr")
REFUSAL_NEVER = (
    "stack growth: its commit check cannot be told apart from tmpfs and memfd page "
    "commits, so it is counted at once but never refused",
    "exec's own mappings, fork's copy of the address space, a process moved into the "
    "cgroup, aio rings: counted, not refused",
    "32-bit (compat) system calls: not refused (their numbers differ)",
    "MAP_FIXED over an existing mapping is judged by its whole length",
)


class ProbeError(BeanwatchError):
    """The BPF programs cannot be built, loaded or attached on this host."""


_decode, _string_at = wire.decode, ctypes.string_at   # per event: no attribute look-ups


def probe_source() -> str:
    """Absolute path of the BPF C source shipped in the package (never relative to cwd)."""
    return str(resources.files("observer.probes").joinpath("accounting.c"))


REFUSE_INCLUDE = '#include "refuse.h"'


def probe_text(vm_limits: bool = False) -> str:
    """The BPF source as bcc compiles it. With vm_limits, refuse.h is pasted in where
    accounting.c includes it: bcc rewrites map calls (table.lookup()) only in the main
    text, never in an included file (there they compile to indirect calls the verifier
    refuses, "unknown opcode 8d")."""
    with open(probe_source()) as f:
        text = f.read()
    if vm_limits:
        with open(os.path.join(os.path.dirname(probe_source()), "refuse.h")) as f:
            if REFUSE_INCLUDE not in text:
                raise ProbeError("accounting.c does not include refuse.h")
            text = text.replace(REFUSE_INCLUDE, f.read(), 1)
    return text


def find_tracefs() -> str | None:
    for path in TRACEFS_CANDIDATES:
        if os.path.exists(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    """Mounts tracefs if nothing has (as perf and bpftrace expect it to be)."""
    path = find_tracefs()
    if path:
        return path
    try:
        import subprocess
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_CANDIDATES[0]],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise ProbeError(f"tracefs is not mounted and mounting it failed: {e}") from None
    path = find_tracefs()
    if not path:
        raise ProbeError("tracefs is not mounted at /sys/kernel/tracing")
    return path


def tracepoint_exists(tracefs: str, category: str, event: str) -> bool:
    return os.path.isdir(os.path.join(tracefs, "events", category, event))


# bpf(2) numbers per machine, for the one raw feature probe below
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "s390x": 351, "ppc64le": 361, "riscv64": 280}


def _bpf(cmd: int, attr) -> int:
    """bpf(2) with this command and attribute buffer: the result, or -errno."""
    import platform
    nr = _BPF_SYSCALL.get(platform.machine())
    if nr is None:
        return -38   # ENOSYS
    r = _libc().syscall(nr, cmd, attr, len(attr))
    return r if r >= 0 else -ctypes.get_errno()


def has_atomic_fetch() -> bool:
    """Loads a 6-instruction socket filter that does an atomic fetch-and-add on its stack:
    the verifier of kernels before 5.12 refuses it ("BPF_STX uses reserved fields"). No
    compiler is needed, so the probe costs a syscall, not a compile."""
    insns = b"".join(struct.pack("<BBhi", code, regs, off, imm) for code, regs, off, imm in (
        (0xB7, 0x01, 0, 0),            # r1 = 0
        (0x7B, 0x1A, -8, 0),           # *(u64 *)(r10 - 8) = r1
        (0xB7, 0x01, 0, 1),            # r1 = 1
        (0xDB, 0x1A, -8, 0x01),        # r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
        (0xB7, 0x00, 0, 0),            # r0 = 0
        (0x95, 0x00, 0, 0),            # exit
    ))
    buf = ctypes.create_string_buffer(insns)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, 1, len(insns) // 8,   # BPF_PROG_TYPE_SOCKET_FILTER
                     ctypes.addressof(buf), ctypes.addressof(lic))
    fd = _bpf(5, attr)                                       # BPF_PROG_LOAD
    if fd >= 0:
        os.close(fd)
        return True
    # EINVAL: the verifier refused the instruction; anything else (EPERM without root, no
    # bpf(2) number known for this machine) says nothing about it, and loading the real
    # programs will fail with its own reason.
    import errno
    return fd != -errno.EINVAL


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def run_raw_tp_once(prog_fd: int, args: bytes) -> int:
    """Runs a raw-tracepoint program once with these arguments (BPF_PROG_TEST_RUN, 5.10+)
    and returns what it returned; raises ProbeError when the kernel refuses the run."""
    ctx = ctypes.create_string_buffer(args, len(args))
    attr = ctypes.create_string_buffer(80)   # union bpf_attr, its test member
    struct.pack_into("<I", attr, 0, prog_fd)
    struct.pack_into("<IIQ", attr, 40, len(args), 0, ctypes.addressof(ctx))
    rc = _bpf(10, attr)                                     # BPF_PROG_TEST_RUN
    if rc != 0:
        raise ProbeError(f"running a BPF program failed: {os.strerror(-rc)}")
    return struct.unpack_from("<I", attr, 4)[0]


def attach_btf_tracepoint(bpf, name: bytes, btf_id: int) -> list[int]:
    """Loads the compiled function `name` of a bcc module as a BTF tracepoint program
    (tp_btf: BPF_PROG_TYPE_TRACING, BPF_TRACE_RAW_TP, on the btf_trace_EVENT typedef
    btf_id; 5.5+), which bcc 0.26 cannot, and attaches it. Its instructions are bcc's, map
    references already resolved. Returns [link fd, program fd] (closed in that order);
    raises with the verifier's last words on a refusal."""
    from bcc.libbcc import lib
    start = lib.bpf_function_start(bpf.module, name)
    size = lib.bpf_function_size(bpf.module, name)
    if not start or not size:
        raise ProbeError(f"no compiled program {name.decode()}")
    insns = ctypes.string_at(start, size)
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 20)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQ", attr, 0, 26, len(insns) // 8, ctypes.addressof(buf),
                     ctypes.addressof(lic), 1, len(log), ctypes.addressof(log))
    struct.pack_into("16s", attr, 48, name[:15])
    struct.pack_into("<I", attr, 68, 23)          # expected_attach_type: BPF_TRACE_RAW_TP
    struct.pack_into("<I", attr, 108, btf_id)     # attach_btf_id
    fd = _bpf(5, attr)                            # BPF_PROG_LOAD
    if fd < 0:
        lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
        raise ProbeError(f"{name.decode()} (BTF tracepoint) refused: {os.strerror(-fd)}"
                         + (f": {lines[-1]}" if lines else ""))
    link_attr = ctypes.create_string_buffer(16)
    struct.pack_into("<QI", link_attr, 0, 0, fd)
    link = _bpf(17, link_attr)                    # BPF_RAW_TRACEPOINT_OPEN: its own event
    if link < 0:
        os.close(fd)
        raise ProbeError(f"{name.decode()} (BTF tracepoint) not attached: {os.strerror(-link)}")
    return [link, fd]


def has_task_btf(release: str | None = None) -> bool:
    """Whether the probes can read the current task through its BTF pointer
    (bpf_get_current_task_btf and direct loads, 5.11+) instead of probe reads."""
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (5, 11)


def tracepoint_fields(tracefs: str, category: str, event: str) -> set[str]:
    """Field names of a tracepoint, from its format file (empty when unreadable).

    A line reads `field:unsigned int prev_state;	offset:...`: the name is the last word
    before the `;`, without an array suffix."""
    path = os.path.join(tracefs, "events", category, event, "format")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return set()
    names = set()
    for m in re.finditer(r"field:([^;]*);", text):
        words = m.group(1).split()
        if words:
            names.add(words[-1].split("[", 1)[0].lstrip("*"))
    return names


def _rss_counters(btf: BTF) -> tuple[int, int]:
    """(offset of the first RSS counter in mm_struct, element type id of the counters).

    6.2 and later: `struct percpu_counter rss_stat[NR_MM_COUNTERS]`. Before that:
    `struct mm_rss_stat rss_stat` wrapping `atomic_long_t count[NR_MM_COUNTERS]`."""
    rss = btf.member("mm_struct", "rss_stat")
    if btf.is_array(rss.type_id):
        elem, count = btf.array_info(rss.type_id)
        base = rss.offset
    else:
        inner = btf.member_of(rss.type_id, "count")
        elem, count = btf.array_info(inner.type_id)
        base = rss.offset + inner.offset
    if count < 4:
        raise ProbeError(f"mm_struct.rss_stat has {count} counters, expected 4")
    return base, elem


def kernel_offsets(btf: BTF) -> dict[str, int]:
    """The struct offsets the BPF code reads, from the running kernel's BTF."""
    base, elem = _rss_counters(btf)
    try:
        # 6.2 and later: an array of percpu_counter; before: atomic_long_t count[]
        count_off = btf.offset("percpu_counter", "count") if btf.sizeof(elem) > 8 else 0
    except BeanwatchError:
        count_off = 0
    extra = {}
    if btf.has_member("mm_struct", "owner"):
        # CONFIG_MEMCG: the task an mm belongs to, for resident changes made from outside it
        extra["OFF_MM_OWNER"] = btf.offset("mm_struct", "owner")
    if btf.has_member("mm_struct", "mm_users"):
        # the per-CPU slot of the mmap-lock program (LOCK_SLOT): whether another process shares an mm
        extra["OFF_MM_USERS"] = btf.offset("mm_struct", "mm_users")
    return extra | {
        "OFF_TASK_MM": btf.offset("task_struct", "mm"),
        "OFF_TASK_TGID": btf.offset("task_struct", "tgid"),
        "OFF_TASK_PID": btf.offset("task_struct", "pid"),
        "OFF_TASK_GROUP_LEADER": btf.offset("task_struct", "group_leader"),
        "OFF_TASK_COMM": btf.offset("task_struct", "comm"),
        "OFF_TASK_CGROUPS": btf.offset("task_struct", "cgroups"),
        "OFF_CSS_SET_DFL_CGRP": btf.offset("css_set", "dfl_cgrp"),
        "OFF_CGROUP_KN": btf.offset("cgroup", "kn"),
        "OFF_KERNFS_NODE_ID": btf.offset("kernfs_node", "id"),
        "OFF_MM_TOTAL_VM": btf.offset("mm_struct", "total_vm"),
        "OFF_MM_RSS_STAT": base,
        # signal->live reaches 0 when the last thread of a process exits (before 6.16 the
        # exit tracepoint does not say so itself)
        "OFF_TASK_SIGNAL": btf.offset("task_struct", "signal"),
        "OFF_SIGNAL_LIVE": btf.offset("signal_struct", "live"),
        "SIZE_RSS_COUNTER": btf.sizeof(elem),
        "OFF_RSS_COUNT": count_off,
    }


# Kernel map sizes (entries; the hash maps are preallocated, ~100 bytes an entry).
PROCS_FLOOR, PROCS_CAP = 32768, 1 << 19
LEAVES_FLOOR, LEAVES_PER_CGROUP, LEAVES_CAP = 16384, 8, 1 << 20


def map_sizes(pid_max: int | None, n_cgroups: int, procs: int | None = None,
              leaves: int | None = None) -> tuple[int, int]:
    """(procs entries, per-cgroup entries) for this host, unless given: one entry per
    possible PID up to a cap, and a generous multiple of the cgroups there are now (the
    entries of removed cgroups are freed at rmdir)."""
    if procs is None:
        procs = min(max(pid_max or PROCS_FLOOR, PROCS_FLOOR), PROCS_CAP)
    if leaves is None:
        leaves = min(max(LEAVES_PER_CGROUP * n_cgroups, LEAVES_FLOOR), LEAVES_CAP)
    return procs, leaves


def has_task_pt_regs(machine: str | None = None, release: str | None = None) -> bool:
    """Whether the probes can read the syscall in progress (trace's kind): the
    bpf_task_pt_regs helper (5.15) and x86-64's orig_ax."""
    machine = machine or os.uname().machine
    release = release or os.uname().release
    m = re.match(r"(\d+)\.(\d+)", release)
    return machine == "x86_64" and bool(m) and (int(m.group(1)), int(m.group(2))) >= (5, 15)


@dataclass(frozen=True)
class ProbeOptions:
    ring_pages: int = 64          # ring buffer size in pages (a power of two)
    vm_hook: str = "auto"         # how address-space changes are seen: see VM_HOOKS
    max_procs: int = 131072
    max_leaves: int = 16384
    vm_limits: bool = False       # --vm-limit: compile in and attach the refusal (refuse.h)
    exact_vm: bool = False        # count every shrink at once (VM_EXACT; always with vm_limits)


class Probes:
    """The loaded programs. start() attaches the always-on ones; the page-fault program is
    attached only while some cgroup is in slow mode (enable_faults)."""

    def __init__(self, on_event, options: ProbeOptions = ProbeOptions(), tracefs: str | None = None):
        self._on_event = on_event
        self.options = options
        self.bpf = None
        self.tracefs: str | None = tracefs   # found (or mounted) at check() when None
        self.attached_syscalls: list[str] = []
        self.vm_hook: str | None = None
        self.faults_on = False
        self.callback_errors = 0
        self.exit_has_group_dead = False
        self._atomic_fetch: bool | None = None
        self.rss_stat_raw = False    # slow mode follows kmem:rss_stat (else the fault tracepoints)
        self._btf: BTF | None = None
        self._btf_read = False
        self.task_btf = has_task_btf()   # hot programs read the current task through BTF
        # the mmap-lock program remembers per process what it last recorded (task storage,
        # accounting.c SEEN_CACHE): decided at start()
        self.seen_cache = False
        # ... and before it, per CPU, the mm it last saw (LOCK_SLOT), as a BTF tracepoint
        self.lock_slot = False
        self._lock_tp_id: int | None = None   # its btf_trace_ typedef, found at start()
        self._lock_fds: list[int] = []
        self.dropped: dict[str, str] = {}   # feature -> why its load was refused
        self._apply_fd: int | None = None
        self.oom_form: str | None = None   # "task", "pid", or None: no OOM kills seen

    def cflags(self, offsets: dict[str, int]) -> list[str]:
        o = self.options
        defs = dict(offsets, MAX_PROCS=o.max_procs, MAX_LEAVES=o.max_leaves,
                    RINGBUF_PAGES=o.ring_pages)
        if self.vm_hook == "mmap-lock":
            defs["VM_HOOK_MMAP_LOCK"] = 1
        if self.exit_has_group_dead:
            defs["EXIT_HAS_GROUP_DEAD"] = 1
        if self.vm_hook == "syscalls" and self.has_rss_stat:
            defs["HAS_RSS_STAT_TP"] = 1
        if self.rss_stat_raw:
            defs["FOLLOW_RSS_STAT"] = 1
        if has_task_pt_regs():
            defs["HAS_TASK_PT_REGS"] = 1
        if self.tracefs and {"root", "id"} <= tracepoint_fields(self.tracefs, *RMDIR_TRACEPOINT):
            defs["HAS_CGROUP_RMDIR"] = 1
        if not self.atomic_fetch:
            defs["NO_ATOMIC_FETCH"] = 1
        if self.task_btf:
            defs["TASK_BTF"] = 1
            if self.seen_cache:
                defs["SEEN_CACHE"] = 1
                if self.lock_slot:
                    defs["LOCK_SLOT"] = 1
        if self.oom_form is not None:
            defs["HAS_OOM_TP"] = 1
            if self.oom_form == "task":
                defs["OOM_VICTIM_TASK"] = 1
        if o.exact_vm or o.vm_limits:
            # no lazy shrinking (accounting.c, vm_shrink_waits): `trace` tells each change's
            # exact size, --vm-limit refuses against the exact total
            defs["VM_EXACT"] = 1
        if o.vm_limits:
            defs.update(refuse_defs(self.btf()))
        probes_dir = os.path.dirname(probe_source())
        return [f"-D{k}={v}" for k, v in defs.items()] + [f"-I{probes_dir}", "-Wno-macro-redefined"]

    def btf(self) -> BTF | None:
        """The running kernel's BTF, read once (None when unreadable: start() then fails)."""
        if not self._btf_read:
            self._btf_read = True
            try:
                self._btf = BTF.from_file()
            except BeanwatchError:
                self._btf = None
        return self._btf

    def mm_comes_first(self, event: str) -> bool:
        """Whether a raw tracepoint passes the mm as its first argument, by BTF (its
        btf_trace_EVENT typedef gives the exact TP_PROTO). Without the typedef, as all
        kernels with these events do."""
        btf = self.btf()
        args = btf.tracepoint_args(event) if btf else None
        return args is None or (bool(args) and args[0] == MM_FIRST)

    def check(self) -> None:
        """Refuses to run blind: every tracepoint the accounting needs must exist."""
        self.tracefs = self.tracefs or ensure_tracefs()
        missing = [f"{c}:{e}" for c, e in REQUIRED_TRACEPOINTS
                   if not tracepoint_exists(self.tracefs, c, e)]
        has_lock_tp = (tracepoint_exists(self.tracefs, *MMAP_LOCK_TRACEPOINT)
                       and self.mm_comes_first(MMAP_LOCK_TRACEPOINT[1]))
        hook = self.options.vm_hook
        if hook not in VM_HOOKS:
            raise ProbeError(f"unknown vm hook {hook!r}")
        if hook == "auto":
            hook = "mmap-lock" if has_lock_tp else "syscalls"
        if hook == "mmap-lock" and not has_lock_tp:
            missing.append(":".join(MMAP_LOCK_TRACEPOINT))
        if hook == "syscalls":
            missing += [f"syscalls:sys_exit_{s}" for s in REQUIRED_VM_SYSCALLS
                        if not tracepoint_exists(self.tracefs, "syscalls", f"sys_exit_{s}")]
        self.vm_hook = hook
        self.exit_has_group_dead = "group_dead" in tracepoint_fields(
            self.tracefs, "sched", "sched_process_exit")
        self.rss_stat_raw = self.has_rss_stat and self.mm_comes_first(RSS_STAT_TRACEPOINT[1])
        self.oom_form = self.find_oom_form()
        if missing:
            raise ProbeError("missing tracepoint(s) " + ", ".join(missing)
                             + " (syscall tracepoints need CONFIG_FTRACE_SYSCALLS)")

    def find_oom_form(self) -> str | None:
        """What oom:mark_victim passes: "task" (the victim task first), "pid" (its pid
        alone, before the comm and counters were added), None (no such tracepoint: kernel
        OOM kills are not reported). From its btf_trace_ typedef, else from its format."""
        if not self.tracefs or not tracepoint_exists(self.tracefs, *OOM_TRACEPOINT):
            return None
        btf = self.btf()
        args = btf.tracepoint_args(OOM_TRACEPOINT[1]) if btf else None
        if args:
            return "task" if args[0] == TASK_FIRST else "pid" if args[0] == "int" else None
        fields = tracepoint_fields(self.tracefs, *OOM_TRACEPOINT)
        return "task" if "comm" in fields else "pid" if "pid" in fields else None

    @property
    def slow_source(self) -> str:
        """How slow mode follows resident growth on this kernel."""
        if self.rss_stat_raw:
            return "rss-stat"
        return "page-faults" if self.has_fault_tracepoint else "periodic"

    @property
    def atomic_fetch(self) -> bool:
        """Whether BPF has atomic fetch-and-add and exchange here (5.12+), probed once."""
        if self._atomic_fetch is None:
            self._atomic_fetch = has_atomic_fetch()
        return self._atomic_fetch

    def not_covered(self) -> list[str]:
        """What this kernel's hooks do not see, said plainly (check and start records)."""
        gaps = []
        if not self.atomic_fetch:
            gaps.append("no BPF atomic exchange (before 5.12): two threads of one process "
                        "changing its address space at once may leave its count off by one "
                        "change until its next change")
        if self.vm_hook == "syscalls" and self.has_rss_stat:
            gaps.append("stack growth and 32-bit (compat) syscalls: no mmap_lock tracepoints, "
                        "so counted at the next resident-count update (kmem:rss_stat, at "
                        "least every 64 faults of a thread), not at once")
        elif self.vm_hook == "syscalls":
            gaps.append("stack growth: counted at the process's next address-space syscall, "
                        "fork or exec, not when the stack grows (no mmap_lock tracepoints)")
            gaps.append("32-bit (compat) syscalls: syscall tracepoints skip them; a 32-bit "
                        "process is counted at exec and fork only")
        if self.tracefs and self.oom_form is None:
            gaps.append("kernel OOM kills: no usable oom:mark_victim tracepoint, so they are "
                        "not reported")
        if not self.follows_rss:
            gaps.append("resident growth (neither kmem:rss_stat nor exceptions:page_fault_user): "
                        "slow mode measures every --interval instead of following it")
        elif not self.rss_stat_raw:
            gaps.append("resident growth made from outside a process (process_vm_writev, "
                        "ptrace) or by the kernel outside its faults: no kmem:rss_stat, so seen "
                        "at its next fault or mmap-lock release, or by the exact check every "
                        "--interval")
        elif "OFF_MM_OWNER" not in self._offsets():
            gaps.append("resident growth made from outside a process (process_vm_writev, "
                        "ptrace, khugepaged): mm->owner is missing (no CONFIG_MEMCG), so seen "
                        "by the exact check every --interval")
        return gaps

    def _offsets(self) -> dict[str, int]:
        btf = self.btf()
        try:
            return kernel_offsets(btf) if btf else {}
        except BeanwatchError:
            return {}

    @property
    def follows_rss(self) -> bool:
        """Whether slow mode follows resident growth as it happens (else: every interval)."""
        return self.rss_stat_raw or self.has_fault_tracepoint

    @property
    def has_rss_stat(self) -> bool:
        return bool(self.tracefs) and tracepoint_exists(self.tracefs, *RSS_STAT_TRACEPOINT)

    @property
    def has_fault_tracepoint(self) -> bool:
        return bool(self.tracefs) and tracepoint_exists(self.tracefs, *FAULT_TRACEPOINT)

    def start(self) -> None:
        self.check()
        btf = self.btf() or BTF.from_file()   # raises the reason it cannot be read
        offsets = kernel_offsets(btf)
        try:
            from bcc import BPF  # imported late: bcc picks its tracefs path at import
        except ImportError:
            raise ProbeError("bcc is not importable: install python3-bpfcc and run from a "
                             "venv made with --system-site-packages") from None
        # only the mmap-lock program uses the record, through the BTF task, and only where
        # slow mode follows kmem:rss_stat (else that program follows resident growth
        # itself); off where it does not load, or with BEANWATCH_SEEN_CACHE=0
        self.seen_cache = (self.task_btf and self.vm_hook == "mmap-lock" and self.rss_stat_raw
                           and os.environ.get("BEANWATCH_SEEN_CACHE") != "0")
        # the slot reads the cgroup through mm->owner and loads as a BTF tracepoint
        self._lock_tp_id = btf.tracepoint_id(MMAP_LOCK_TRACEPOINT[1])
        self.lock_slot = (self.seen_cache and os.environ.get("BEANWATCH_LOCK_SLOT") != "0"
                          and {"OFF_MM_OWNER", "OFF_MM_USERS"} <= offsets.keys()
                          and self._lock_tp_id is not None)
        try:
            self.bpf = self.load_dropping_features(lambda: self._load(BPF, offsets))
        except Exception as e:  # bcc raises bare Exception on compile/load failure
            raise ProbeError(f"BPF programs failed to load: {e}") from None
        try:
            if self.options.vm_limits:
                self._attach_commit_check()
            for name in REQUIRED_VM_SYSCALLS + OPTIONAL_VM_SYSCALLS:
                if self.vm_hook != "syscalls":
                    break
                if tracepoint_exists(self.tracefs, "syscalls", f"sys_exit_{name}"):
                    self.bpf.attach_tracepoint(tp=f"syscalls:sys_exit_{name}".encode(),
                                               fn_name=b"on_vm_syscall")
                    self.attached_syscalls.append(name)
            self.bpf["events"].open_ring_buffer(self._callback)
            self._apply_fd = self.bpf.load_func(b"apply_bounds", BPF.RAW_TRACEPOINT).fd
        except Exception as e:
            self.close()
            raise ProbeError(f"attaching BPF programs failed: {e}") from None

    def load_dropping_features(self, load):
        """load(), again after each refusal with one feature fewer, newest first: the
        per-CPU slot as a BTF tracepoint (lock_slot), task storage in a raw tracepoint
        program (seen_cache), then the direct loads through BTF pointers (task_btf; probe
        reads work everywhere, slower). What was dropped, and the refusal's last line, go in
        self.dropped (shown by `check`). The last refusal is raised."""
        while True:
            try:
                return load()
            except Exception as e:
                if self.lock_slot:
                    self.lock_slot = False
                    feature = "per-CPU slot"
                elif self.seen_cache:
                    self.seen_cache = False
                    feature = "task storage"
                elif self.task_btf:
                    self.task_btf = False
                    feature = "BTF direct loads"
                else:
                    raise
                # bcc's message names the program and the errno's text (its last line)
                lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                self.dropped[feature] = lines[-1][:200] if lines else type(e).__name__

    def _load(self, BPF, offsets):
        """Compiles, loads and attaches the always-on programs; on a refusal, nothing stays
        loaded or attached. on_rss_change is verified here too (attached while some cgroup
        is slow), so a refusal of its loads shows now, not at the first switch."""
        class Unattached(BPF):
            def _trace_autoload(self):
                pass
        if self.options.vm_limits:
            bpf = Unattached(text=probe_text(vm_limits=True).encode(), cflags=self.cflags(offsets))
        else:
            bpf = Unattached(src_file=probe_source().encode(), cflags=self.cflags(offsets))
        try:
            BPF._trace_autoload(bpf)
            if self.rss_stat_raw:
                bpf.load_func(b"on_rss_change", BPF.RAW_TRACEPOINT)
            if self.lock_slot:
                self._lock_fds = attach_btf_tracepoint(bpf, LOCK_SLOT_PROG, self._lock_tp_id)
        except Exception:
            bpf.cleanup()
            raise
        return bpf

    def _callback(self, _ctx, data, size) -> int:
        # bcc prints and swallows exceptions raised here: catch and count them instead.
        try:
            self._on_event(_decode(_string_at(data, size)))
        except Exception:
            self.callback_errors += 1
        return 0

    def enable_faults(self, on: bool) -> None:
        """Follows resident growth (while some cgroup is slow) or stops following it."""
        if on == self.faults_on or self.bpf is None or not self.follows_rss:
            return
        if self.rss_stat_raw:
            # attached by fd, not by bcc's table of raw tracepoints: that allows one program
            # per tracepoint, and the syscall hook keeps its own on rss_stat
            if on:
                from bcc import BPF
                from bcc.libbcc import lib
                fn = self.bpf.load_func(b"on_rss_change", BPF.RAW_TRACEPOINT)
                fd = lib.bpf_attach_raw_tracepoint(fn.fd, RSS_STAT_TRACEPOINT[1].encode())
                if fd < 0:
                    raise ProbeError(f"attaching to kmem:rss_stat failed: {os.strerror(-fd)}")
                self._rss_fd = fd
            else:
                self._close_rss()
            self.faults_on = on
            return
        tps = [FAULT_TRACEPOINT]
        if tracepoint_exists(self.tracefs, *KERNEL_FAULT_TRACEPOINT):
            tps.append(KERNEL_FAULT_TRACEPOINT)
        for tp in tps:
            name = ":".join(tp).encode()
            if on:
                self.bpf.attach_tracepoint(tp=name, fn_name=b"on_page_fault")
            else:
                self.bpf.detach_tracepoint(tp=name)
        self.faults_on = on

    def poll(self, timeout_ms: int) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)

    def counters(self) -> dict[int, tuple[int, int, int]]:
        """cgroup id -> (vm pages, rss growth pages) as counted by the kernel."""
        return {k.value: (v.vm_pages, v.rss_growth)
                for k, v in self.bpf["leaves"].items()}

    def counters_of(self, cgids) -> dict[int, tuple[int, int]]:
        """counters() for these cgroups only: one lookup each, not a walk of the whole map
        (an exact check reads its estimate again this way, before it may act)."""
        table, out = self.bpf["leaves"], {}
        for cid in cgids:
            try:
                v = table[table.Key(cid)]
            except KeyError:
                continue
            out[cid] = (v.vm_pages, v.rss_growth)
        return out

    def set_bounds(self, cgid: int, b: LeafBounds) -> bool | int:
        """Programs a cgroup's bounds and re-arms its wake-ups: True, False if the map is
        full, wire.BOUNDS_GONE for a cgroup removed already (nothing written).

        The bounds share their map entry with the counters BPF adds to: a map update would
        overwrite the counts, so the apply_bounds program writes them field by field."""
        args = struct.pack("<QqqqQ", cgid, b.vm_high, b.vm_low, b.rss_high,
                           int(b.slow) | ((b.gen & 0xFFFFFFFF) << 32))
        rc = run_raw_tp_once(self._apply_fd, args)
        return wire.BOUNDS_GONE if rc == wire.BOUNDS_GONE else rc == wire.BOUNDS_OK

    def seed_process(self, tgid: int, vm_pages: int, cgid: int) -> bool:
        """Adds a process found in /proc unless the kernel side already counts it."""
        from bcc.libbcc import lib
        table = self.bpf["procs"]
        key, leaf = table.Key(tgid), table.Leaf()
        leaf.vm_pages, leaf.cgid = vm_pages, cgid
        res = lib.bpf_update_elem(table.map_fd, ctypes.byref(key), ctypes.byref(leaf), BPF_NOEXIST)
        return res == 0

    def processes(self) -> dict[int, tuple[int, int]]:
        return {k.value: (v.vm_pages, v.cgid) for k, v in self.bpf["procs"].items()}

    def forget_process(self, tgid: int, vm_pages: int, cgid: int) -> bool:
        """Removes a seeded entry whose process turned out to be gone, if unchanged since."""
        table = self.bpf["procs"]
        key = table.Key(tgid)
        try:
            v = table[key]
        except KeyError:
            return False
        if v.vm_pages != vm_pages or v.cgid != cgid:
            return False
        try:
            del table[key]
        except KeyError:
            return False
        return True

    def set_trace_min(self, pages: int) -> None:
        """`trace`: one change of total_vm of at least this many pages is sent as an
        EV_GROW* event (0: none, as for watch)."""
        table = self.bpf["trace_min"]
        table[table.Key(0)] = table.Leaf(max(0, pages))

    def stats(self) -> list[int]:
        """Per-CPU stats summed: indexes are wire.STAT_*."""
        table = self.bpf["stats"]
        return [sum(table[table.Key(i)]) for i in range(wire.STAT_MAX)]

    def _close_rss(self) -> None:
        fd, self._rss_fd = getattr(self, "_rss_fd", None), None
        if fd is not None:
            os.close(fd)

    # -- --vm-limit (refuse.h): only with ProbeOptions.vm_limits ------------------------
    # The LSM programs (lsm__mmap_file, lsm__mmap_addr) are attached by bcc as it loads the
    # source: if they cannot be, start() fails, so a vm limit is never silently unenforced.
    commit_check_problem: str | None = None   # why brk/mremap in place are not refused

    def _attach_commit_check(self) -> None:
        """fmod_ret on security_vm_enough_memory_mm: brk and mremap growing in place. Where
        the kernel refuses it, those two are counted but not refused (not_covered says so)."""
        from bcc import BPF
        from bcc.libbcc import lib
        try:
            fn = self.bpf.load_func(COMMIT_CHECK_PROG, BPF.TRACING)
            fd = lib.bpf_attach_kfunc(fn.fd)
        except Exception as e:  # bcc raises bare Exception when the verifier refuses
            self.commit_check_problem = str(e).splitlines()[0] if str(e) else "refused"
            return
        if fd < 0:
            self.commit_check_problem = f"attach failed: {os.strerror(-fd)}"
            return
        self._commit_fd = fd

    def refusal_gaps(self) -> list[str]:
        """What --vm-limit does not refuse on this kernel (counted all the same)."""
        gaps = list(REFUSAL_NEVER)
        if self.commit_check_problem is not None:
            gaps.insert(0, "brk(2) and mremap(2) growing in place: fmod_ret on "
                           f"security_vm_enough_memory_mm is unavailable ({self.commit_check_problem})")
        return gaps

    def set_vm_limit(self, lid: int, limit_pages: int, barrier_pages: int, base_pages: int) -> None:
        """A vm-limited cgroup's limit, barrier and base; its counters are made once, zero."""
        from bcc.libbcc import lib
        cnt = self.bpf["vm_limit_cnt"]
        zero = cnt.Leaf()
        lib.bpf_update_elem(cnt.map_fd, ctypes.byref(cnt.Key(lid)), ctypes.byref(zero), BPF_NOEXIST)
        ctl = self.bpf["vm_limit_ctl"]
        leaf = ctl.Leaf()
        leaf.limit, leaf.barrier, leaf.base = limit_pages, barrier_pages, base_pages
        ctl[ctl.Key(lid)] = leaf

    def drop_vm_limit(self, lid: int) -> None:
        for name in ("vm_limit_ctl", "vm_limit_cnt"):
            table = self.bpf[name]
            try:
                del table[table.Key(lid)]
            except KeyError:
                pass

    def map_vm_leaf(self, leaf: int, lid: int | None) -> None:
        """Counts a cgroup's changes into a vm-limited cgroup's total (None: no longer)."""
        table = self.bpf["vm_leaf_limit"]
        key = table.Key(leaf)
        if lid is None:
            try:
                del table[key]
            except KeyError:
                pass
        else:
            table[key] = table.Leaf(lid)

    def vm_delta(self, lid: int) -> int:
        table = self.bpf["vm_limit_cnt"]
        try:
            return table[table.Key(lid)].delta
        except KeyError:
            return 0

    def leaf_vm(self, leaf: int) -> int:
        """One cgroup's counted pages (what counters() gives for it), by one lookup."""
        table = self.bpf["leaves"]
        try:
            return table[table.Key(leaf)].vm_pages
        except KeyError:
            return 0

    def vm_limit_counts(self) -> dict[int, tuple[int, int, int, int]]:
        """vm-limited cgroup id -> (delta, refused, refused pages, over barrier)."""
        return {k.value: (v.delta, v.refused, v.refused_pages, v.over_barrier)
                for k, v in self.bpf["vm_limit_cnt"].items()}

    def close(self) -> None:
        fd, self._commit_fd = getattr(self, "_commit_fd", None), None
        if fd is not None:
            os.close(fd)
        fds, self._lock_fds = self._lock_fds, []
        for fd in fds:
            os.close(fd)
        self._close_rss()
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None
                self.faults_on = False


def refuse_defs(btf: BTF | None) -> dict[str, int]:
    """The -D flags refuse.h needs: struct offsets from BTF, the map size."""
    if btf is None:
        raise ProbeError("--vm-limit needs the kernel's BTF")
    return {"VM_LIMITS": 1, "MAX_VM_LIMITS": MAX_VM_LIMITS,
            "OFF_FILE_INODE": btf.offset("file", "f_inode"),
            "OFF_INODE_SIZE": btf.offset("inode", "i_size")}


def active_lsms(path: str = LSM_LIST) -> list[str] | None:
    """The kernel's active LSMs, in order, from securityfs; where securityfs is not mounted,
    read from a mount of it in a private mount namespace (nothing is left mounted). None
    when it cannot be read."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        import subprocess
        try:
            run = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                  f"mount -t securityfs securityfs {SECURITYFS} && cat {path}"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        if run.returncode != 0:
            return None
        text = run.stdout
    return [x for x in text.strip().split(",") if x]


def _try_lsm_attach(btf_id: int) -> str | None:
    """Loads a no-op BPF LSM program (r0 = 0: allow) on the hook with this BTF id and
    attaches it for a moment: None where that works, else why not. No compiler needed."""
    import errno as errno_mod
    import platform
    if platform.machine() not in _BPF_SYSCALL:
        return f"no bpf(2) number known for {platform.machine()}"
    insns = struct.pack("<BBhi", 0xB7, 0x00, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    buf = ctypes.create_string_buffer(insns)
    lic = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQ", attr, 0, 29, 2, ctypes.addressof(buf), ctypes.addressof(lic))
    struct.pack_into("<I", attr, 68, 27)          # expected_attach_type: BPF_LSM_MAC
    struct.pack_into("<I", attr, 108, btf_id)     # attach_btf_id
    fd = _bpf(5, attr)                            # BPF_PROG_LOAD
    if fd < 0:
        return f"the kernel refused a BPF LSM program ({errno_mod.errorcode.get(-fd, -fd)})"
    try:
        link_attr = ctypes.create_string_buffer(16)
        struct.pack_into("<QI", link_attr, 0, 0, fd)
        link = _bpf(17, link_attr)                # BPF_RAW_TRACEPOINT_OPEN
        if link < 0:
            e = -link
            why = "no BPF trampolines" if e in (errno_mod.EOPNOTSUPP, 524) else \
                errno_mod.errorcode.get(e, str(e))
            return f"a BPF LSM program cannot be attached here ({why})"
        os.close(link)
    finally:
        os.close(fd)
    return None


def refusal_problem(btf: BTF | None = None, lsms: list[str] | None = None) -> str | None:
    """Why --vm-limit cannot be enforced on this host (None: it can). Probed, not guessed
    from versions: bpf among the active LSMs, the hooks in BTF, an LSM program attached."""
    import platform
    if platform.machine() != "x86_64":
        return f"refusal reads x86-64 system-call registers; this is {platform.machine()}"
    if lsms is None:
        lsms = active_lsms()
    if lsms is None:
        return f"cannot read the active LSMs ({LSM_LIST}: securityfs not mounted?)"
    if "bpf" not in lsms:
        return (f"bpf is not an active LSM ({','.join(lsms) or 'none'}): boot with "
                f"lsm={','.join(lsms + ['bpf'])}")
    try:
        btf = btf or BTF.from_file()
    except BeanwatchError as e:
        return str(e)
    ids = {h: btf.func_id(f"bpf_lsm_{h}") for h in REFUSAL_LSM_HOOKS}
    missing = [h for h, i in ids.items() if i is None]
    if missing:
        return "the kernel has no BPF LSM hook for " + ", ".join(missing)
    return _try_lsm_attach(ids["mmap_file"])
