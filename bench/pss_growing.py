"""The PSS walk (smaps_rollup) of a process at the limit while it grows at fault speed,
against the same process stopped (issue 11: why the cgroup is held frozen while PSS is read).

A toucher (bench/programs/toucher.c, THP off) is started; at SIZE MiB of RSS it is read
once as it runs, or stopped (SIGSTOP) and read. Runs alternate. Prints the read time, in ms
and ms per GiB of RSS, and how far RSS grew during the read (medians and max).

usage: pss_growing.py [--size MIB] [--runs N]   (builds the toucher with cc; no BPF, no cgroups)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=12)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "toucher")
        subprocess.run(["cc", "-O2", "-o", exe, os.path.join(HERE, "programs", "toucher.c")],
                       check=True)
        out = {"growing": [], "stopped": []}
        for n in range(2 * opts.runs):
            kind = "growing" if n % 2 == 0 else "stopped"
            p = subprocess.Popen([exe, str(12 * opts.size)])
            try:
                while rss(p.pid) < opts.size << 20:
                    if p.poll() is not None:
                        raise RuntimeError("the toucher ended before the size")
                if kind == "stopped":
                    os.kill(p.pid, signal.SIGSTOP)
                    time.sleep(0.005)
                before = rss(p.pid)
                t = time.perf_counter()
                with open(f"/proc/{p.pid}/smaps_rollup") as f:
                    f.read()
                ms = (time.perf_counter() - t) * 1e3
                out[kind].append((ms, before, rss(p.pid) - before))
            finally:
                p.kill()
                p.wait()
    for kind, v in out.items():
        ms = [x[0] for x in v]
        per_gib = [x[0] / (x[1] / (1 << 30)) for x in v]
        grew = [x[2] / (1 << 20) for x in v]
        print(f"{kind}: {len(v)} reads at {opts.size} MiB: {statistics.median(ms):.1f} ms "
              f"(max {max(ms):.1f}), {statistics.median(per_gib):.0f} ms per GiB of RSS; RSS grew "
              f"{statistics.median(grew):.1f} MiB during the read (max {max(grew):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
