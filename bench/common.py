"""Shared pieces of the benchmark programs: cgroups under one prefix, beanwatch runs, /proc."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from observer.host.scratch import ScratchCgroups  # noqa: E402

MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def beanwatch(*args: str) -> list[str]:
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable)) or "beanwatch"
    return [exe, *args]


def env_number(name: str, default: int, unit: str) -> int:
    """A whole number from the environment variable name (default if unset)."""
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        raise ValueError(f"{name}: not a number of {unit}: {value!r}")
    return int(value)


class Scratch(ScratchCgroups):
    """Cgroups for one benchmark run under a unique prefix; cleanup kills and removes them."""

    def __init__(self, tag: str):
        super().__init__(f"bench-{tag}")

    def make_idle(self, n: int, name: str = "bulk") -> None:
        """n empty cgroups in one directory (a tenant's thousands), removed with the rest;
        nothing for n = 0."""
        if not n:
            return
        top = self.path(self.make(name))
        for i in range(n):
            os.mkdir(os.path.join(top, f"b{i}"))


def json_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def build(src: str, out_dir: str, flags=()) -> str:
    exe = os.path.join(out_dir, os.path.splitext(os.path.basename(src))[0])
    subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", exe, os.path.join(ROOT, src)], check=True)
    return exe


def build_all(out_dir: str) -> dict[str, str]:
    """Every bench/programs/*.c built into out_dir: name -> executable."""
    src_dir = os.path.join(ROOT, "bench", "programs")
    return {os.path.splitext(n)[0]: build(os.path.join("bench", "programs", n), out_dir)
            for n in sorted(os.listdir(src_dir)) if n.endswith(".c")}


def stop_process(p: subprocess.Popen, sig=signal.SIGTERM, timeout=10.0) -> None:
    """Ends a child we started, politely first."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Watcher:
    """`beanwatch watch --json` as a child process; records are kept with their arrival times."""

    def __init__(self, args, startup_log: list | None = None):
        self.t0 = time.time()
        self.proc = subprocess.Popen(beanwatch("watch", "--json", *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd="/")
        self.records: list[dict] = []       # each with "_arrival" (time.time())
        self.stderr: list[str] = []
        self.startup_log = startup_log
        self.startup = None
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_err, daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            arrival = time.time()
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            rec["_arrival"] = arrival
            self.records.append(rec)

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)

    def wait_for(self, pred, timeout=20.0, start=0):
        """The first record from index start on that matches pred; raises on timeout."""
        deadline = time.time() + timeout
        i = start
        while True:
            while i < len(self.records):
                if pred(self.records[i]):
                    return self.records[i]
                i += 1
            if time.time() > deadline or self.proc.poll() is not None and not self._threads[0].is_alive():
                raise RuntimeError(f"beanwatch: no such record within {timeout}s; stderr: "
                                   f"{''.join(self.stderr)[-800:]}")
            time.sleep(0.002)

    def started(self, timeout=60.0) -> "Watcher":
        rec = self.wait_for(lambda r: r["event"] == "snapshot", timeout)
        self.startup = rec["_arrival"] - self.t0
        if self.startup_log is not None:
            self.startup_log.append(self.startup)
        return self

    def of(self, event: str, cgroup: str | None = None, since: float = 0.0) -> list[dict]:
        return [r for r in list(self.records) if r["event"] == event
                and (cgroup is None or r["cgroup"] == cgroup) and r["_arrival"] >= since]

    def metrics_url(self, timeout=10.0) -> str:
        """Where beanwatch serves its metrics (started with --metrics HOST:0: it says on
        stderr which port it took)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for line in list(self.stderr):
                if "metrics on http://" in line:   # "beanwatch: metrics on URL"
                    return line.split("metrics on ", 1)[1].split()[0]
            time.sleep(0.01)
        raise RuntimeError("beanwatch: no metrics address on stderr within "
                           f"{timeout}s: {''.join(self.stderr)[-800:]}")

    def metrics(self, url: str, cgroup: str) -> dict[str, float]:
        """The per-cgroup metrics of one watched cgroup: name (beanwatch_cgroup_ left out)
        -> value. Metrics are read from the session at scrape time, never rate-limited."""
        import urllib.request
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        needle = f'{{cgroup="{cgroup}",'
        for line in text.splitlines():
            if line.startswith("beanwatch_cgroup_") and needle in line:
                out[line[len("beanwatch_cgroup_"):line.index("{")]] = float(line.rsplit(" ", 1)[1])
        return out

    def stop(self) -> int:
        stop_process(self.proc, signal.SIGTERM, 20.0)
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode


# -- /proc of one process --------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process in ns (schedstat: finer than stat's ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bpf_objects(pid: int) -> dict[str, list[dict]]:
    """The BPF maps and programs a process holds, from /proc/PID/fdinfo."""
    out = {"maps": [], "progs": []}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target not in ("anon_inode:bpf-map", "anon_inode:bpf-prog"):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        info = {k.strip(): v.strip() for k, v in info.items()}
        out["maps" if target.endswith("map") else "progs"].append(info)
    return out


def prog_names() -> dict[int, str]:
    """Program id -> name, from bpftool."""
    try:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                             timeout=30).stdout
        return {p["id"]: p.get("name", "") for p in json.loads(out or "[]")}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {}


def new_programs(before: dict[int, str]) -> list[str]:
    """BPF programs loaded now that were not before (ours, left attached: should be none)."""
    return [f"{i} {n}" for i, n in sorted(prog_names().items()) if i not in before]


@contextlib.contextmanager
def bpf_run_stats():
    """BPF_ENABLE_STATS: the kernel counts run_time_ns/run_cnt per program while the fd is
    open, and stops by itself when it is closed (even if we die)."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)   # union bpf_attr { __u32 type; } enable_stats
    fd = libc.syscall(321, 32, attr, 16)     # SYS_bpf (x86_64), BPF_ENABLE_STATS, BPF_STATS_RUN_TIME
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


# -- numbers ---------------------------------------------------------------------------------
def summary(values) -> dict | None:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    p99 = vals[min(len(vals) - 1, int(0.99 * len(vals)))]
    return {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "p99": p99,
            "n": len(vals)}


def machine() -> dict:
    info = {"kernel": platform.release(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            info["memory_mib"] = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    info["python"] = platform.python_version()
    return info
