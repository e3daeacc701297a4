"""Finds the cgroup mounts and reads and writes cgroup files, by canonical name ("/", "/a/b")."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from ..core.errors import BeanwatchError

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes (0x7ffffffffffff000 on 64-bit).
V1_UNLIMITED = 2**62

# A cgroup removed while we read it fails with ENOENT, or ENODEV for a file already open.
_GONE = (errno.ENOENT, errno.ENODEV)


@dataclass(frozen=True)
class Mounts:
    cgroup2: str | None
    memory_v1: str | None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_mounts(mountinfo: str = "/proc/self/mountinfo") -> Mounts:
    """The cgroup2 mount point and the cgroup v1 memory mount point, None where absent.

    A mount whose root (field 4) is not "/" shows only a subtree; one showing the whole
    hierarchy is preferred, because /proc/PID/cgroup paths start at the hierarchy's root.
    """
    try:
        with open(mountinfo, "rb") as f:
            lines = os.fsdecode(f.read()).splitlines()
    except OSError as e:
        raise BeanwatchError(f"cannot read {mountinfo}: {e.strerror}") from None
    found: dict[str, list[tuple[bool, str]]] = {"cgroup2": [], "memory": []}
    for line in lines:
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue":
        # optional fields vary in number, so split at the " - " separator.
        left, sep, right = line.partition(" - ")
        mine, theirs = left.split(" "), right.split(" ")
        if not sep or len(mine) < 5 or len(theirs) < 3:
            continue
        whole, point = mine[3] == "/", _unescape(mine[4])
        if theirs[0] == "cgroup2":
            found["cgroup2"].append((whole, point))
        elif theirs[0] == "cgroup" and "memory" in theirs[2].split(","):
            found["memory"].append((whole, point))

    def best(candidates):
        fallback = candidates[0][1] if candidates else None
        return next((point for whole, point in candidates if whole), fallback)

    return Mounts(cgroup2=best(found["cgroup2"]), memory_v1=best(found["memory"]))


def _inside(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


class CgroupFS:
    """One cgroup2 hierarchy mounted at root, plus the v1 memory hierarchy if there is one."""

    def __init__(self, root: str, memory_v1: str | None = None):
        self.root = os.path.abspath(root)
        self.memory_v1 = memory_v1
        self._real = os.path.realpath(self.root)
        try:
            self._dev = os.stat(self.root).st_dev
        except OSError as e:
            raise BeanwatchError(f"cannot use cgroup mount {root}: {e.strerror}") from None

    def resolve(self, spec: str) -> str:
        """The canonical name of a cgroup given relative to the mount or as an absolute path."""
        if not spec:
            raise BeanwatchError("empty cgroup path")
        if "\0" in spec or "\n" in spec:
            raise BeanwatchError(f"cgroup path {spec!r} contains NUL or newline")
        rel = spec
        for top in (self.root, self._real):
            if spec.startswith("/") and _inside(spec, top):
                rel = spec[len(top):]
                break
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            # Refused outright, as systemd does: a lexical check cannot judge ".." after symlinks.
            raise BeanwatchError(f"cgroup path {spec!r} contains '..'")
        path = self.path("/" + "/".join(parts))
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise BeanwatchError(f"no cgroup {spec!r} under {self.root}") from None
        except OSError as e:
            raise BeanwatchError(f"cannot stat {path}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise BeanwatchError(f"cgroup path {spec!r} is not a directory")
        real = os.path.realpath(path)
        if not _inside(real, self._real):
            raise BeanwatchError(f"cgroup path {spec!r} leads outside {self.root} (to {real})")
        if st.st_dev != self._dev:
            raise BeanwatchError(f"cgroup path {spec!r} is on another filesystem than {self.root}")
        rel = os.path.relpath(real, self._real)
        return "/" if rel == "." else "/" + rel

    def path(self, name: str) -> str:
        return self.root if name == "/" else self.root.rstrip("/") + name

    def cgroup_id(self, name: str) -> int:
        # On cgroup2 the directory's inode number is the kernel's cgroup id (kernfs node id),
        # the value bpf_get_current_cgroup_id() returns. A recreated cgroup gets a new one.
        return os.stat(self.path(name)).st_ino

    def walk(self, top: str = "/") -> dict[int, str]:
        """id -> name for top and every cgroup below it; ones removed meanwhile are skipped."""
        try:
            out = {self.cgroup_id(top): top}
        except OSError as e:
            self._gone_or_raise(e, top)
            return {}
        stack = [top]
        while stack:
            name = stack.pop()
            try:
                with os.scandir(self.path(name)) as it:
                    entries = [e for e in it if e.is_dir(follow_symlinks=False)]
            except OSError as e:
                self._gone_or_raise(e, name)
                continue
            for entry in entries:
                child = name.rstrip("/") + "/" + entry.name
                try:
                    out[entry.stat(follow_symlinks=False).st_ino] = child
                except OSError as e:
                    self._gone_or_raise(e, child)
                    continue
                stack.append(child)
        return out

    def _gone_or_raise(self, e: OSError, name: str) -> None:
        if e.errno not in _GONE:
            raise BeanwatchError(f"cannot read cgroup {name}: {e.strerror}") from None

    def _read(self, name: str, file: str) -> str | None:
        try:
            with open(os.path.join(self.path(name), file)) as f:
                return f.read()
        except OSError as e:
            self._gone_or_raise(e, name)
            return None

    def procs(self, name: str) -> list[int]:
        # cgroup.procs is unsorted and may list a PID twice (a process moved out and back,
        # or a PID recycled, during the read): keep the first of each.
        text = self._read(name, "cgroup.procs") or ""
        return list(dict.fromkeys(int(line) for line in text.split()))

    def subtree_procs(self, name: str) -> list[int]:
        pids: dict[int, None] = {}
        for child in self.walk(name).values():
            pids.update(dict.fromkeys(self.procs(child)))
        return list(pids)

    def memory_limit(self, name: str) -> int | None:
        """memory.max on cgroup2; on hybrid hosts the v1 memory hierarchy, assuming it mirrors
        the cgroup2 paths as systemd arranges. None when unlimited or unknown."""
        text = self._read(name, "memory.max")
        if text is None and self.memory_v1:
            try:
                v1 = os.path.join(self.memory_v1, name.lstrip("/"), "memory.limit_in_bytes")
                with open(v1) as f:
                    text = f.read()
            except OSError as e:
                self._gone_or_raise(e, name)
        if text is None or text.strip() == "max":
            return None
        try:
            value = int(text)
        except ValueError:
            raise BeanwatchError(f"malformed memory limit {text.strip()!r} of {name}") from None
        return None if value >= V1_UNLIMITED else value

    def events(self, name: str) -> dict[str, int]:
        text = self._read(name, "cgroup.events") or ""
        return {k: int(v) for k, v in (line.split() for line in text.splitlines() if line.strip())}

    def has_kill(self, name: str) -> bool:
        # cgroup.kill (Linux 5.14) and cgroup.freeze (5.2) exist in non-root cgroups only.
        return os.path.isfile(os.path.join(self.path(name), "cgroup.kill"))

    def has_freeze(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.path(name), "cgroup.freeze"))

    def _write(self, name: str, file: str, value: str) -> bool:
        path = os.path.join(self.path(name), file)
        try:
            # No O_CREAT: on a missing file this must fail, never create a regular file.
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            # ENODEV: the cgroup was removed while the file was open. ENOENT with the
            # directory still present means this kernel lacks the file: that is an error.
            gone = e.errno == errno.ENOENT and not os.path.isdir(self.path(name))
            if gone or e.errno == errno.ENODEV:
                return False
            raise BeanwatchError(f"cannot write {value!r} to {path}: {e.strerror}") from None
        return True

    def freeze(self, name: str, frozen: bool) -> bool:
        """Write cgroup.freeze; False if the cgroup is gone. Freezing completes asynchronously:
        cgroup.events shows "frozen 1" once every task has stopped."""
        return self._write(name, "cgroup.freeze", "1" if frozen else "0")

    def kill(self, name: str) -> bool:
        """Write cgroup.kill: SIGKILL to the whole subtree, forks included; False if gone."""
        return self._write(name, "cgroup.kill", "1")

    @staticmethod
    def ancestors_or_self(name: str) -> list[str]:
        out = [name]
        while name != "/":
            name = name.rsplit("/", 1)[0] or "/"
            out.append(name)
        return out
