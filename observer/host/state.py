"""What must outlive a beanwatch process: the cgroups it froze (in /run/beanwatch)."""

from __future__ import annotations

import json
import os

DEFAULT_STATE_DIR = "/run/beanwatch"


class FrozenLedger:
    """Cgroups this process froze, kept on disk so that a later beanwatch can thaw them if
    this one dies without cleaning up (SIGKILL, a crash, the OOM killer)."""

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, pid: int | None = None):
        self.dir = state_dir
        self.pid = pid or os.getpid()
        self.path = os.path.join(state_dir, f"frozen.{self.pid}.json")

    def save(self, frozen: set[tuple[str, int]]) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        if not frozen:
            self.clear()
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump([{"cgroup": n, "id": i} for n, i in sorted(frozen)], f)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

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
            if pid == self.pid or os.path.exists(f"/proc/{pid}"):
                continue
            path = os.path.join(self.dir, fname)
            try:
                with open(path) as f:
                    entries = json.load(f)
                out += [(str(e["cgroup"]), int(e["id"]), path) for e in entries]
            except (OSError, ValueError, KeyError, TypeError):
                out.append(("", 0, path))   # unreadable: dropped below
        return out
