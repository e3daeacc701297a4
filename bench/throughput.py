"""Items 1-3: throughput of faults, mmap, brk and an unrelated syscall under each observer.

Page faults, mmap+munmap pairs, brk pairs (in the watched cgroup) and getppid (in another
cgroup), under every observer in turn with interleaved repetitions; each ratio against a run
with no observer made just before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import tracers
from common import Scratch, bpf_objects, bpf_run_stats, env_number, summary
from report import abs_cell, ratio_cell, target, text_cell

NONE_GAP = 1.2   # s: about an observer's start-up
COLUMNS = ["none", "none again", "bw fast", "bw trace", "floor fast", "bpftrace fast", "bw slow",
           "floor slow", "bpftrace slow", "bpftrace faults", "bw syscalls", "naive bcc",
           "bpftrace 1 syscall"]
COLUMN_HELP = {
    "none": "no observer (the baseline, absolute numbers)",
    "none again": f"no observer, measured again after a {NONE_GAP:g} s pause (like an observer's "
                  "start-up): the A/A ratio, the noise floor",
    "bw fast": "beanwatch watch --limit W=64G (fast mode), default mmap_lock hook",
    "bw trace": "beanwatch trace (default --min-size 64M, every cgroup): watch's accounting "
                "plus one comparison per address-space change; read against bw fast",
    "floor fast": "bench/floor.py: an empty RAW_TRACEPOINT_PROBE on each hook bw fast runs per "
                  f"operation ({', '.join(tracers.FLOOR_FAST)})",
    "bpftrace fast": f"bpftrace -e '{tracers.BPFTRACE_LOCK}' (the same hook, regular tracepoint)",
    "bw slow": "beanwatch watch --limit W=1G with 2 GiB reserved untouched in W: slow mode, "
               "resident growth followed (checked in its records)",
    "floor slow": "bench/floor.py: empty RAW_TRACEPOINT_PROBEs on the hooks bw slow runs per "
                  f"operation ({', '.join(tracers.FLOOR_SLOW)})",
    "bpftrace slow": f"bpftrace -e '{tracers.BPFTRACE_LOCK_RSS}'",
    "bpftrace faults": f"bpftrace -e '{tracers.BPFTRACE_FAULTS}'",
    "bw syscalls": "beanwatch watch --limit W=64G --vm-hook syscalls (syscall tracepoints)",
    "naive bcc": "bench/naive_tracer.py: one perf event to Python per fault and per "
                 "mmap/munmap/brk",
    "bpftrace 1 syscall": f"bpftrace -e '{tracers.BPFTRACE_SYSCALL}'",
}
# which floor and which bpftrace counter each beanwatch column is read against
AGAINST = {"bw fast": ("floor fast", "bpftrace fast"), "bw slow": ("floor slow", "bpftrace slow")}
ROWS = ["page faults/s", "mmap+munmap pairs/s", "brk grow+shrink pairs/s",
        "getppid calls/s (other cgroup)"]
CHUNK_MIB = 32
RESERVE_MIB = 2048          # untouched, in W for the whole run: above the slow limit
SLOW_LIMIT = "1G"


def sizes(quick: bool) -> dict:
    """About 0.1 s (quick) or 0.25 s each on this machine."""
    if quick:
        return {"fault_mib": 128, "mmap_pairs": 15000, "brk_pairs": 30000, "getppid": 500000}
    return {"fault_mib": 384, "mmap_pairs": 40000, "brk_pairs": 80000, "getppid": 1200000}


@contextlib.contextmanager
def observer(column: str, W: str, ctx):
    if column in ("none", "none again"):
        time.sleep(NONE_GAP)   # as long as an observer takes to start: same pause before the runs
        yield None
    elif column == "bw fast":
        with tracers.beanwatch_watch(["--limit", f"{W}=64G"], ctx.startups) as w:
            yield w
    elif column == "bw slow":
        with tracers.beanwatch_watch(["--limit", f"{W}={SLOW_LIMIT}"], ctx.startups) as w:
            w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == W, 20)
            yield w
    elif column == "bw trace":
        with tracers.beanwatch_trace() as t:
            yield t
    elif column == "bw syscalls":
        with tracers.beanwatch_watch(["--limit", f"{W}=64G", "--vm-hook", "syscalls"],
                                     ctx.startups) as w:
            yield w
    elif column == "floor fast":
        with tracers.floor(tracers.FLOOR_FAST) as t:
            yield t
    elif column == "floor slow":
        with tracers.floor(tracers.FLOOR_SLOW) as t:
            yield t
    elif column == "bpftrace fast":
        with tracers.bpftrace(tracers.BPFTRACE_LOCK) as t:
            yield t
    elif column == "bpftrace slow":
        with tracers.bpftrace(tracers.BPFTRACE_LOCK_RSS, probes=2) as t:
            yield t
    elif column == "naive bcc":
        with tracers.naive_tracer() as t:
            yield t
    elif column == "bpftrace faults":
        with tracers.bpftrace(tracers.BPFTRACE_FAULTS) as t:
            yield t
    elif column == "bpftrace 1 syscall":
        with tracers.bpftrace(tracers.BPFTRACE_SYSCALL) as t:
            yield t
    else:
        raise ValueError(column)


def rate_of(sc: Scratch, cg: str, argv, ctx) -> float:
    p = sc.spawn(cg, argv, cpus=ctx.cpus, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {err.strip()}")
    fields = out.split()
    return float(fields[fields.index("rate") + 1])


def prog_totals(pid: int) -> tuple[int, int]:
    """(runs, ns) summed over the BPF programs a process holds (BPF stats must be on)."""
    progs = bpf_objects(pid)["progs"]
    return (sum(int(p.get("run_cnt", 0)) for p in progs),
            sum(int(p.get("run_time_ns", 0)) for p in progs))


def empty_program_cost(sc, W, argv, ctx) -> float | None:
    """ns per run the BPF statistics report for an empty program: their own overhead here."""
    try:
        from bcc import BPF
        bpf = BPF(text="RAW_TRACEPOINT_PROBE(mmap_lock_released) { return 0; }")
    except Exception:
        return None
    try:
        with bpf_run_stats() as on:
            r0, n0 = prog_totals(os.getpid())
            rate_of(sc, W, argv, ctx)
            r1, n1 = prog_totals(os.getpid())
        return (n1 - n0) / (r1 - r0) if on and r1 > r0 else None
    finally:
        bpf.cleanup()


def predicted(base, kernel, column, row) -> float | None:
    """The ratio the kernel-side cost alone predicts: t_op / (t_op + runs x ns per run)."""
    b, k = summary(base[row]), kernel.get(column, {}).get(row)
    if not b or not k:
        return None
    t_op = 1e9 / b["median"]
    return t_op / (t_op + k[1])


def modes_during(w, W: str, start: float, end: float) -> tuple[str | None, int]:
    """The mode W was in when the window began, and how many switches happened inside it."""
    before = [r for r in w.of("mode", W) if r["_arrival"] < start]
    inside = [r for r in w.of("mode", W) if start <= r["_arrival"] <= end]
    return (before[-1]["mode"] if before else "fast"), len(inside)


def vm_reserve_mib() -> int:
    """BENCH_VM_RESERVE_MIB: the mmap and brk workloads first reserve this much address space
    (untouched; default 0: a 2.3 MiB process): a bigger process, whose slack for waiting
    shrinks (1/64 of it, 256 KiB at least) is bigger."""
    return env_number("BENCH_VM_RESERVE_MIB", 0, "MiB")


def pair_kib() -> int:
    """BENCH_PAIR_KIB: the size of one mmap+munmap or brk pair (default 256, within the
    256 KiB a small process's shrinks may wait; 512: every lock release is a change)."""
    kib = env_number("BENCH_PAIR_KIB", 256, "KiB")
    if not kib:
        raise ValueError("BENCH_PAIR_KIB: must be at least 1")
    return kib


def run(ctx) -> dict:
    b, sz = ctx.bins, sizes(ctx.quick)
    reserve, kib = vm_reserve_mib(), str(pair_kib())
    extra = ["0", str(reserve)] if reserve else []
    workloads = [
        (ROWS[0], "W", [b["faults"], str(sz["fault_mib"]), str(CHUNK_MIB)]),
        (ROWS[1], "W", [b["vmops"], "mmap", str(sz["mmap_pairs"]), kib, *extra]),
        (ROWS[2], "W", [b["vmops"], "brk", str(sz["brk_pairs"]), kib, *extra]),
        (ROWS[3], "O", [b["getppid"], str(sz["getppid"])]),
    ]
    wanted = [c.strip() for c in os.environ.get("BENCH_COLUMNS", "").split(",") if c.strip()]
    unknown = set(wanted) - set(COLUMNS)
    if unknown:
        raise ValueError(f"BENCH_COLUMNS: unknown column(s) {', '.join(sorted(unknown))}")
    columns = [c for c in COLUMNS if (not c.startswith("bpftrace") or ctx.has_bpftrace)
               and (not wanted or c in wanted or c == "none")]
    base = {r: [] for r in ROWS}                             # every baseline run
    ratios = {c: {r: [] for r in ROWS} for c in columns[1:]}  # observed / the baseline just before
    checks = {"bw slow": [], "bw fast": []}
    naive = []
    ops = {ROWS[0]: (sz["fault_mib"] + CHUNK_MIB) * 256, ROWS[1]: sz["mmap_pairs"],
           ROWS[2]: sz["brk_pairs"], ROWS[3]: sz["getppid"]}
    kernel = {}    # column -> row -> (BPF runs per operation, BPF ns per operation)
    with Scratch("tput") as sc:
        W, O = sc.make("w"), sc.make("o")
        cg = {"W": W, "O": O}

        def run_all():
            """Every workload once, after a short warm-up of the workload CPU."""
            rate_of(sc, O, [b["getppid"], "300000"], ctx)
            got, windows = {}, []
            for row, where, argv in workloads:
                t0 = ctx.now()
                got[row] = rate_of(sc, cg[where], argv, ctx)
                windows.append((t0, ctx.now()))
            return got, windows

        def kernel_cost(pid):
            """BPF runs and ns per operation of each workload, with BPF stats on (untimed)."""
            out = {}
            with bpf_run_stats() as on:
                if not on:
                    return out
                for row, where, argv in workloads:
                    r0, n0 = prog_totals(pid)
                    rate_of(sc, cg[where], argv, ctx)
                    r1, n1 = prog_totals(pid)
                    out[row] = ((r1 - r0) / ops[row], (n1 - n0) / ops[row])
            return out

        kernel["empty"] = empty_program_cost(sc, W, workloads[2][2], ctx)
        holder = sc.spawn(W, [b["switcher"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
        holder.stdin.write(f"map {RESERVE_MIB}\n")
        holder.stdin.flush()
        holder.stdout.readline()
        try:
            for rep in range(ctx.reps):
                order = columns[1:][rep % (len(columns) - 1):] + columns[1:][:rep % (len(columns) - 1)]
                ctx.log(f"throughput rep {rep + 1}/{ctx.reps}: {', '.join(order)}")
                for column in order:
                    try:
                        before, _ = run_all()
                        for row in ROWS:
                            base[row].append(before[row])
                        with observer(column, W, ctx) as obs:
                            got, windows = run_all()
                            if column in checks:
                                mode, switches = modes_during(obs, W, windows[0][0], windows[-1][1])
                                checks[column].append({"mode": mode, "switches": switches})
                            if rep == 0 and obs is not None:
                                kernel[column] = kernel_cost(obs.pid)
                            if column == "naive bcc":
                                obs.stop()
                                naive.append(next((l for l in obs.lines if l.startswith("{")), None))
                        for row in ROWS:
                            ratios[column][row].append(got[row] / before[row])
                    except Exception as e:  # a failed column is reported, the run goes on
                        ctx.log(f"  {column}: {e}")
        finally:
            holder.kill()
            holder.wait()
    return tables(ctx, columns, base, ratios, checks, naive, kernel)


def tables(ctx, columns, base, ratios, checks, naive, kernel) -> dict:
    reserve, kib = vm_reserve_mib(), pair_kib()
    calib = (f" (an empty program on mmap_lock_released measures {kernel['empty']:.0f} ns per run "
             "here)" if kernel.get("empty") else "")
    rows, targets, krows = [], [], []
    for row in ROWS:
        cells = [abs_cell(summary(base[row]), "/s")]
        cells += [ratio_cell(summary(ratios[c][row])) for c in columns[1:]]
        rows.append({"label": row, "cells": cells})
        kcells = [text_cell(f"{1e9 / summary(base[row])['median']:.0f} ns/op")
                  if summary(base[row]) else text_cell("-")]
        for c in columns[1:]:
            k = kernel.get(c, {}).get(row)
            p = predicted(base, kernel, c, row)
            kcells.append(text_cell(f"{k[0]:.2f} x {k[1] / k[0]:.0f} ns = {p:.3f}" if k and k[0]
                                    else ("0 runs" if k else "-")))
        krows.append({"label": row, "cells": kcells})
    slow_ok = all(c["mode"] == "slow" and c["switches"] == 0 for c in checks["bw slow"])
    fast_ok = all(c["mode"] == "fast" and c["switches"] == 0 for c in checks["bw fast"])
    notes = [f"{c}: {COLUMN_HELP[c]}" for c in columns]
    notes.append("each beanwatch column reads against its floor and bpftrace column: table 1-3a")
    notes.append("each observed run is divided by a run with no observer made just before it "
                 "(same repetition, same workloads, each block after a 0.1 s warm-up of the CPU); "
                 "columns rotate between repetitions")
    notes.append(f"bw slow: W was in slow mode, with no switch, through every workload: "
                 f"{'yes' if slow_ok else 'NO'} ({len(checks['bw slow'])} runs checked); "
                 f"bw fast stayed fast: {'yes' if fast_ok else 'NO'}")
    b = summary(base[ROWS[3]])
    if b:
        extra = ", ".join(f"{c} {1e9 / b['median'] / summary(ratios[c][ROWS[3]])['median']:.0f}"
                          for c in columns[1:] if summary(ratios[c][ROWS[3]]))
        notes.append(f"getppid ns/call: none {1e9 / b['median']:.0f}; at the median ratio: {extra}")
    lost = [l for l in naive if l]
    if lost:
        notes.append("naive bcc per session (events to Python, lost): " + "; ".join(
            l.strip() for l in lost))
    med = {c: {r: summary(ratios[c][r]) for r in ROWS} for c in columns[1:]}
    goals = [(ROWS[0], "bw fast", 0.99), (ROWS[0], "bw slow", 0.90),
             (ROWS[1], "bw fast", 0.94), (ROWS[1], "bw slow", 0.92),
             (ROWS[2], "bw fast", 0.90), (ROWS[2], "bw slow", 0.88),
             (ROWS[3], "bw fast", 0.99)]
    for row, col, goal in goals:
        if col not in ratios:
            continue
        s = med[col][row]
        noise = med.get("none again", {}).get(row)
        pred = predicted(base, kernel, col, row)
        detail = f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})" if s else "n/a"
        if noise:
            detail += f"; A/A {noise['median']:.3f} ({noise['min']:.2f}-{noise['max']:.2f})"
        if pred is not None:
            detail += f"; from BPF cost {pred:.3f}"
        met, by = None, ""
        # The BPF run time is a lower bound of the cost, so a ratio predicted from it is an
        # upper bound: below the goal, the target is missed whatever the noisy throughput says.
        band = max(abs(noise["median"] - 1), (noise["max"] - noise["min"]) / 2) if noise else 0
        if pred is not None and pred < goal:
            met, by = False, f"{pred - goal:+.3f} from BPF cost alone"
        elif s and s["median"] < goal - band:
            met, by = False, f"{s['median'] - goal:+.3f} measured, noise +-{band:.2f}"
        elif s:
            met = s["median"] >= goal
            by = f"{s['median'] - goal:+.3f} measured, noise +-{band:.2f}"
        targets.append(target(f"{row}, {col}", f">= {goal:.2f}", s and s["median"], met, detail, by))
    # every row within 0.05 of the floor (an empty raw program on the same hooks, same run)
    for col, (floor_col, bpftrace_col) in AGAINST.items():
        if col not in med or floor_col not in med:
            continue
        for row in ROWS:
            s, f = med[col][row], med[floor_col][row]
            if not s or not f:
                continue
            gap = f["median"] - s["median"]
            bt = med.get(bpftrace_col, {}).get(row)
            detail = (f"{col} {s['median']:.3f}, {floor_col} {f['median']:.3f}"
                      + (f", {bpftrace_col} {bt['median']:.3f}" if bt else ""))
            targets.append(target(f"{row}, {col} to its floor", "<= 0.05 below", round(gap, 3),
                                  gap <= 0.05, detail, f"{0.05 - gap:+.3f}"))
    # page faults in slow mode above a trivial bpftrace counter on the fault tracepoint
    for other in ("bpftrace faults", "bpftrace slow"):
        if "bw slow" in med and other in med and med["bw slow"][ROWS[0]] and med[other][ROWS[0]]:
            s, o = med["bw slow"][ROWS[0]]["median"], med[other][ROWS[0]]["median"]
            targets.append(target(f"{ROWS[0]}, bw slow above {other}", "> bpftrace", round(s - o, 3),
                                  s > o, f"bw slow {s:.3f}, {other} {o:.3f}", f"{s - o:+.3f}"))
    # every row read as beanwatch / floor / bpftrace
    rows_vs = []
    for row in ROWS:
        cells = []
        for col, (floor_col, bpftrace_col) in AGAINST.items():
            vals = [med.get(c, {}).get(row) for c in (col, floor_col, bpftrace_col)]
            cells.append(text_cell(" / ".join(f"{v['median']:.3f}" if v else "-" for v in vals)))
        f = med.get("bpftrace faults", {}).get(row)
        cells.append(text_cell(f"{f['median']:.3f}" if f else "-"))
        rows_vs.append({"label": row, "cells": cells})
    return {"tables": [{"id": "throughput", "title": "1-3. Throughput under each observer "
                        "(ratio to no observer, adjacent runs)", "columns": ["workload"] + columns,
                        "rows": rows, "notes": notes + ([
                            f"mmap and brk workloads with {reserve} MiB of address space "
                            "reserved first (BENCH_VM_RESERVE_MIB)"] if reserve else []) + ([
                            f"mmap and brk pairs of {kib} KiB (BENCH_PAIR_KIB)"]
                            if kib != 256 else [])},
                       {"id": "throughput_floor", "title": "1-3a. beanwatch / floor / bpftrace "
                        "on the same hooks (median ratios of table 1-3)",
                        "columns": ["workload", "fast: bw / floor / bpftrace",
                                    "slow: bw / floor / bpftrace", "bpftrace faults"],
                        "rows": rows_vs,
                        "notes": ["floor: empty RAW_TRACEPOINT_PROBE programs on the hooks "
                                  "beanwatch runs per operation (fast: mmap_lock_released; slow: "
                                  "mmap_lock_released and rss_stat); bpftrace: @[cgroup] = count() "
                                  "on the same tracepoints (regular form); bpftrace faults: the same "
                                  "counter on exceptions:page_fault_user"]},
                       {"id": "throughput_bpf", "title": "1-3b. BPF programs run per operation x "
                        "average run time (BPF stats, first repetition, untimed pass)",
                        "columns": ["workload"] + columns, "rows": krows,
                        "notes": ["none: the baseline's time per operation; the others: how many "
                                  "times the observer's BPF programs ran per page fault, mmap+munmap "
                                  "pair, brk pair or getppid call, x their average run time, = the "
                                  "throughput ratio that cost alone predicts, t/(t + runs x ns)",
                                  "kernel-side cost only: tracepoint dispatch, perf buffers' "
                                  "wake-ups and Python are not included; the statistics add their "
                                  "own clock reads to each run" + calib]}],
            "targets": targets, "raw": {"base": base, "ratios": ratios, "checks": checks,
                                        "naive": naive, "kernel": kernel}}
