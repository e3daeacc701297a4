"""A/B of the kernel side alone: beanwatch's probes of several trees, loaded without a
session, against no program and an empty raw-tracepoint floor, in one run.

usage: probecost.py [--reps N] [--mode fast|slow] [--rows mmap,brk,faults] [--vm-reserve MIB]
                    [--pair-kib KIB] NAME=ROOT...
  ROOT: a beanwatch tree (a worktree or a detached snapshot); NAME "floor" is the empty
  program on the hooks of the mode. Each repetition runs every variant once, in rotated
  order, each right after a baseline run with no program; workloads pinned to the last CPU.
  --vm-reserve: the mmap and brk workloads first reserve MIB of address space (untouched):
  a bigger process, whose slack for waiting shrinks (1/64 of it, 256 KiB at least) is bigger.
  --pair-kib: the size of one mmap or brk pair (default 256; 512: each release is a change).
Prints, per variant and row: the median ratio to the baseline before it (min-max), and from
BPF's run statistics (a separate untimed pass): runs per operation x ns per run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Scratch, bpf_objects, bpf_run_stats, build_all, stop_process  # noqa: E402
import tracers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def workloads(bins, rows, reserve_mib=0, pair_kib=256):
    extra = ["0", str(reserve_mib)] if reserve_mib else []
    kib = str(pair_kib)
    table = {"mmap": ([bins["vmops"], "mmap", "15000", kib, *extra], 15000),
             "brk": ([bins["vmops"], "brk", "30000", kib, *extra], 30000),
             "faults": ([bins["faults"], "128", "32"], (128 + 32) * 256)}
    return {r: table[r] for r in rows}


def rate(sc, cg, argv, cpus) -> float:
    p = sc.spawn(cg, argv, cpus=cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    if p.returncode:
        raise RuntimeError(err)
    f = out.split()
    return float(f[f.index("rate") + 1])


def start(name, root, mode, cgdir):
    if name == "floor":
        hooks = tracers.FLOOR_FAST if mode == "fast" else tracers.FLOOR_SLOW
        argv = [sys.executable, os.path.join(HERE, "floor.py"), *hooks]
    else:
        argv = [sys.executable, os.path.join(HERE, "probe_hold.py"), root, mode, cgdir]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        stop_process(p)
        raise RuntimeError(f"{name}: did not start")
    return p


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mode", default="fast", choices=("fast", "slow"))
    ap.add_argument("--rows", default="mmap,brk,faults")
    ap.add_argument("--vm-reserve", type=int, default=0, metavar="MIB")
    ap.add_argument("--pair-kib", type=int, default=256, metavar="KIB")
    ap.add_argument("variants", nargs="+")
    a = ap.parse_args()
    variants = [v.split("=", 1) if "=" in v else (v, "") for v in a.variants]
    cpus = {os.cpu_count() - 1}
    with tempfile.TemporaryDirectory() as tmp, Scratch("pcost") as sc:
        bins = build_all(tmp)
        W = sc.make("w")
        wl = workloads(bins, a.rows.split(","), a.vm_reserve, a.pair_kib)
        reserve = None
        if a.mode == "slow":   # something mapped in W, as in the real slow column (not needed here)
            pass
        ratios = {n: {r: [] for r in wl} for n, _ in variants}
        cost = {n: {} for n, _ in variants}
        for rep in range(a.reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for name, root in order:
                for r, (argv, _) in wl.items():
                    rate(sc, W, argv, cpus)        # warm-up
                base = {r: rate(sc, W, argv, cpus) for r, (argv, _) in wl.items()}
                p = start(name, root, a.mode, sc.path(W))
                try:
                    time.sleep(0.2)
                    for r, (argv, _) in wl.items():
                        ratios[name][r].append(rate(sc, W, argv, cpus) / base[r])
                    if rep == 0:
                        with bpf_run_stats():
                            for r, (argv, ops) in wl.items():
                                before = [(int(x.get("run_cnt", 0)), int(x.get("run_time_ns", 0)))
                                          for x in bpf_objects(p.pid)["progs"]]
                                rate(sc, W, argv, cpus)
                                after = [(int(x.get("run_cnt", 0)), int(x.get("run_time_ns", 0)))
                                         for x in bpf_objects(p.pid)["progs"]]
                                runs = sum(x[0] for x in after) - sum(x[0] for x in before)
                                ns = sum(x[1] for x in after) - sum(x[1] for x in before)
                                cost[name][r] = (runs / ops, ns / runs if runs else 0.0)
                finally:
                    stop_process(p)
            print(f"rep {rep + 1}/{a.reps} done", file=sys.stderr, flush=True)
    print(f"mode {a.mode}, {a.reps} reps, vm reserve {a.vm_reserve} MiB, pairs {a.pair_kib} KiB, "
          f"workloads pinned to CPU {sorted(cpus)}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("| variant | " + " | ".join(wl) + " |")
    print("|---|" + "---|" * len(wl))
    for name, _ in variants:
        cells = []
        for r in wl:
            v = ratios[name][r]
            runs, ns = cost[name].get(r, (0, 0))
            cells.append(f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f}); "
                         f"{runs:.2f} x {ns:.0f} ns")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({"ratios": ratios, "cost": cost}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
