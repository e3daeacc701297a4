"""Fixtures for tests that load the real probes into this kernel and use real cgroups.

Every cgroup a test makes lives under one prefix unique to this run and is removed; every
process is reaped; nothing is left frozen; no program of ours stays attached. Only cgroups
under the prefix are ever killed or frozen by the fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from observer.host.cgroupfs import find_mounts
from observer.host.scratch import ScratchCgroups

OUR_PROGRAMS = ("on_vm_syscall", "on_page_fault", "on_rss_change", "apply_bounds",
                "raw_tracepoint__", "tracepoint__sched__",
                "lsm__mmap_", "kmod_ret__secur")   # the last two: --vm-limit (names cut at 15)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Deadlines for waiting on beanwatch are stretched under emulation: scripts/vm.sh sets 4 in
# TCG guests, where code runs several times slower (bcc compiling the probes above all).
TIME_SCALE = float(os.environ.get("BW_TEST_TIME_SCALE") or 1)


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs bcc (python3-bpfcc)"
    if not find_mounts().cgroup2:
        return "needs a cgroup2 mount"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.root)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def our_programs() -> list[str]:
    """BPF programs of ours loaded in the kernel (bpftool prog show)."""
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if line[:1].isdigit() and any(f" {p}" in line for p in OUR_PROGRAMS)]


def no_programs_left(timeout: float = 5.0) -> bool:
    """The kernel frees a program after its last file descriptor is closed, asynchronously
    (RCU): give it a moment after a process dies."""
    deadline = time.time() + timeout
    while our_programs():
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


class Cgroups(ScratchCgroups):
    """Makes cgroups under one unique prefix in the cgroup2 mount, and removes them all."""

    def __init__(self):
        super().__init__(f"test-{os.getpid()}")

    def spawn(self, rel: str, argv: list[str], **kw) -> subprocess.Popen:
        return super().spawn(rel, argv, cwd=ROOT, **kw)

    def workload(self, rel: str, *steps: str) -> subprocess.Popen:
        return self.spawn(rel, [sys.executable, "-m", "observer.app.workload", *steps],
                          stderr=subprocess.DEVNULL)

    def events(self, rel: str) -> dict:
        with open(os.path.join(self.path(rel), "cgroup.events")) as f:
            return dict((k, int(v)) for k, v in (line.split() for line in f))



@pytest.fixture
def cgroups():
    cg = Cgroups()
    try:
        yield cg
    finally:
        cg.cleanup()
        assert not os.path.exists(cg.path(cg.prefix)), "test cgroups left behind"


class Watcher:
    """`beanwatch watch --json` as a real process; its records are collected as they come."""

    def __init__(self, args: list[str], command: str = "watch", prefix=()):
        exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable)) or "beanwatch"
        self.proc = subprocess.Popen([*prefix, exe, command, "--json", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd="/")
        self.records: list[dict] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()

    def _read(self):
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr += line

    def stderr_so_far(self) -> str:
        return self.stderr

    def wait_for(self, pred, timeout=20.0, what="record"):
        timeout *= TIME_SCALE
        deadline = time.time() + timeout
        while time.time() < deadline:
            for rec in list(self.records):
                if pred(rec):
                    return rec
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no {what} within {timeout}s; beanwatch stderr:\n{self.stderr}\n"
                             f"last records: {self.records[-5:]}")

    def started(self, timeout=30.0):
        return self.wait_for(lambda r: r["event"] == "snapshot", timeout, "first snapshot")

    def of(self, event: str, cgroup: str | None = None) -> list[dict]:
        return [r for r in self.records if r["event"] == event
                and (cgroup is None or r["cgroup"] == cgroup)]

    def stop(self, sig=signal.SIGTERM, timeout=15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._err.join(timeout=5)
        return code


@pytest.fixture
def watcher():
    started: list[Watcher] = []

    def start(*args: str, command: str = "watch", prefix=()) -> Watcher:
        """prefix: a command beanwatch runs under (setpriv with a unit's capabilities)."""
        w = Watcher(list(args), command, prefix)
        started.append(w)
        return w
    try:
        yield start
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.stop()
        assert no_programs_left(), "BPF programs of ours still loaded after the session ended"


def vm_size(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0
