"""Runs every beanwatch benchmark and prints ratios against baselines measured in the same run.

Writes bench/results/latest.json and bench/results/latest.md. Needs root.
usage: run.py [--quick] [--only NAME[,NAME]] [--out DIR]   (BENCH_REPS=N: throughput repetitions)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from common import ROOT, build_all, machine, new_programs, prog_names, summary
import report
import tracers

# name -> module; each has run(ctx) -> {"tables": [...], "targets": [...], "raw": ...}
BENCHMARKS = ["throughput", "reaction", "selfcost", "scale", "switching"]


@dataclass
class Ctx:
    """What every benchmark gets: mode, built programs, where workloads run, shared logs."""

    quick: bool
    bins: dict
    tmp: str
    cpus: set = field(default_factory=set)
    startups: list = field(default_factory=list)   # beanwatch start-up times, every start
    has_bpftrace: bool = True
    t0: float = field(default_factory=time.time)

    @property
    def reps(self) -> int:
        return int(os.environ.get("BENCH_REPS", 2 if self.quick else 5))

    def now(self) -> float:
        return time.time()

    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def memory_max_available(mount: str) -> bool:
    """Whether the cgroup2 hierarchy has the memory controller (for memory.max)."""
    try:
        with open(os.path.join(mount, "cgroup.controllers")) as f:
            return "memory" in f.read().split()
    except OSError:
        return False


def interrupted(_sig, _frame):
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller scale")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(BENCHMARKS))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("run.py: needs root (loads BPF programs, makes cgroups)", file=sys.stderr)
        return 2
    names = [n for n in (opts.only.split(",") if opts.only else BENCHMARKS) if n]
    signal.signal(signal.SIGTERM, interrupted)   # unwind: tracers stopped, cgroups removed
    before = prog_names()
    load_start = os.getloadavg()
    start = time.time()
    results, tables, targets, errors = {}, [], [], {}
    with tempfile.TemporaryDirectory(prefix="beanwatch-bench-") as tmp:
        ctx = Ctx(quick=opts.quick, bins=build_all(tmp), tmp=tmp,
                  cpus={max(os.sched_getaffinity(0))}, has_bpftrace=tracers.have_bpftrace())
        host = machine()
        from observer.host.cgroupfs import find_mounts
        host["cgroup2"] = find_mounts().cgroup2
        host["memory_controller_cgroup2"] = memory_max_available(host["cgroup2"])
        host["workload_cpu"] = sorted(ctx.cpus)
        ctx.log(f"machine: {host}")
        for name in names:
            ctx.log(f"== {name}")
            try:
                res = importlib.import_module(name).run(ctx)
            except Exception as e:   # one failing benchmark does not hide the others
                errors[name] = "".join(traceback.format_exception(e))
                ctx.log(f"{name} failed: {e}")
                continue
            results[name] = res.get("raw")
            tables += res["tables"]
            targets += res["targets"]
    wall = time.time() - start
    left = new_programs(before)
    start_s = summary(ctx.startups)
    tables.append(report.targets_table(targets))
    header = (f"beanwatch benchmarks ({'quick' if opts.quick else 'full'}), "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}, wall {wall:.0f} s\n"
              f"machine: Linux {host['kernel']}, {host.get('cpu')}, {host['cores']} cores, "
              f"{host.get('memory_mib', 0) / 1024:.1f} GiB; workloads pinned to CPU "
              f"{host['workload_cpu']}; cgroup2 at {host['cgroup2']}"
              + ("" if host["memory_controller_cgroup2"] else " (no memory controller)")
              + f"\nload average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    footer = [f"beanwatch start-up (process start to first snapshot), {start_s['n']} starts: "
              f"median {start_s['median']:.2f} s ({start_s['min']:.2f}-{start_s['max']:.2f})"
              if start_s else "no beanwatch start measured",
              "BPF programs left loaded after the run: " + (", ".join(left) if left else "none")]
    footer += [f"benchmark {n} FAILED: {e.strip().splitlines()[-1]}" for n, e in errors.items()]
    print(header + "\n")
    for t in tables:
        print(report.text(t) + "\n")
    print("\n".join(footer))
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, "latest.json"), "w") as f:
        json.dump({"machine": host, "quick": opts.quick, "wall_s": wall, "tables": tables,
                   "targets": targets, "startup_s": ctx.startups, "left_loaded": left,
                   "errors": errors, "raw": results}, f, indent=1, default=str)
    with open(os.path.join(opts.out, "latest.md"), "w") as f:
        f.write("### " + header.replace("\n", "\n\n") + "\n\n")
        f.write("\n\n".join(report.markdown(t) for t in tables) + "\n\n")
        f.write("\n".join(f"- {line}" for line in footer) + "\n")
    return 1 if errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
