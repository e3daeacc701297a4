"""What must outlive a beanwatch process: the cgroups it froze and the memory.high values it
set (in /run/beanwatch)."""

from __future__ import annotations

import json
import os

from .procfs import ProcFS

DEFAULT_STATE_DIR = "/run/beanwatch"


def start_time(procfs: ProcFS, pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), None where the pid is gone or
    unreadable: with the pid, it names one process, never a later one given the same pid."""
    try:
        st = procfs.stat(pid)
    except Exception:  # noqa: BLE001 - unreadable counts as unknown
        return None
    return st.start_time if st is not None else None


class FrozenLedger:
    """Cgroups this process froze, kept on disk so that a later beanwatch can thaw them if
    this one dies without cleaning up (SIGKILL, a crash, the OOM killer).

    The file is frozen.PID.json: {"pid": PID, "start_time": T, "frozen": [{"cgroup", "id"}]}.
    Its writer is alive only if /proc/PID exists with the same start time: a pid alone may
    have been reused by any process since."""

    KIND = "frozen"      # the file's prefix and the key of its entries

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, pid: int | None = None,
                 procfs: ProcFS | None = None):
        self.dir = state_dir
        self.procfs = procfs or ProcFS()
        self.pid = pid or os.getpid()
        self.start_time = start_time(self.procfs, self.pid)
        self.path = os.path.join(state_dir, f"{self.KIND}.{self.pid}.json")

    def save(self, frozen: set[tuple]) -> None:
        """Replaces the file (written aside, then renamed: a reader sees the old list or the
        new one, whenever this process dies). Not fsync'ed: the file is for a later
        beanwatch after this process's death, which the page cache outlives; a crash of the
        kernel ends every freeze with it. An fsync here took up to milliseconds on a disk
        (/run is not always a tmpfs), and a release writes right after its thaw: a toucher
        just thawed ran on 10 MiB past its next crossing while the loop waited on one."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if not frozen:
            self.clear()
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": self.pid, "start_time": self.start_time,
                       self.KIND: [self._entry(e) for e in sorted(frozen)]}, f)
        os.replace(tmp, self.path)

    @staticmethod
    def _entry(e) -> dict:
        return {"cgroup": e[0], "id": e[1]}

    @staticmethod
    def _parse(e) -> tuple:
        return (str(e["cgroup"]), int(e["id"]))

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def alive(self, pid: int, started: int | None) -> bool:
        """Whether the beanwatch that wrote a ledger still runs."""
        if pid == self.pid:
            return True
        now = start_time(self.procfs, pid)
        if now is None:
            return os.path.exists(f"/proc/{pid}") if started is None else False
        return started is None or now == started   # no start time recorded: the pid alone

    def orphans(self) -> list[tuple[str, int, str]]:
        """(cgroup, id, ledger file) frozen by beanwatch processes that no longer run."""
        out = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for fname in names:
            parts = fname.split(".")
            if len(parts) != 3 or parts[0] != self.KIND or parts[2] != "json" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            path = os.path.join(self.dir, fname)
            try:
                with open(path) as f:
                    data = json.load(f)
                if isinstance(data, list):          # before start times were recorded
                    started, entries = None, data
                else:
                    started, entries = data.get("start_time"), data[self.KIND]
                    started = started if isinstance(started, int) else None
                if self.alive(pid, started):
                    continue
                out += [self._parse(e) + (path,) for e in entries]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                if not self.alive(pid, None):
                    out.append(self._unreadable(path))   # dropped by the caller
        return out

    @staticmethod
    def drop(paths) -> None:
        """Removes orphan ledger files once their entries were dealt with."""
        for path in set(paths):
            try:
                os.unlink(path)
            except OSError:
                pass

    @staticmethod
    def _unreadable(path: str) -> tuple:
        return ("", 0, path)


class ThrottleLedger(FrozenLedger):
    """The memory.high values this process wrote (the barrier action throttle), with the value
    each replaced: high.PID.json, {"pid", "start_time", "high": [{"cgroup", "id", "previous",
    "written"}]}. A later beanwatch puts back the previous value of a dead one's entries
    where memory.high still holds what it wrote: none is left behind."""

    KIND = "high"

    @staticmethod
    def _entry(e) -> dict:
        return {"cgroup": e[0], "id": e[1], "previous": e[2], "written": e[3]}

    @staticmethod
    def _parse(e) -> tuple:
        return (str(e["cgroup"]), int(e["id"]), str(e["previous"]), str(e["written"]))

    @staticmethod
    def _unreadable(path: str) -> tuple:
        return ("", 0, "", "", path)
