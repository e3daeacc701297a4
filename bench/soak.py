"""Soak (not in CI; root, under the host lock): what a hostile tenant and a service manager do
to a watched host, for --minutes, against one `beanwatch watch`:

- churn: cgroups made, entered and removed under a watched parent (by default 10,000 in a
  30-minute run, in proportion for a shorter one), with hostile names: 250-byte names, bytes
  that are not UTF-8, tabs and escape sequences, and every 50th a chain 20 deep of 250-byte names
  (past PATH_MAX; made, entered and removed through directory fds);
- service restarts: a watched cgroup killed, removed and made again under the same path,
  every --restart-every seconds; odd restarts start a toucher (must be killed), even ones an
  innocent holding 64 MiB (must live until the next restart);
- a watched cgroup 20 levels of 250-byte names deep (past PATH_MAX), restarted (its deepest
  cgroup removed and made again) and given a toucher in turns;
- touchers in fresh hostile-named children of the churned parent (killed by its limit);
- innocents for the whole run: steady holders, a 2 GiB reservation with 32 MiB touched
  (estimate far above its limit, usage below: slow mode, never a kill), one in a cgroup
  named with bytes that are not UTF-8.

Recorded: beanwatch's RSS (and CPU) over time, `error` records, lines of beanwatch's stderr,
wrong kills (an innocent killed, or an action on a cgroup where none was due, or one whose
exact check was not above the limit), missed kills (a toucher alive --kill-deadline seconds
after it started), the kills' overshoot and latency, cgroups made and removed. Results go
to bench/results/soak-<UTC time>.json and .md (and --json FILE).

    sudo flock /tmp/bw-host.lock .venv/bin/python bench/soak.py [--minutes 30]
    sudo flock /tmp/bw-host.lock .venv/bin/python bench/soak.py --minutes 2     # smoke
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

from common import MiB, ROOT, Scratch, Watcher, cpu_seconds, stop_process, vm_rss

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
DEPTH, LONG = 20, 250
WORKLOAD = [sys.executable, "-m", "observer.app.workload"]


# -- cgroups by directory fd -------------------------------------------------------------------
def write_at(dfd: int, file: str, value: str) -> None:
    fd = os.open(file, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dfd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def procs_at(dfd: int) -> list[int]:
    try:
        fd = os.open("cgroup.procs", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
    except FileNotFoundError:
        return []
    try:
        return [int(x) for x in os.read(fd, 1 << 20).split()]
    finally:
        os.close(fd)


def rmdir_at(dfd: int, name, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            os.rmdir(name, dir_fd=dfd)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.time() > deadline:
                raise
            time.sleep(0.02)


def empty_at(dfd: int, timeout: float = 10.0) -> None:
    """Kill what is in the cgroup open as dfd (cgroup.kill, else pidfds) and wait for it to
    empty. Only our own scratch cgroups are ever passed here."""
    try:
        write_at(dfd, "cgroup.kill", "1")
    except OSError:
        for pid in procs_at(dfd):
            try:
                pfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if pid in procs_at(dfd):
                    signal.pidfd_send_signal(pfd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(pfd)
    deadline = time.time() + timeout
    while procs_at(dfd) and time.time() < deadline:
        time.sleep(0.02)


def spawn_at(dfd: int, argv, **kw) -> subprocess.Popen:
    """argv started inside the cgroup open as dfd: it joins through the fd (no path)."""
    def join():
        write_at(dfd, "cgroup.procs", str(os.getpid()))
    return subprocess.Popen(argv, preexec_fn=join, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def hostile_name(i: int):
    """Names a tenant may give its cgroups: long, not UTF-8, tab, spaces, quotes, a
    backslash (the kernel refuses a newline in a cgroup name: EINVAL)."""
    kind = i % 5
    if kind == 0:
        return f"c{i}-" + "x" * (LONG - len(f"c{i}-"))
    if kind == 1:
        return f"c{i}-".encode() + b"\xff\xfe\x80bad"
    if kind == 2:
        return f"c{i} -> \x1b[31m red"
    if kind == 3:
        return f"c{i}\ttab \"quoted\" \\ é"
    return f"c{i}"


# -- the soak ------------------------------------------------------------------------------------
class Soak:
    def __init__(self, opts, sc: Scratch):
        self.opts, self.sc = opts, sc
        self.seconds = opts.minutes * 60
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.made = self.removed = 0
        self.touchers: list[dict] = []     # {where, pid, started, outcome, latency}
        self.innocents: list[dict] = []    # {where, proc, until}
        self.problems: list[str] = []      # errors of the soak itself (not beanwatch's)
        self.deep_fds: list[int] = []
        self.open_fds: list[int] = []

    # ---- set-up
    def build(self) -> list[str]:
        sc = self.sc
        self.churn = sc.make("churn")
        self.home = sc.make("home")     # the mover's, outside the watched parent
        self.svc = sc.make("svc")
        self.innocent = sc.make("innocent")
        self.deep_top = sc.make("deep")
        parts = [f"{i:02d}" + "d" * (LONG - 2) for i in range(DEPTH)]
        self.deep_fds = [os.open(sc.path(self.deep_top), DIR)]
        for part in parts:
            os.mkdir(part, dir_fd=self.deep_fds[-1])
            self.deep_fds.append(os.open(part, DIR, dir_fd=self.deep_fds[-1]))
        self.deep_leaf = parts[-1]
        self.deep = self.deep_top + "/" + "/".join(parts)
        return ["--limit", f"{self.churn}=256M", "--limit", f"{self.svc}=256M",
                "--limit", f"{self.deep}=96M", "--limit", f"{self.innocent}=512M"]

    def start_innocents(self) -> None:
        sc = self.sc
        steady = sc.make("innocent/steady")
        reserver = sc.make("innocent/reserver")
        odd = os.path.join(os.fsencode(sc.path(self.innocent)), b"odd\xff\xfename")
        os.mkdir(odd)
        for where, steps in [(steady, ["touch:128M", "hold"]),
                             (reserver, ["reserve:2G", "touch:32M", "hold"])]:
            p = sc.spawn(where, WORKLOAD + steps, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
            self.innocents.append({"where": where, "proc": p, "until": None})
        fd = os.open(odd, DIR)
        self.open_fds.append(fd)
        p = spawn_at(fd, WORKLOAD + ["touch:64M", "hold"])
        self.sc.children.append(p)
        self.innocents.append({"where": self.innocent + "/odd\\xff\\xfename", "proc": p,
                               "until": None})
        # the churn's mover: a small process entering every churned cgroup
        # (outside the watched parent between visits: a kill there must not end it)
        self.mover = sc.spawn(self.home, ["sleep", str(int(self.seconds) + 600)])
        self.innocents.append({"where": self.home, "proc": self.mover, "until": None})

    # ---- touchers
    def toucher(self, dfd: int, where: str, size: str = "1G") -> dict:
        p = spawn_at(dfd, WORKLOAD + [f"touch:{size}", "hold"])
        self.sc.children.append(p)
        t = {"where": where, "pid": p.pid, "started": time.time(), "proc": p,
             "outcome": None, "latency": None}
        with self.lock:
            self.touchers.append(t)
        return t

    def await_kill(self, t: dict) -> None:
        p = t["proc"]
        try:
            code = p.wait(timeout=self.opts.kill_deadline)
        except subprocess.TimeoutExpired:
            t["outcome"] = "missed"
            p.kill()
            p.wait()
            return
        t["latency"] = round(time.time() - t["started"], 3)
        t["outcome"] = "killed" if code == -signal.SIGKILL else f"exit {code}"

    # ---- threads
    def run_thread(self, fn):
        def body():
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a soak failure is reported, not hidden
                with self.lock:
                    self.problems.append(f"{fn.__name__}: {type(e).__name__}: {e}")
                self.stop.set()
        th = threading.Thread(target=body, name=fn.__name__, daemon=True)
        th.start()
        return th

    def churn_loop(self) -> None:
        """Makes, enters and removes cgroups at the pace that reaches the target count."""
        parent = os.open(self.sc.path(self.churn), DIR)
        home = os.open(self.sc.path(self.home), DIR)
        pid = str(self.mover.pid)
        pace = self.seconds / max(1, self.opts.cgroups)
        start, i = time.time(), 0
        next_toucher = start + self.opts.toucher_every
        try:
            while not self.stop.is_set() and self.made < self.opts.cgroups:
                i += 1
                if i % 50 == 0:
                    self.churn_chain(parent, home, pid, i)
                else:
                    name = hostile_name(i)
                    os.mkdir(name, dir_fd=parent)
                    fd = os.open(name, DIR, dir_fd=parent)
                    try:
                        write_at(fd, "cgroup.procs", pid)
                        write_at(home, "cgroup.procs", pid)
                    finally:
                        os.close(fd)
                    rmdir_at(parent, name)
                    with self.lock:
                        self.made += 1
                        self.removed += 1
                if time.time() >= next_toucher:
                    self.churn_toucher(parent, i)
                    next_toucher = time.time() + self.opts.toucher_every
                # keep to the pace: the count is reached by the end, not in a burst
                ahead = start + self.made * pace - time.time()
                if ahead > 0:
                    self.stop.wait(ahead)
        finally:
            os.close(parent)
            os.close(home)

    def churn_chain(self, parent: int, home: int, pid: str, i: int) -> None:
        fds = [parent]
        names = [f"{i}-{k:02d}" + "z" * (LONG - len(f"{i}-{k:02d}")) for k in range(DEPTH)]
        try:
            for name in names:
                os.mkdir(name, dir_fd=fds[-1])
                fds.append(os.open(name, DIR, dir_fd=fds[-1]))
                with self.lock:
                    self.made += 1
            write_at(fds[-1], "cgroup.procs", pid)
            write_at(home, "cgroup.procs", pid)
        finally:
            for k in range(len(fds) - 1, 0, -1):
                os.close(fds[k])
                rmdir_at(fds[k - 1], names[k - 1])
                with self.lock:
                    self.removed += 1

    def churn_toucher(self, parent: int, i: int) -> None:
        """A toucher in a fresh hostile-named child of the churned parent: killed by the
        parent's 256 MiB limit; the child is removed afterwards."""
        name = hostile_name(i)
        name = b"t" + name if isinstance(name, bytes) else "t" + name
        os.mkdir(name, dir_fd=parent)
        fd = os.open(name, DIR, dir_fd=parent)
        try:
            t = self.toucher(fd, f"{self.churn}/{os.fsdecode(name)!r}")
            self.await_kill(t)
            empty_at(fd)
        finally:
            os.close(fd)
        rmdir_at(parent, name)
        with self.lock:
            self.made += 1
            self.removed += 1

    def service_loop(self) -> None:
        """What systemctl restart does, every restart_every seconds: kill, rmdir, mkdir the
        same path; then a toucher (odd restarts) or an innocent (even ones)."""
        top = os.open(self.sc.path(self.sc.prefix), DIR)
        name = os.path.basename(self.svc)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                self.end_innocents(self.svc)     # alive until now? then ended by us
                fd = os.open(name, DIR, dir_fd=top)
                empty_at(fd)
                os.close(fd)
                rmdir_at(top, name)
                os.mkdir(name, dir_fd=top)
                with self.lock:
                    self.made += 1
                    self.removed += 1
                fd = os.open(name, DIR, dir_fd=top)
                try:
                    if n % 2:
                        self.await_kill(self.toucher(fd, self.svc))
                    else:
                        p = spawn_at(fd, WORKLOAD + ["touch:64M", "hold"])
                        self.sc.children.append(p)
                        with self.lock:
                            self.innocents.append({"where": self.svc, "proc": p, "until": None})
                finally:
                    os.close(fd)
                self.stop.wait(self.opts.restart_every)
        finally:
            os.close(top)

    def deep_loop(self) -> None:
        """The deepest cgroup of the watched chain past PATH_MAX: a toucher, then its cgroup
        removed and made again (a restart), in turns."""
        n = 0
        while not self.stop.is_set():
            n += 1
            leaf_parent = self.deep_fds[-2]
            if n % 2 == 0:
                empty_at(self.deep_fds[-1])
                os.close(self.deep_fds[-1])
                rmdir_at(leaf_parent, self.deep_leaf)
                os.mkdir(self.deep_leaf, dir_fd=leaf_parent)
                self.deep_fds[-1] = os.open(self.deep_leaf, DIR, dir_fd=leaf_parent)
                with self.lock:
                    self.made += 1
                    self.removed += 1
            self.await_kill(self.toucher(self.deep_fds[-1], self.deep, "512M"))
            self.stop.wait(self.opts.restart_every)

    def end_innocents(self, where: str) -> None:
        """Innocents of where are ended by us now: each must still be alive."""
        with self.lock:
            for inn in self.innocents:
                if inn["where"] == where and inn["until"] is None:
                    p = inn["proc"]
                    inn["until"] = time.time()
                    inn["alive_at_end"] = p.poll() is None
                    inn["returncode"] = p.returncode
                    if p.poll() is None:
                        p.kill()
                    p.wait()

    # ---- main
    def run(self, w: Watcher) -> dict:
        samples = []
        threads = [self.run_thread(f) for f in (self.churn_loop, self.service_loop,
                                                 self.deep_loop)]
        start = time.time()
        every = 10.0 if self.seconds > 300 else 2.0
        cpu0 = cpu_seconds(w.pid)
        try:
            while time.time() - start < self.seconds and not self.stop.is_set():
                if w.proc.poll() is not None:
                    self.problems.append(f"beanwatch exited {w.proc.returncode}")
                    break
                samples.append({"t": round(time.time() - start, 1),
                                "rss_mib": round(vm_rss(w.pid) / MiB, 2),
                                "cpu_s": round(cpu_seconds(w.pid) - cpu0, 2),
                                "made": self.made})
                self.stop.wait(every)
        finally:
            self.stop.set()
            for th in threads:
                th.join(timeout=self.opts.kill_deadline + 30)
        if w.proc.poll() is None:
            samples.append({"t": round(time.time() - start, 1),
                            "rss_mib": round(vm_rss(w.pid) / MiB, 2),
                            "cpu_s": round(cpu_seconds(w.pid) - cpu0, 2), "made": self.made})
        for inn in self.innocents:   # the ones still running at the end
            if inn["until"] is None:
                inn["alive_at_end"] = inn["proc"].poll() is None
                inn["returncode"] = inn["proc"].returncode
                inn["until"] = time.time()
        return {"samples": samples, "elapsed_s": round(time.time() - start, 1)}

    def cleanup(self) -> None:
        for fd in self.open_fds:
            os.close(fd)
        if self.deep_fds:
            # the chain is past PATH_MAX: Scratch's path-based cleanup cannot reach it
            empty_at(self.deep_fds[1])
            for k in range(len(self.deep_fds) - 1, 0, -1):
                os.close(self.deep_fds[k])
                name = f"{k - 1:02d}" + "d" * (LONG - 2)
                try:
                    rmdir_at(self.deep_fds[k - 1], name)
                except OSError as e:
                    self.problems.append(f"deep chain: rmdir: {e}")
            os.close(self.deep_fds[0])
            self.deep_fds = []


