"""Event storm: a tenant moving a process between two of its own cgroups in a loop.

The session runs in this process (so its CPU is ours: RUSAGE_SELF); a mover child writes
its own PID alternately into two cgroups' cgroup.procs as fast as it can. Each move sends an
EV_MOVED. Reported: moves/s made, events/s the session received and handled, events
throttled, and the session's CPU (share of one core). Run twice: with the per-cgroup rate
limit (the default) and without it, to give the ceiling: events/s per full core.

    sudo .venv/bin/python bench/storm.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import Scratch  # noqa: E402  (puts the repository on sys.path)

from observer.app.runtime import Options, build_session, open_host  # noqa: E402
from observer.app.session import Watch  # noqa: E402
from observer.core.config import Action, Limit  # noqa: E402
from observer.core.ratelimit import Buckets  # noqa: E402

MOVER = r"""
import os, sys, time
a, b, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
pid = str(os.getpid()).encode()
fa, fb = os.open(a, os.O_WRONLY), os.open(b, os.O_WRONLY)
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        os.write(fa, pid); os.write(fb, pid)
    n += 200
print(n)
"""


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_once(seconds: float, limited: bool) -> dict:
    host = open_host()
    with Scratch("storm") as sc:
        top = sc.make("tenant")
        a, b = sc.make("tenant/a"), sc.make("tenant/b")
        watch = Watch(top, host.cg.cgroup_id(top), Limit(1 << 30, None, Action.REPORT))
        session = build_session(host, [watch], lambda rec: None, Options(interval=1.0))
        if not limited:
            session.buckets = Buckets(1e12, 1e12)
        session.start()
        try:
            session.run(0.5, lambda: False)   # settle
            seen0, thr0 = session.events_seen, session.events_throttled
            lost0 = session.last_stats[0]
            mover = sc.spawn(sc.make("tenant/home"),
                             [sys.executable, "-c", MOVER, sc.path(a) + "/cgroup.procs",
                              sc.path(b) + "/cgroup.procs", str(seconds)],
                             stdout=subprocess.PIPE, text=True)
            t0, c0 = time.monotonic(), cpu_self()
            session.run(seconds, lambda: mover.poll() is not None)
            wall, cpu = time.monotonic() - t0, cpu_self() - c0
            moves = int(mover.communicate(timeout=30)[0] or 0)
            session.reconcile()
            seen = session.events_seen - seen0
            return {"rate_limited": limited, "seconds": round(wall, 2), "moves_per_s": round(moves / wall),
                    "events_per_s": round(seen / wall),
                    "throttled_per_s": round((session.events_throttled - thr0) / wall),
                    "lost": session.last_stats[0] - lost0,
                    "session_cpu": round(cpu / wall, 3),
                    "events_per_s_per_core": round(seen / cpu) if cpu else None}
        finally:
            session.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("storm: needs root", file=sys.stderr)
        return 1
    for limited in (True, False):
        print(json.dumps(run_once(args.seconds, limited)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
