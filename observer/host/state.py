"""What must outlive a beanwatch process: the cgroups it froze (in /run/beanwatch)."""

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

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, pid: int | None = None,
                 procfs: ProcFS | None = None):
        self.dir = state_dir
        self.procfs = procfs or ProcFS()
        self.pid = pid or os.getpid()
        self.start_time = start_time(self.procfs, self.pid)
        self.path = os.path.join(state_dir, f"frozen.{self.pid}.json")

    def save(self, frozen: set[tuple[str, int]]) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if not frozen:
            self.clear()
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": self.pid, "start_time": self.start_time,
                       "frozen": [{"cgroup": n, "id": i} for n, i in sorted(frozen)]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

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
            if len(parts) != 3 or parts[0] != "frozen" or parts[2] != "json" or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            path = os.path.join(self.dir, fname)
            try:
                with open(path) as f:
                    data = json.load(f)
                if isinstance(data, list):          # before start times were recorded
                    started, entries = None, data
                else:
                    started, entries = data.get("start_time"), data["frozen"]
                    started = started if isinstance(started, int) else None
                if self.alive(pid, started):
                    continue
                out += [(str(e["cgroup"]), int(e["id"]), path) for e in entries]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                if not self.alive(pid, None):
                    out.append(("", 0, path))   # unreadable: dropped below
        return out
