"""The cost of each tier of usage: RSS sum (statm), PSS sum (smaps_rollup), unique pages
(pagemap PFNs), in ms per GiB of RSS, over real processes (issue 11).

Workloads (each of about SIZE of memory, by default 1 GiB):
  private  4 processes, each touching SIZE/4 of its own anonymous memory
  forked   one process touches SIZE, then forks 3 children: 4 x SIZE of RSS, SIZE once
  file     4 processes mapping one SIZE file (tmpfs) shared and reading all of it
For each: the figures each tier gives, and the time it takes to read them (median of REPS).

usage: tiers.py [--size MIB] [--reps N] [--json PATH]   (needs root for pagemap PFNs)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB, GiB = 1 << 20, 1 << 30

CHILD = r"""
import mmap, os, sys, time
mode, size, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
PAGE = mmap.PAGESIZE
if mode == "file":
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    total = sum(m[off] for off in range(0, size, PAGE))
else:
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, size, PAGE):
        m[off] = 1
kids = []
if mode == "forked":
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            m[0] = 2         # one page of its own; the rest stays shared copy-on-write
            sys.stdout.write(f"{os.getpid()}\n"); sys.stdout.flush()
            time.sleep(3600); os._exit(0)
        kids.append(pid)
    time.sleep(0.2)
sys.stdout.write(f"{os.getpid()}\nready\n"); sys.stdout.flush()
time.sleep(3600)
"""


def statm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def rollup_pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f.read().splitlines():
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def unique_pfns(pids, into: set) -> None:
    """Every present page's frame number, from /proc/PID/pagemap over /proc/PID/maps."""
    for pid in pids:
        with open(f"/proc/{pid}/maps", "rb") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split(None, 1)[0].split(b"-"))
                n = (hi - lo) // PAGE
                pm.seek(lo // PAGE * 8)
                data = pm.read(n * 8)
                for entry in struct.unpack(f"<{len(data) // 8}Q", data):
                    if entry >> 63:                           # present
                        into.add(entry & ((1 << 55) - 1))     # PFN (root only, else 0)


def timed(fn, reps):
    times, value = [], None
    for _ in range(reps):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return value, statistics.median(times)


def start(mode: str, size: int, path: str) -> tuple[list[subprocess.Popen], list[int]]:
    if mode == "forked":
        n, each = 1, size
    else:
        n, each = 4, (size // 4 if mode == "private" else size)
    procs, pids = [], []
    for _ in range(n):
        p = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(each), path],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        for line in p.stdout:
            if line.strip() == "ready":
                break
            pids.append(int(line))
    return procs, pids


def one(mode: str, size: int, reps: int, path: str) -> dict:
    procs, pids = start(mode, size, path)
    try:
        rss, t_rss = timed(lambda: sum(statm_rss(p) for p in pids), reps)
        pss, t_pss = timed(lambda: sum(rollup_pss(p) for p in pids), reps)

        def pages():
            s = set()
            unique_pfns(pids, s)
            return len(s) * PAGE
        uniq, t_uniq = timed(pages, max(1, reps // 2))
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        subprocess.run(["true"])
    gib = rss / GiB
    return {"workload": mode, "processes": len(pids), "rss_bytes": rss, "pss_bytes": pss,
            "unique_bytes": uniq,
            "ms": {"rss": t_rss * 1e3, "pss": t_pss * 1e3, "unique": t_uniq * 1e3},
            "ms_per_gib_rss": {"rss": t_rss * 1e3 / gib, "pss": t_pss * 1e3 / gib,
                               "unique": t_uniq * 1e3 / gib}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB per workload")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    size = a.size * MiB
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="bw-tiers-") as f:
        f.truncate(size)
        f.flush()
        results = [one(m, size, a.reps, f.name) for m in ("private", "forked", "file")]
    print(f"{'workload':<8} {'procs':>5} {'RSS sum':>9} {'PSS':>9} {'unique':>9} | "
          f"{'statm':>14} {'smaps_rollup':>14} {'pagemap':>14}   (ms; ms/GiB of RSS)")
    for r in results:
        ms, per = r["ms"], r["ms_per_gib_rss"]
        print(f"{r['workload']:<8} {r['processes']:>5} {r['rss_bytes'] / MiB:>7.0f}Mi "
              f"{r['pss_bytes'] / MiB:>7.0f}Mi {r['unique_bytes'] / MiB:>7.0f}Mi | "
              + " ".join(f"{ms[k]:>6.2f};{per[k]:>7.2f}" for k in ("rss", "pss", "unique")))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"page_size": PAGE, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