def judge(soak: Soak, w: Watcher, run: dict, opts) -> dict:
    kill_due = {soak.churn, soak.svc, soak.deep}
    actions = [r for r in w.records if r["event"] == "action"]
    wrong_actions = [r for r in actions if r["cgroup"] not in kill_due
                     or r.get("action") != "kill" or r.get("exact_bytes") is None
                     or r["exact_bytes"] <= r["limit_bytes"]]
    innocents_killed = [i["where"] for i in soak.innocents if not i.get("alive_at_end")]
    done = [t for t in soak.touchers if t["outcome"] is not None]
    missed = [t["where"] for t in done if t["outcome"] == "missed"]
    odd_end = [f"{t['where']}: {t['outcome']}" for t in done
               if t["outcome"] not in ("killed", "missed")]
    kills = [r for r in actions if r["cgroup"] in kill_due and r.get("ok")]
    over = [(r["exact_bytes"] - r["limit_bytes"]) / MiB for r in kills
            if r.get("exact_bytes") is not None]
    latency = [t["latency"] for t in done if t["outcome"] == "killed"]
    areas = {soak.churn: "churn (a fresh child of the watched parent)",
             soak.svc: "service (just made again)", soak.deep: "deep (past PATH_MAX)"}
    by_area = {}
    for cg, label in areas.items():
        o = sorted((r["exact_bytes"] - r["limit_bytes"]) / MiB for r in kills
                   if r["cgroup"] == cg and r.get("exact_bytes") is not None)
        by_area[label] = {"kills": len(o),
                          "median": round(statistics.median(o), 1) if o else None,
                          "max": round(o[-1], 1) if o else None}
    errors = [r for r in w.records if r["event"] == "error"]
    # the five largest overshoots, each with what beanwatch recorded about its cgroup from
    # the toucher's start on (seconds since it started): where the time went
    started = {t["pid"]: t["started"] for t in soak.touchers}
    worst = []
    for r in sorted(kills, key=lambda r: -(r.get("exact_bytes") or 0) + r["limit_bytes"])[:5]:
        t0 = next((started[p] for p in r.get("pids", ()) if p in started), r["ts"] - 1.0)
        trail = [[round(x["ts"] - t0, 3), x["event"], x.get("mode"),
                  None if x.get("exact_bytes") is None else round(x["exact_bytes"] / MiB, 1),
                  None if x.get("estimate_bytes") is None else round(x["estimate_bytes"] / MiB)]
                 for x in w.records if x["cgroup"] == r["cgroup"] and t0 - 0.05 <= x["ts"] <= r["ts"]
                 and x["event"] != "snapshot"]
        worst.append({"cgroup": areas.get(r["cgroup"], r["cgroup"]),
                      "overshoot_mib": round((r["exact_bytes"] - r["limit_bytes"]) / MiB, 1),
                      "after_s": round(r["ts"] - t0, 3), "trail": trail[-25:]})
    rss = [s["rss_mib"] for s in run["samples"]]
    warm = [s["rss_mib"] for s in run["samples"] if s["t"] >= min(60.0, run["elapsed_s"] / 4)]
    counts = {}
    for r in w.records:
        counts[r["event"]] = counts.get(r["event"], 0) + 1
    return {
        "minutes": opts.minutes, "elapsed_s": run["elapsed_s"],
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kernel": os.uname().release,
        "cgroups_made": soak.made, "cgroups_removed": soak.removed,
        "rss_mib": {"first": rss[0], "after_warmup": warm[0] if warm else None,
                    "max": max(rss), "last": rss[-1],
                    "max_after_warmup": max(warm) if warm else None},
        "cpu_share": round(run["samples"][-1]["cpu_s"] / max(1.0, run["elapsed_s"]), 4),
        "errors": len(errors), "error_details": [r.get("detail") for r in errors][:10],
        "stderr_lines": len(w.stderr), "stderr_tail": w.stderr[-10:],
        "stderr_errors": sum(1 for line in w.stderr if "Traceback" in line or "rror" in line),
        "touchers": len(done), "kills": len(kills),
        "missed_kills": len(missed), "missed": missed[:20],
        "toucher_other_end": odd_end[:20],
        "wrong_kills": len(wrong_actions) + len(innocents_killed),
        "wrong_actions": [{k: r.get(k) for k in ("cgroup", "action", "exact_bytes",
                                                 "limit_bytes", "detail")}
                          for r in wrong_actions][:20],
        "innocents": len(soak.innocents), "innocents_killed": innocents_killed,
        "overshoot_mib": {"median": round(statistics.median(over), 1) if over else None,
                          "max": round(max(over), 1) if over else None, "by_area": by_area,
                          "over_64": sum(1 for o in over if o > 64), "worst": worst},
        "kill_latency_s": {"median": round(statistics.median(latency), 2) if latency else None,
                           "max": round(max(latency), 2) if latency else None},
        "records": counts,
        "soak_problems": soak.problems,
        "exit_code": w.proc.returncode,
        "samples": run["samples"],
    }


