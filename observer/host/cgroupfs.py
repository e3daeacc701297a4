"""Finds the cgroup mounts and reads and writes cgroup files, by canonical name ("/", "/a/b")."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import stat
import struct
from dataclasses import dataclass

from ..core.errors import BeanwatchError

# cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages in bytes (0x7ffffffffffff000 on 64-bit).
V1_UNLIMITED = 2**62

# A cgroup removed while we read it fails with ENOENT, or ENODEV for a file already open.
_GONE = (errno.ENOENT, errno.ENODEV)

# A kernfs file handle (cgroup2, Linux 5.5 on) is the node's 64-bit id: the cgroup id.
FILEID_KERNFS = 0xFE


class _FileHandle(ctypes.Structure):
    """struct file_handle with room for a kernfs handle (open_by_handle_at(2))."""

    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 8)]


class Unlocatable(Exception):
    """A cgroup that CgroupFS.locate cannot place from its id alone (no support on this
    host, a path past PATH_MAX, renamed meanwhile): the caller walks the tree instead."""


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


# Directories are opened with these; a walk never follows a symlink.
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# A path longer than this (bytes) is opened one component at a time (openat), so that cgroups
# deeper than PATH_MAX (4096) can still be read and acted on. Shorter ones in one call.
_SHORT_PATH = 2048


# A directory with more subdirectories than this is listed as the walk goes (_subdirs)
LAZY_LISTING = 512


class CgroupFS:
    """One cgroup2 hierarchy mounted at root, plus the v1 memory hierarchy if there is one.

    Every read and write goes through a directory file descriptor (openat), so a cgroup
    whose absolute path is longer than PATH_MAX is handled like any other. A cgroup that a
    walk cannot open or list (other than because it was removed) is skipped and noted in
    `skipped` (name -> reason), never fatal."""

    def __init__(self, root: str, memory_v1: str | None = None):
        self.root = os.path.abspath(root)
        self.memory_v1 = memory_v1
        self._real = os.path.realpath(self.root)
        self.skipped: dict[str, str] = {}   # from the last walk()
        try:
            self._dev = os.stat(self.root).st_dev
        except OSError as e:
            raise BeanwatchError(f"cannot use cgroup mount {root}: {e.strerror}") from None

    def resolve(self, spec: str, missing_ok: bool = False) -> str:
        """The canonical name of a cgroup given relative to the mount or as an absolute path.
        With missing_ok, a cgroup that does not exist (yet) gives its lexical name."""
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
        lexical = "/" + "/".join(parts)
        path = self.path(lexical)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            if missing_ok and not (spec.startswith("/") and os.path.lexists(spec)):
                return lexical
            # an absolute path that exists outside the mount is a mistake, not a cgroup to come
            raise BeanwatchError(f"no cgroup {spec!r} under {self.root}") from None
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:
                return self._resolve_long(spec, lexical, missing_ok)
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

    def _resolve_long(self, spec: str, lexical: str, missing_ok: bool) -> str:
        """A path past PATH_MAX: opened one component at a time from the mount, following no
        symlink at all, so the name found is already canonical."""
        try:
            fd = self._open_in(self._real, lexical, whole=False)
        except FileNotFoundError:
            if missing_ok:
                return lexical
            raise BeanwatchError(f"no cgroup {spec!r} under {self.root}") from None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise BeanwatchError(f"cgroup path {spec!r} goes through a symlink or a "
                                     "file") from None
            raise BeanwatchError(f"cannot open cgroup {spec!r}: {e.strerror}") from None
        try:
            if os.fstat(fd).st_dev != self._dev:
                raise BeanwatchError(
                    f"cgroup path {spec!r} is on another filesystem than {self.root}")
        finally:
            os.close(fd)
        return lexical

    def path(self, name: str) -> str:
        return self.root if name == "/" else self.root.rstrip("/") + name

    # -- directory file descriptors ---------------------------------------------------------
    @staticmethod
    def _open_in(root: str, name: str, whole: bool = True) -> int:
        """A directory fd of cgroup name under root. A long path (or whole=False) is opened
        one component at a time with openat, none of them followed if a symlink."""
        path = root if name == "/" else root.rstrip("/") + name
        if whole and len(os.fsencode(path)) < _SHORT_PATH:
            return os.open(path, _DIR)
        fd = os.open(root, _DIR)
        try:
            for part in name.strip("/").split("/"):
                if part:
                    child = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
                    os.close(fd)
                    fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _dir(self, name: str, root: str | None = None):
        fd = self._open_in(root or self.root, name)
        try:
            yield fd
        finally:
            os.close(fd)

    def cgroup_id(self, name: str) -> int:
        # On cgroup2 the directory's inode number is the kernel's cgroup id (kernfs node id),
        # the value bpf_get_current_cgroup_id() returns. A recreated cgroup gets a new one.
        with self._dir(name) as fd:
            return os.fstat(fd).st_ino

    # -- a cgroup from its id alone --------------------------------------------------------
    _libc = None
    _by_id: bool | None = None   # open_by_handle_at works on this mount (probed once)
    _mount_fd: int | None = None

    def _open_by_id(self, cid: int) -> int:
        """A directory fd of the cgroup whose id is cid (open_by_handle_at with a kernfs
        handle; needs CAP_DAC_READ_SEARCH). OSError as the kernel says: ESTALE when gone."""
        if CgroupFS._libc is None:
            CgroupFS._libc = ctypes.CDLL(None, use_errno=True)
        fh = _FileHandle(8, FILEID_KERNFS)
        ctypes.memmove(fh.f_handle, struct.pack("=Q", cid), 8)
        if self._mount_fd is None:
            self._mount_fd = os.open(self._real, _DIR)   # kept: one syscall less per call
        fd = CgroupFS._libc.open_by_handle_at(self._mount_fd, ctypes.byref(fh), _DIR)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd

    def _locate_works(self) -> bool:
        """Probed once: the mount's own root found again from its id. Not a cgroup2 (kernfs)
        mount, an old kernel, or no CAP_DAC_READ_SEARCH: False, and locate() never tries."""
        if self._by_id is None:
            try:
                want = os.stat(self._real).st_ino
                fd = self._open_by_id(want)
                try:
                    self._by_id = os.fstat(fd).st_ino == want
                finally:
                    os.close(fd)
            except (OSError, AttributeError):
                self._by_id = False
        return self._by_id

    def locate(self, cid: int) -> list[tuple[str, int]] | None:
        """The cgroup of id cid found from the id alone, in O(depth): [(name, id), ...] from
        the mount's root down to it, each an ancestor of the next. None if it is gone (or
        outside this mount). Unlocatable where it cannot be told here: the caller walks.

        The kernel opens it by its id (a kernfs file handle) and names its path; the path
        is then opened again one component at a time from the mount, no symlink followed,
        and must end at the same id: the names and ids of the chain were each other's at
        that moment (a rename meanwhile fails the check). Cgroups never change parent, so
        the ids are its ancestors for good."""
        if not self._locate_works():
            raise Unlocatable("open_by_handle_at does not work on this mount")
        try:
            fd = self._open_by_id(cid)
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ENOENT):
                return None
            raise Unlocatable(e.strerror) from None
        try:
            st = os.fstat(fd)
            if st.st_ino != cid or st.st_dev != self._dev:
                return None
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError as e:
            # ENAMETOOLONG: past PATH_MAX, d_path cannot name it
            raise Unlocatable(e.strerror) from None
        finally:
            os.close(fd)
        if path != self._real and not path.startswith(self._real.rstrip("/") + "/"):
            return None   # not under this mount (a mount of a subtree): not ours to watch
        rel = path[len(self._real.rstrip("/")):]
        parts = [p for p in rel.split("/") if p]
        chain = []
        fd = os.open(self._real, _DIR)
        try:
            chain.append(("/", os.fstat(fd).st_ino))
            name = ""
            for part in parts:
                child = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
                name += "/" + part
                chain.append((name, os.fstat(fd).st_ino))
        except OSError as e:
            raise Unlocatable(f"{e.strerror} (removed or renamed meanwhile)") from None
        finally:
            os.close(fd)
        if chain[-1][1] != cid:
            raise Unlocatable("renamed or made again meanwhile")
        return chain

    def _visit(self, top: str, fn, skipped: dict[str, str] | None = None) -> None:
        """fn(fd, name) for top and each of its descendants (_visit_iter)."""
        for fd, name in self._visit_iter(top, skipped):
            fn(fd, name)

    def _visit_iter(self, top: str, skipped: dict[str, str] | None = None):
        """Depth first through top and its descendants by directory fd: (fd, name) for
        each, the fd open until the next step. Only the directories on the current path are
        open (one fd per level, closed when the iteration ends or is closed). One removed
        meanwhile is passed over; one that cannot be opened or listed for another reason
        (EMFILE, EACCES, ...) is passed over and noted in skipped. Nothing if top is gone."""
        try:
            fd = self._open_in(self.root, top)
        except OSError as e:
            self._gone_or_raise(e, top)
            return
        stack: list = [(fd, top, None)]
        try:
            while stack:
                fd, name, children = stack[-1]
                if children is None:
                    yield fd, name
                    children = iter(self._subdirs(fd, name, skipped))
                    stack[-1] = (fd, name, children)
                child = next(children, None)
                if child is None:
                    stack.pop()
                    os.close(fd)
                    continue
                child_name = name.rstrip("/") + "/" + child
                try:
                    stack.append((os.open(child, _DIR | os.O_NOFOLLOW, dir_fd=fd),
                                  child_name, None))
                except OSError as e:
                    self._note(e, child_name, skipped)
        finally:
            for fd, _, _ in stack:
                os.close(fd)

    def _subdirs(self, fd: int, name: str, skipped):
        """The names of a directory's subdirectories: listed at once, or, for one with more
        than LAZY_LISTING of them (a directory's link count is 2 + its subdirectories),
        as the walk goes, so that listing a tenant's 20,000 cgroups in one directory (~10
        ms) is not one step of a sliced walk (it keeps a second fd open meanwhile)."""
        try:
            if os.fstat(fd).st_nlink - 2 > LAZY_LISTING:
                return self._subdirs_lazily(fd, name, skipped)
            with os.scandir(fd) as it:
                return [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except OSError as e:
            self._note(e, name, skipped)
            return []

    def _subdirs_lazily(self, fd: int, name: str, skipped):
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        yield e.name
        except OSError as e:
            self._note(e, name, skipped)

    @staticmethod
    def _note(e: OSError, name: str, skipped) -> None:
        if e.errno not in _GONE and skipped is not None:
            skipped[name] = e.strerror or str(e)

    def walk(self, top: str = "/") -> dict[int, str]:
        """id -> name for top and every cgroup below it; ones removed meanwhile are passed
        over, ones that cannot be read are passed over and listed in self.skipped."""
        return dict(self.walk_steps(top))

    def walk_steps(self, top: str = "/"):
        """walk() one cgroup at a time: (id, name) for each, self.skipped set at the end. A
        caller may take a few, attend to other work, and go on (the directories on the
        current path stay open meanwhile; close() the iterator to end it early)."""
        skipped: dict[str, str] = {}
        for fd, name in self._visit_iter(top, skipped):
            yield os.fstat(fd).st_ino, name
        self.skipped = skipped

    def procs_by_cgroup(self, top: str = "/") -> dict[int, list[int]]:
        """id -> the PIDs in cgroup.procs, for top and every cgroup below it."""
        out: dict[int, list[int]] = {}

        def visit(fd, name):
            pids = self._procs_at(fd, name)
            if pids:
                out[os.fstat(fd).st_ino] = pids
        self._visit(top, visit)
        return out

    def count(self) -> int:
        """How many cgroups there are (dying ones included): cgroup.stat of the root, else a walk."""
        text = self._read("/", "cgroup.stat") or ""
        fields = dict(line.split(None, 1) for line in text.splitlines() if " " in line)
        try:
            return 1 + int(fields["nr_descendants"]) + int(fields.get("nr_dying_descendants", 0))
        except (KeyError, ValueError):
            return len(self.walk())

    def _gone_or_raise(self, e: OSError, name: str) -> None:
        if e.errno not in _GONE:
            raise BeanwatchError(f"cannot read cgroup {name}: {e.strerror}") from None

    def _read_at(self, fd: int, file: str, name: str) -> str | None:
        try:
            with open(file, opener=lambda f, flags: os.open(f, flags | os.O_CLOEXEC, dir_fd=fd)) as f:
                return f.read()
        except OSError as e:
            self._gone_or_raise(e, name)
            return None

    def _read(self, name: str, file: str, root: str | None = None) -> str | None:
        try:
            with self._dir(name, root) as fd:
                return self._read_at(fd, file, name)
        except OSError as e:
            self._gone_or_raise(e, name)
            return None

    def _procs_at(self, fd: int, name: str) -> list[int]:
        # cgroup.procs is unsorted and may list a PID twice (a process moved out and back,
        # or a PID recycled, during the read): keep the first of each.
        text = self._read_at(fd, "cgroup.procs", name) or ""
        return list(dict.fromkeys(int(line) for line in text.split()))

    def procs(self, name: str) -> list[int]:
        text = self._read(name, "cgroup.procs") or ""
        return list(dict.fromkeys(int(line) for line in text.split()))

    def subtree_procs(self, name: str) -> list[int]:
        pids: dict[int, None] = {}
        self._visit(name, lambda fd, n: pids.update(dict.fromkeys(self._procs_at(fd, n))))
        return list(pids)

    def procs_in_subtree(self, name: str) -> dict[str, list[int]]:
        """cgroup name -> the PIDs in its cgroup.procs, for name and every cgroup below it
        (ones with no process left out). A PID seen twice (moved during the walk) is kept
        in the first cgroup it was seen in."""
        out: dict[str, list[int]] = {}
        seen: set[int] = set()

        def visit(fd, n):
            pids = [p for p in self._procs_at(fd, n) if p not in seen]
            if pids:
                seen.update(pids)
                out[n] = pids
        self._visit(name, visit)
        return out

    def children(self, name: str) -> list[str]:
        """The names of name's direct child cgroups ([] if it is gone)."""
        try:
            with self._dir(name) as fd:
                return [name.rstrip("/") + "/" + c for c in self._subdirs(fd, name, None)]
        except OSError as e:
            self._gone_or_raise(e, name)
            return []

    # oomd's marks on cgroup directories (extended attributes; cgroupfs takes user.* since 5.7)
    MARKS = (("prefer", "user.oomd_prefer"), ("avoid", "user.oomd_avoid"))

    def mark(self, name: str) -> str | None:
        """"prefer" or "avoid" where the cgroup carries oomd's attribute of that name (any
        value but "0"), else None. Unreadable or unsupported attributes are no mark."""
        try:
            with self._dir(name) as fd:
                for mark, attr in self.MARKS:
                    try:
                        if os.getxattr(fd, attr).strip() not in (b"0", b""):
                            return mark
                    except OSError:
                        continue
        except OSError:
            return None
        return None

    def oom_group(self, name: str) -> bool:
        """memory.oom.group is 1 (cgroup2 with the memory controller): the kernel's OOM
        killer kills such a group whole, and so does beanwatch."""
        try:
            text = self._read(name, "memory.oom.group")
        except BeanwatchError:
            return False
        return (text or "").strip() == "1"

    def memory_limit(self, name: str) -> int | None:
        """memory.max on cgroup2; on hybrid hosts the v1 memory hierarchy, assuming it mirrors
        the cgroup2 paths as systemd arranges. None when unlimited or unknown."""
        text = self._read(name, "memory.max")
        if text is None and self.memory_v1:
            text = self._read(name, "memory.limit_in_bytes", self.memory_v1)
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

    def _has(self, name: str, file: str) -> bool:
        try:
            with self._dir(name) as fd:
                return stat.S_ISREG(os.stat(file, dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def has_kill(self, name: str) -> bool:
        # cgroup.kill (Linux 5.14) and cgroup.freeze (5.2) exist in non-root cgroups only.
        return self._has(name, "cgroup.kill")

    def has_freeze(self, name: str) -> bool:
        return self._has(name, "cgroup.freeze")

    def _write(self, name: str, file: str, value: str) -> bool:
        where = os.path.join(self.path(name), file)
        try:
            dfd = self._open_in(self.root, name)
        except OSError as e:
            if e.errno in _GONE or e.errno == errno.ENOTDIR:
                return False
            raise BeanwatchError(f"cannot write {value!r} to {where}: {e.strerror}") from None
        try:
            # No O_CREAT: on a missing file this must fail, never create a regular file.
            fd = os.open(file, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=dfd)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as e:
            # ENODEV: the cgroup was removed while the file was open. ENOENT with the
            # directory still there (same id) means this kernel lacks the file: an error.
            if e.errno == errno.ENODEV or (e.errno == errno.ENOENT and self._removed(dfd, name)):
                return False
            raise BeanwatchError(f"cannot write {value!r} to {where}: {e.strerror}") from None
        finally:
            os.close(dfd)
        return True

    def _removed(self, dfd: int, name: str) -> bool:
        try:
            return self.cgroup_id(name) != os.fstat(dfd).st_ino
        except OSError:
            return True

    def memory_high(self, name: str) -> str | None:
        """memory.high as the kernel shows it ("max" or bytes), None where the cgroup has no
        such file (its parent does not enable the memory controller) or is gone."""
        text = self._read(name, "memory.high")
        return None if text is None else text.strip()

    def has_memory_high(self, name: str) -> bool:
        return self._has(name, "memory.high")

    def set_memory_high(self, name: str, value: str) -> bool:
        """Write memory.high ("max" or bytes); False if the cgroup is gone."""
        return self._write(name, "memory.high", value)

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
