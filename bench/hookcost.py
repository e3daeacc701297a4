"""What each step of an mmap_lock_released program costs here, from BPF's run statistics.

usage: hookcost.py [--set probe|btf] [--reps N] [PAIRS]
Loads one variant at a time on mmap_lock:mmap_lock_released (raw), each adding a step to the
one before (helpers, probe reads, map lookups, atomics), runs PAIRS mmap+munmap pairs of 256
KiB pinned to the last CPU, and prints the runs per pair and the average ns per run with the
statistics on (the median of N rounds, the rows rotated within each round). The differences
between rows are the steps' costs (the statistics add their own clock reads to every row
alike: the empty row). Sets: probe (helpers and probe reads, as before 5.11) and btf (direct
loads through the current task's BTF pointer, per-task storage next to the procs lookup).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Scratch, bpf_run_stats, build_all  # noqa: E402

sys.path.insert(0, ROOT)
from observer.kernel.btf import BTF  # noqa: E402
from observer.kernel.loader import kernel_offsets  # noqa: E402

PRELUDE = r"""
BPF_HASH(procs, u32, struct st, 131072);
BPF_HASH(ctl, u64, struct st, 16384);
BPF_HASH(cnt, u64, struct st, 16384);
BPF_ARRAY(arr, struct st, 16384);
BPF_PERCPU_ARRAY(stats, u64, 8);
BPF_TASK_STORAGE(tstore, struct st);
"""
STRUCT = "struct st { long long a, b, c, d; };\n"
STEPS = [
    ("empty", ""),
    ("+ current task, its mm (probe read), compare",
     "void *t = (void *)bpf_get_current_task(); void *mm = 0;"
     "bpf_probe_read_kernel(&mm, 8, (char *)t + OFF_TASK_MM);"
     "if (mm != (void *)ctx->args[0]) return 0;"),
    ("+ pid_tgid, cgroup id helpers",
     "u32 tgid = bpf_get_current_pid_tgid() >> 32; u64 cg = bpf_get_current_cgroup_id();"),
    ("+ total_vm (probe read)",
     "long long vm = 0; bpf_probe_read_kernel(&vm, 8, (char *)mm + OFF_MM_TOTAL_VM);"),
    ("+ procs hash lookup (u32)",
     "struct st z = {}; struct st *p = procs.lookup(&tgid);"
     "if (!p) { procs.insert(&tgid, &z); return 0; }"),
    ("+ xchg on it",
     "long long old = __sync_lock_test_and_set(&p->a, vm); if (old == vm) vm++;"),
    ("+ cnt hash lookup (u64) and atomic add-fetch",
     "struct st *c = cnt.lookup(&cg); if (!c) { cnt.insert(&cg, &z); return 0; }"
     "long long now = __sync_fetch_and_add(&c->a, vm - old) + vm - old;"),
    ("+ ctl hash lookup (u64) and compare",
     "struct st *l = ctl.lookup(&cg); if (!l) { ctl.insert(&cg, &z); return 0; }"
     "if (now > l->b) l->c = 1;"),
    ("+ per-CPU stats increment",
     "int k = 3; u64 *s = stats.lookup(&k); if (s) (*s)++;"),
    ("+ one more array lookup (slot 5)",
     "int ix = 5; struct st *ar = arr.lookup(&ix); if (ar) __sync_fetch_and_add(&ar->a, 1);"),
]

BTF_STEPS = [
    ("empty", ""),
    ("+ current task (BTF), its mm (direct load), compare, load again (volatile)",
     "char *t = (char *)bpf_get_current_task_btf(); char *mm = *(char **)(t + OFF_TASK_MM);"
     "if (!mm || (u64)mm != ctx->args[0]) return 0;"
     "mm = *(char * volatile *)(t + OFF_TASK_MM); if (!mm) return 0;"),
    ("+ tgid, cgroup id (direct loads)",
     "u32 tgid = *(u32 *)(t + OFF_TASK_TGID);"
     "char *cs = *(char **)(t + OFF_TASK_CGROUPS); char *cg = *(char **)(cs + OFF_CSS_SET_DFL_CGRP);"
     "char *kn = *(char **)(cg + OFF_CGROUP_KN); u64 cgid = *(u64 *)(kn + OFF_KERNFS_NODE_ID);"),
    ("+ total_vm (direct load)",
     "long long vm = *(long long *)(mm + OFF_MM_TOTAL_VM);"),
    ("+ task storage get (current task, create)",
     "struct st *ts = tstore.task_storage_get(t, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);"
     "if (!ts) return 0; ts->a = vm;"),
    ("+ procs hash lookup (u32)",
     "struct st z = {}; struct st *p = procs.lookup(&tgid);"
     "if (!p) { procs.insert(&tgid, &z); return 0; }"
     "long long old = __sync_lock_test_and_set(&p->a, vm); if (old == vm) vm++;"),
    ("+ leaves hash lookup (u64), atomic add-fetch, bound compare",
     "struct st *c = cnt.lookup(&cgid); if (!c) { cnt.insert(&cgid, &z); return 0; }"
     "long long now = __sync_fetch_and_add(&c->a, vm - old) + vm - old;"
     "if (now > c->b) c->c = 1;"),
]
SETS = {"probe": STEPS, "btf": BTF_STEPS}


def program(steps, n: int, offsets: dict) -> str:
    defs = "".join(f"#define {k} {v}\n" for k, v in offsets.items())
    body = "".join(code for _, code in steps[:n + 1])
    return (defs + STRUCT + PRELUDE
            + "RAW_TRACEPOINT_PROBE(mmap_lock_released) {" + body + " return 0; }\n")


def prog_stats(prog_fd: int) -> tuple[int, int]:
    info = {}
    with open(f"/proc/self/fdinfo/{prog_fd}") as f:
        for line in f:
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    return int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0))


def main() -> int:
    import argparse
    import statistics
    from bcc import BPF
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="probe", choices=sorted(SETS))
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("pairs", nargs="?", type=int, default=30000)
    a = ap.parse_args()
    steps, pairs = SETS[a.set], a.pairs
    offsets = kernel_offsets(BTF.from_file())
    cpu = os.cpu_count() - 1
    runs_per = {i: [] for i in range(len(steps))}
    ns = {i: [] for i in range(len(steps))}
    rates = {i: [] for i in range(len(steps))}
    with tempfile.TemporaryDirectory() as tmp, Scratch("hcost") as sc:
        vmops = build_all(tmp)["vmops"]
        W = sc.make("w")
        argv = [vmops, "mmap", str(pairs), "256"]
        for rnd in range(a.reps):
            order = list(range(len(steps)))
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for i in order:
                b = BPF(text=program(steps, i, offsets))
                try:
                    fn = b.funcs[b"raw_tracepoint__mmap_lock_released"]
                    sc.spawn(W, [vmops, "mmap", "2000", "256"], cpus={cpu}).wait()   # fill maps
                    with bpf_run_stats():
                        r0, t0 = prog_stats(fn.fd)
                        p = sc.spawn(W, argv, cpus={cpu}, stdout=subprocess.PIPE, text=True)
                        out, _ = p.communicate()
                        r1, t1 = prog_stats(fn.fd)
                    rates[i].append(float(out.split()[-1]))
                    runs_per[i].append((r1 - r0) / pairs)
                    ns[i].append((t1 - t0) / max(r1 - r0, 1))
                finally:
                    b.cleanup()
            print(f"round {rnd + 1}/{a.reps} done", file=sys.stderr, flush=True)
    print(f"set {a.set}, {a.reps} round(s) of {pairs} pairs, load {os.getloadavg()[0]:.2f}")
    print("| step | runs/pair | ns/run (stats on, median (min-max)) | step's cost | pairs/s |")
    print("|---|---|---|---|---|")
    prev = None
    for i, (name, _) in enumerate(steps):
        med = statistics.median(ns[i])
        cost = "" if prev is None else f"{med - prev:+.0f}"
        prev = med
        print(f"| {name} | {statistics.median(runs_per[i]):.2f} | {med:.0f} "
              f"({min(ns[i]):.0f}-{max(ns[i]):.0f}) | {cost} | {statistics.median(rates[i]):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