def markdown(rep: dict) -> str:
    r = rep["rss_mib"]
    return "\n".join([
        f"# soak {rep['minutes']:g} min ({rep['when']}, kernel {rep['kernel']})", "",
        "| figure | value |", "|---|---|",
        f"| cgroups made / removed | {rep['cgroups_made']} / {rep['cgroups_removed']} |",
        f"| beanwatch RSS MiB: first, after warm-up, max after warm-up, last | "
        f"{r['first']}, {r['after_warmup']}, {r['max_after_warmup']}, {r['last']} |",
        f"| beanwatch CPU (share of one core) | {rep['cpu_share']:.3f} |",
        f"| errors: records / stderr lines naming an error (of all) | {rep['errors']} / "
        f"{rep['stderr_errors']} (of {rep['stderr_lines']}) |",
        f"| touchers / kills / missed kills | {rep['touchers']} / {rep['kills']} / "
        f"{rep['missed_kills']} |",
        f"| wrong kills (innocents killed: {len(rep['innocents_killed'])} of "
        f"{rep['innocents']}) | {rep['wrong_kills']} |",
        f"| overshoot MiB median / max | {rep['overshoot_mib']['median']} / "
        f"{rep['overshoot_mib']['max']} |",
        *[f"| overshoot MiB median / max, {label} | {v['median']} / {v['max']} ({v['kills']} kills) |"
          for label, v in rep["overshoot_mib"]["by_area"].items()],
        f"| toucher start to death s median / max | {rep['kill_latency_s']['median']} / "
        f"{rep['kill_latency_s']['max']} |",
        f"| soak problems | {'; '.join(rep['soak_problems']) or 'none'} |",
        f"| beanwatch exit | {rep['exit_code']} |", ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cgroups", type=int, default=None,
                    help="cgroups to churn (default 10,000 per 30 minutes, at least 300)")
    ap.add_argument("--restart-every", type=float, default=10.0,
                    help="seconds between service restarts (and deep-chain turns)")
    ap.add_argument("--toucher-every", type=float, default=15.0,
                    help="seconds between touchers in the churned parent")
    ap.add_argument("--kill-deadline", type=float, default=30.0,
                    help="a toucher alive this long after its start is a missed kill")
    ap.add_argument("--interval", default="0.5")
    ap.add_argument("--json", dest="json_out")
    opts = ap.parse_args()
    if opts.minutes <= 0:
        ap.error("--minutes must be positive")
    if opts.cgroups is None:
        opts.cgroups = max(300, round(10_000 * opts.minutes / 30))
    if os.geteuid() != 0:
        print("soak.py: needs root (cgroups, BPF)", file=sys.stderr)
        return 2
    with Scratch("soak") as sc:
        soak = Soak(opts, sc)
        w = None
        try:
            limits = soak.build()
            w = Watcher([*limits, "--action", "kill", "--interval", opts.interval])
            w.started(timeout=120)
            soak.start_innocents()
            time.sleep(2)
            run = soak.run(w)
            code = w.stop()
            rep = judge(soak, w, run, opts)
            rep["exit_code"] = code
        finally:
            if w is not None and w.proc.poll() is None:
                stop_process(w.proc)
            soak.stop.set()
            soak.cleanup()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"soak-{stamp}")
    for path, text in ((base + ".json", json.dumps(rep, indent=1, default=str)),
                       (base + ".md", markdown(rep))):
        with open(path, "w") as f:
            f.write(text)
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            json.dump(rep, f, indent=1, default=str)
    print(markdown(rep))
    print(f"soak: results in {base}.json and .md")
    bad = (rep["errors"] or rep["stderr_errors"] or rep["wrong_kills"] or rep["missed_kills"] or rep["soak_problems"]
           or rep["exit_code"] != 0 or rep["toucher_other_end"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
