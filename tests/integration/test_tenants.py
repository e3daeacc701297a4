"""What a tenant with a delegated cgroup subtree, or a service manager, can do to the
watcher: deep cgroups, restarts, churn, event storms, limits changed under it (issue 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

MiB = 1 << 20
DIR = os.O_RDONLY | os.O_DIRECTORY
pytestmark = pytest.mark.kernel


def workload_argv(*steps):
    return [sys.executable, "-m", "observer.app.workload", *steps]


def spawn_at(cgroups, dir_fd: int, argv) -> subprocess.Popen:
    """Starts argv inside the cgroup open as dir_fd (joined through the fd: no path)."""
    def join():
        fd = os.open("cgroup.procs", os.O_WRONLY, dir_fd=dir_fd)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    p = subprocess.Popen(argv, preexec_fn=join, cwd=ROOT, stderr=subprocess.DEVNULL)
    cgroups.children.append(p)
    return p


class DeepChain:
    """depth nested cgroups of 250-character names under top: the absolute path is past
    PATH_MAX and /proc/PID/cgroup of a member is over 4096 bytes. Only fds reach it."""

    def __init__(self, top_path: str, depth: int = 20):
        self.parts = [f"{i:02d}" + "x" * 248 for i in range(depth)]
        self.fds = [os.open(top_path, DIR)]
        for part in self.parts:
            os.mkdir(part, dir_fd=self.fds[-1])
            self.fds.append(os.open(part, DIR, dir_fd=self.fds[-1]))

    @property
    def deepest(self) -> int:
        return self.fds[-1]

    def rel(self) -> str:
        return "/" + "/".join(self.parts)

    def remove(self) -> None:
        """Kill what is inside (from the top of the chain), then rmdir bottom-up by fd."""
        try:
            fd = os.open("cgroup.kill", os.O_WRONLY, dir_fd=self.fds[1])
            os.write(fd, b"1")
            os.close(fd)
        except OSError:
            pass
        for i in range(len(self.parts), 0, -1):
            deadline = time.time() + 10
            while True:
                try:
                    os.rmdir(self.parts[i - 1], dir_fd=self.fds[i - 1])
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        for fd in self.fds:
            os.close(fd)


def test_a_chain_of_cgroups_deeper_than_path_max_neither_stops_nor_blinds_the_watcher(
        cgroups, watcher):
    top = cgroups.make("deep")
    chain = DeepChain(cgroups.path(top))
    try:
        deep = top + chain.rel()
        assert len(cgroups.path(deep)) > 4096
        sleeper = spawn_at(cgroups, chain.deepest, ["sleep", "600"])
        time.sleep(0.2)
        with open(f"/proc/{sleeper.pid}/cgroup", "rb") as f:
            assert len(f.read()) > 4096
        # One limit on the top of the chain, one on its deepest cgroup (named past PATH_MAX).
        w = watcher("--limit", f"{top}=1G", "--limit", f"{deep}=96M", "--action", "kill",
                    "--interval", "0.2")
        w.started()
        # still running, the deepest is accounted, and a toucher there is killed by its limit
        hog = spawn_at(cgroups, chain.deepest, workload_argv("touch:512M", "hold"))
        assert hog.wait(timeout=30) == -signal.SIGKILL
        act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == deep,
                         what="kill of the deepest cgroup")
        assert act["ok"] and act["action"] == "kill" and hog.pid in act["pids"]
        assert act["exact_bytes"] < 96 * MiB + 64 * MiB
        assert w.proc.poll() is None, w.stderr
        assert not w.of("error")
        assert w.stop() == 0
    finally:
        chain.remove()
