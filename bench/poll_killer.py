"""A 100 ms polling killer to compare reaction with, as earlyoom-style tools work.

Every PERIOD, sums the RSS of a cgroup's processes from /proc and SIGKILLs them all when the
sum is above LIMIT.

Prints "ready" once started, and one JSON line per kill: pids, summed rss_bytes, ts.
usage: poll_killer.py CGROUP_DIR LIMIT_BYTES [PERIOD_S]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    procs_file = os.path.join(sys.argv[1], "cgroup.procs")
    limit = int(sys.argv[2])
    period = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    print("ready", flush=True)
    next_tick = time.monotonic()
    while not stop:
        try:
            with open(procs_file) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            return 0
        total = sum(rss_of(p) for p in pids)
        if total > limit:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            print(json.dumps({"pids": pids, "rss_bytes": total, "ts": time.time()}), flush=True)
        next_tick += period
        time.sleep(max(0.0, next_tick - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
