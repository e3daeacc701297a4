"""The observers compared side by side, each started, waited for until attached, and stopped.

beanwatch, a naive bcc tracer and bpftrace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from common import ROOT, Watcher, beanwatch, stop_process

BPFTRACE_FAULTS = "tracepoint:exceptions:page_fault_user { @[cgroup] = count(); }"
BPFTRACE_SYSCALL = "tracepoint:syscalls:sys_exit_mmap { @[cgroup] = count(); }"
# A trivial per-cgroup counter on beanwatch's own per-operation hooks (bpftrace 0.17 cannot
# attach raw tracepoints: the regular tracepoint form)
BPFTRACE_LOCK = "tracepoint:mmap_lock:mmap_lock_released { @[cgroup] = count(); }"
BPFTRACE_LOCK_RSS = ("tracepoint:mmap_lock:mmap_lock_released, tracepoint:kmem:rss_stat "
                     "{ @[cgroup] = count(); }")
# beanwatch's per-operation hooks: fast mode, and slow mode
FLOOR_FAST = ("mmap_lock_released",)
FLOOR_SLOW = ("mmap_lock_released", "rss_stat")


def perf_event_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]":
                n += 1
        except OSError:
            pass
    return n


class LineProcess:
    """A child whose stdout lines are collected by a thread; wait_line blocks for one."""

    def __init__(self, argv, **kw):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, **kw)
        self.lines: list[str] = []
        self.err: list[str] = []
        self._t = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
                   threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True)]
        for t in self._t:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @staticmethod
    def _pump(stream, into):
        for line in stream:
            into.append(line)

    def wait_line(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.lines) + list(self.err):
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                time.sleep(0.1)
                break
            time.sleep(0.01)
        raise RuntimeError(f"{self.proc.args[0]}: no {prefix!r} line; stderr: {''.join(self.err)[-800:]}")

    def stop(self, sig=signal.SIGTERM) -> None:
        stop_process(self.proc, sig, 20.0)
        for t in self._t:
            t.join(timeout=5)


@contextlib.contextmanager
def beanwatch_watch(args, startups=None):
    """`beanwatch watch --json ARGS`, yielded once its first snapshot is out."""
    w = Watcher(list(args), startups)
    try:
        w.started()
        yield w
    finally:
        w.stop()


@contextlib.contextmanager
def beanwatch_trace(args=()):
    """`beanwatch trace ARGS` (its own accounting session, with EV_GROW* at or above the
    size: default 64M), yielded once the threshold is written."""
    p = LineProcess(beanwatch("trace", *args), cwd="/")
    try:
        p.wait_line("beanwatch: tracing address-space growth")
        yield p
    finally:
        p.stop()


@contextlib.contextmanager
def naive_tracer():
    p = LineProcess([sys.executable, os.path.join(ROOT, "bench", "naive_tracer.py")])
    try:
        p.wait_line("ready")
        yield p
    finally:
        p.stop()


@contextlib.contextmanager
def floor(hooks):
    """bench/floor.py: empty raw-tracepoint programs on hooks, yielded once attached."""
    p = LineProcess([sys.executable, os.path.join(ROOT, "bench", "floor.py"), *hooks])
    try:
        p.wait_line("ready")
        yield p
    finally:
        p.stop()


@contextlib.contextmanager
def bpftrace(program: str, probes: int = 1):
    """bpftrace -e PROGRAM, yielded once its probes are attached (its perf events are open)."""
    p = LineProcess(["bpftrace", "-e", program])
    try:
        p.wait_line("Attaching")
        deadline = time.time() + 20
        while perf_event_fds(p.proc.pid) < probes and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        yield p
    finally:
        p.stop(signal.SIGINT)


def have_bpftrace() -> bool:
    return subprocess.run(["sh", "-c", "command -v bpftrace"], capture_output=True).returncode == 0
