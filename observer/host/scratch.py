"""Scratch cgroups under one unique prefix: made, spawned into, then thawed, killed and removed (demo, tests, bench)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from .cgroupfs import find_mounts
from .hooks import signal_cgroup, write_quietly


def spawn_in_cgroup(argv: list[str], procs_file: str, **kw) -> subprocess.Popen:
    """Starts argv already inside a cgroup: the child joins it before exec."""
    def join():
        with open(procs_file, "w") as f:
            f.write(str(os.getpid()))
    return subprocess.Popen(argv, preexec_fn=join, **kw)


def remove_cgroup(path: str, timeout: float = 5.0) -> None:
    """rmdir, retried while the cgroup's last processes are still being torn down."""
    deadline = time.time() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


class ScratchCgroups:
    """Cgroups under /beanwatch-TAG-<random> in the cgroup2 mount. cleanup() thaws and kills
    what is inside (only there), reaps the processes spawned, and removes every cgroup."""

    def __init__(self, tag: str, mount: str | None = None):
        self.mount = mount or find_mounts().cgroup2
        self.prefix = f"/beanwatch-{tag}-{uuid.uuid4().hex[:6]}"
        os.mkdir(self.mount + self.prefix)
        self.children: list[subprocess.Popen] = []

    def make(self, name: str) -> str:
        """Returns the cgroup's name relative to the mount, e.g. /beanwatch-test-1-ab/hog."""
        rel = f"{self.prefix}/{name}"
        os.makedirs(self.mount + rel, exist_ok=True)
        return rel

    def path(self, rel: str) -> str:
        return self.mount + rel

    def spawn(self, rel: str, argv, cpus=None, **kw) -> subprocess.Popen:
        """Starts argv inside cgroup rel (pinned to cpus, if given); reaped at cleanup."""
        procs = os.path.join(self.path(rel), "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            if cpus:
                os.sched_setaffinity(0, cpus)
        p = subprocess.Popen(argv, preexec_fn=join, **kw)
        self.children.append(p)
        return p

    def cleanup(self) -> list[str]:
        """Returns the cgroups that could not be removed (none, normally)."""
        top = self.mount + self.prefix
        dirs = sorted((d for d, _, _ in os.walk(top)), key=len, reverse=True)
        for d in dirs:
            # thaw first (nothing stays frozen), then cgroup.kill or, before 5.14, freeze
            # and SIGKILL each member
            write_quietly(os.path.join(d, "cgroup.freeze"), "0")
            signal_cgroup(d)
        for p in self.children:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        left = []
        for d in dirs:
            try:
                remove_cgroup(d, timeout=10.0)
            except OSError:
                left.append(d)
        return left

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for d in self.cleanup():
            print(f"beanwatch: could not remove {d}", file=sys.stderr)
