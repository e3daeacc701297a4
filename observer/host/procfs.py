"""Reads processes from /proc (status, stat, statm, cgroup); tests point its root at a fake tree."""

from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

from ..core.errors import BeanwatchError, Unreadable
from ..core.sizes import PAGE_SIZE, to_bytes  # noqa: F401  (PAGE_SIZE: for tests)



@dataclass(frozen=True)
class ProcStatus:
    """From /proc/PID/status. Sizes in bytes; 0 where the kernel prints no Vm* line."""

    pid: int
    name: str
    state: str
    tgid: int
    ppid: int
    threads: int
    vm_size: int
    vm_rss: int


@dataclass(frozen=True)
class Rollup:
    """From /proc/PID/smaps_rollup (Linux 4.14), in bytes: the process's resident set, its
    proportional share of it (each page divided by the number of processes mapping it), and
    the same two for swap."""

    rss: int
    pss: int
    swap: int
    swap_pss: int


@dataclass(frozen=True)
class ProcStat:
    """From /proc/PID/stat. start_time is in clock ticks since boot (field 22)."""

    pid: int
    comm: str
    state: str
    ppid: int
    start_time: int


def _none_if_gone(method):
    """A process can exit between any two reads: its files then fail with ENOENT, or with
    ESRCH when the directory was opened before the exit. Either means "gone" -> None."""

    @functools.wraps(method)
    def wrapper(self, pid, *args, **kwargs):
        try:
            return method(self, pid, *args, **kwargs)
        except (FileNotFoundError, ProcessLookupError):
            return None
        except PermissionError as e:
            where = e.filename or f"{self.root}/{pid}"
            raise Unreadable(f"cannot read {where}: {e.strerror}") from None
        except OSError as e:
            where = e.filename or f"{self.root}/{pid}"
            raise BeanwatchError(f"cannot read {where}: {e.strerror}") from None

    return wrapper


class ProcFS:
    """The processes visible under one procfs mount."""

    def __init__(self, root: str = "/proc"):
        self.root = root

    def _read(self, pid: int, name: str) -> bytes:
        with open(os.path.join(self.root, str(pid), name), "rb") as f:
            return f.read()

    def pids(self) -> list[int]:
        # isascii: str.isdigit() also accepts digits such as "²" that int() would reject.
        return sorted(int(n) for n in os.listdir(self.root) if n.isascii() and n.isdigit())

    @_none_if_gone
    def status(self, pid: int) -> ProcStatus | None:
        fields = {}
        for line in self._read(pid, "status").decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key, value)
        # The kernel escapes "\n" and "\\" in Name, so a hostile name cannot forge a line;
        # it may still hold tabs and spaces, so only the one tab after the colon is dropped.
        name = fields.get("Name", "")
        name = name[1:] if name.startswith("\t") else name

        def number(key, default=None):
            if key not in fields and default is not None:
                return default
            return int(fields[key].split()[0])

        try:
            return ProcStatus(
                pid=number("Pid", pid),
                name=name,
                state=fields["State"].strip()[:1],
                tgid=number("Tgid"),
                ppid=number("PPid"),
                threads=number("Threads"),
                # Kernel threads and zombies have no mm: no Vm* lines at all.
                vm_size=number("VmSize", 0) * 1024,
                vm_rss=number("VmRSS", 0) * 1024,
            )
        except (KeyError, ValueError, IndexError):
            raise BeanwatchError(f"malformed {self.root}/{pid}/status") from None

    @_none_if_gone
    def statm(self, pid: int) -> tuple[int, int] | None:
        try:
            size, resident = self._read(pid, "statm").split()[:2]
            return to_bytes(int(size)), to_bytes(int(resident))
        except ValueError:
            raise BeanwatchError(f"malformed {self.root}/{pid}/statm") from None

    @_none_if_gone
    def smaps_rollup(self, pid: int) -> Rollup | None:
        """The precise tier: PSS and SwapPss. The kernel walks the page tables of every
        mapping to make it (11 to 16 ms per GiB resident here: bench/tiers.py). A kernel
        thread or a zombie prints no lines: all zero."""
        fields = {}
        for line in self._read(pid, "smaps_rollup").splitlines()[1:]:
            key, _, value = line.partition(b":")
            parts = value.split()
            if parts:
                try:
                    fields[key] = int(parts[0]) * 1024
                except ValueError:
                    raise BeanwatchError(f"malformed {self.root}/{pid}/smaps_rollup") from None
        return Rollup(fields.get(b"Rss", 0), fields.get(b"Pss", 0), fields.get(b"Swap", 0),
                      fields.get(b"SwapPss", 0))

    @_none_if_gone
    def vm_swap(self, pid: int) -> int | None:
        """VmSwap from /proc/PID/status, bytes (0 where the kernel prints none)."""
        for line in self._read(pid, "status").splitlines():
            if line.startswith(b"VmSwap:"):
                try:
                    return int(line.split()[1]) * 1024
                except (ValueError, IndexError):
                    raise BeanwatchError(f"malformed {self.root}/{pid}/status") from None
        return 0

    @_none_if_gone
    def cgroup2_path(self, pid: int) -> str | None:
        # cgroup2's line ("0::/path") is printed last, after any v1 hierarchies' lines, and its
        # path is printed raw: a cgroup name may contain newlines. So the path is everything
        # from the first "0::" line to the end. A dead cgroup shows as "/path (deleted)".
        # The file is read whole, however long (past 4096 bytes with deep cgroups). Some
        # kernels refuse a path longer than PATH_MAX with ENAMETOOLONG: unknown, not fatal.
        try:
            raw = self._read(pid, "cgroup")
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                return None
            raise
        text = "\n" + raw.decode(errors="surrogateescape")
        start = text.find("\n0::")
        if start < 0:
            return None
        path = text[start + 4:]
        return path[:-1] if path.endswith("\n") else path

    @_none_if_gone
    def stat(self, pid: int) -> ProcStat | None:
        # comm is raw bytes and may contain ")", spaces, newlines or broken UTF-8; every
        # field after it is a number or the state letter, so comm ends at the LAST ")".
        data = self._read(pid, "stat")
        open_, close = data.find(b"("), data.rfind(b")")
        rest = data[close + 1:].split()
        try:
            if open_ < 0 or close < open_:
                raise ValueError
            return ProcStat(
                pid=int(data[:open_]),
                comm=data[open_ + 1:close].decode(errors="replace"),
                state=rest[0].decode(errors="replace"),
                ppid=int(rest[1]),
                start_time=int(rest[19]),  # field 22; rest[0] is field 3
            )
        except (ValueError, IndexError):
            raise BeanwatchError(f"malformed {self.root}/{pid}/stat") from None

    def is_zombie(self, pid: int) -> bool:
        """True when the whole process has exited and waits to be reaped: it holds no memory.

        An exited thread-group leader also shows state Z while its other threads run on;
        that process still holds its memory, and its Threads count is above 1.
        """
        st = self.status(pid)
        return st is not None and st.state == "Z" and st.threads <= 1


CAP_SYS_PTRACE = 19


def has_capability(bit: int, status_path: str = "/proc/self/status") -> bool:
    """Whether this process has capability bit in its effective set (CapEff)."""
    with open(status_path) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False
