"""Items 1-3: page faults, mmap+munmap pairs, brk pairs and getppid in another cgroup, under
every observer in turn, with interleaved repetitions; each ratio against that repetition's
run with no observer."""

from __future__ import annotations

import contextlib
import subprocess

import tracers
from common import MiB, Scratch, summary
from report import abs_cell, ratio_cell, target

COLUMNS = ["none", "none again", "bw fast", "bw slow", "bw syscalls", "naive bcc",
           "bpftrace faults", "bpftrace 1 syscall"]
COLUMN_HELP = {
    "none": "no observer (the baseline, absolute numbers)",
    "none again": "no observer, measured again in the same repetition: the noise floor",
    "bw fast": "beanwatch watch --limit W=64G (fast mode), default mmap_lock hook",
    "bw slow": "beanwatch watch --limit W=1G with 2 GiB reserved untouched in W: slow mode, "
               "page faults followed (checked in its records)",
    "bw syscalls": "beanwatch watch --limit W=64G --vm-hook syscalls (syscall tracepoints)",
    "naive bcc": "bench/naive_tracer.py: one perf event to Python per fault and per "
                 "mmap/munmap/brk",
    "bpftrace faults": f"bpftrace -e '{tracers.BPFTRACE_FAULTS}'",
    "bpftrace 1 syscall": f"bpftrace -e '{tracers.BPFTRACE_SYSCALL}'",
}
ROWS = ["page faults/s", "mmap+munmap pairs/s", "brk grow+shrink pairs/s",
        "getppid calls/s (other cgroup)"]
RESERVE_MIB = 2048          # untouched, in W for the whole run: above the slow limit
SLOW_LIMIT = "1G"


def sizes(quick: bool) -> dict:
    if quick:
        return {"fault_mib": 256, "mmap_pairs": 30000, "brk_pairs": 60000, "getppid": 1000000}
    return {"fault_mib": 512, "mmap_pairs": 60000, "brk_pairs": 100000, "getppid": 2000000}


@contextlib.contextmanager
def observer(column: str, W: str, ctx):
    if column in ("none", "none again"):
        yield None
    elif column == "bw fast":
        with tracers.beanwatch_watch(["--limit", f"{W}=64G"], ctx.startups) as w:
            yield w
    elif column == "bw slow":
        with tracers.beanwatch_watch(["--limit", f"{W}={SLOW_LIMIT}"], ctx.startups) as w:
            w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == W, 20)
            yield w
    elif column == "bw syscalls":
        with tracers.beanwatch_watch(["--limit", f"{W}=64G", "--vm-hook", "syscalls"],
                                     ctx.startups) as w:
            yield w
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


def modes_during(w, W: str, start: float, end: float) -> tuple[str | None, int]:
    """The mode W was in when the window began, and how many switches happened inside it."""
    before = [r for r in w.of("mode", W) if r["_arrival"] < start]
    inside = [r for r in w.of("mode", W) if start <= r["_arrival"] <= end]
    return (before[-1]["mode"] if before else "fast"), len(inside)


def run(ctx) -> dict:
    b, sz = ctx.bins, sizes(ctx.quick)
    workloads = [
        (ROWS[0], "W", [b["faults"], str(sz["fault_mib"]), "64"]),
        (ROWS[1], "W", [b["vmops"], "mmap", str(sz["mmap_pairs"]), "256"]),
        (ROWS[2], "W", [b["vmops"], "brk", str(sz["brk_pairs"]), "256"]),
        (ROWS[3], "O", [b["getppid"], str(sz["getppid"])]),
    ]
    columns = [c for c in COLUMNS if not c.startswith("bpftrace") or ctx.has_bpftrace]
    values = {c: {r: [] for r in ROWS} for c in columns}     # per rep, None if failed
    checks = {"bw slow": [], "bw fast": []}
    naive = []
    with Scratch("tput") as sc:
        W, O = sc.make("w"), sc.make("o")
        cg = {"W": W, "O": O}
        holder = sc.spawn(W, [b["switcher"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
        holder.stdin.write(f"map {RESERVE_MIB}\n")
        holder.stdin.flush()
        holder.stdout.readline()
        try:
            for rep in range(ctx.reps):
                order = columns[rep % len(columns):] + columns[:rep % len(columns)]
                ctx.log(f"throughput rep {rep + 1}/{ctx.reps}: {', '.join(order)}")
                for column in order:
                    got = {}
                    try:
                        with observer(column, W, ctx) as obs:
                            windows = []
                            for row, where, argv in workloads:
                                t0 = ctx.now()
                                got[row] = rate_of(sc, cg[where], argv, ctx)
                                windows.append((t0, ctx.now()))
                            if column in checks:
                                mode, switches = modes_during(obs, W, windows[0][0], windows[-1][1])
                                checks[column].append({"mode": mode, "switches": switches})
                            if column == "naive bcc":
                                obs.stop()
                                naive.append(next((l for l in obs.lines if l.startswith("{")), None))
                    except Exception as e:  # a failed column is reported, the run goes on
                        ctx.log(f"  {column}: {e}")
                    for row in ROWS:
                        values[column][row].append(got.get(row))
        finally:
            holder.kill()
            holder.wait()
    return tables(ctx, columns, values, checks, naive)


def tables(ctx, columns, values, checks, naive) -> dict:
    rows, targets, raw = [], [], {}
    for row in ROWS:
        base = values["none"][row]
        cells = [abs_cell(summary(base), "/s")]
        raw[row] = {c: values[c][row] for c in columns}
        for c in columns[1:]:
            ratios = [v / b for v, b in zip(values[c][row], base) if v and b]
            cells.append(ratio_cell(summary(ratios)))
        rows.append({"label": row, "cells": cells})
    getppid = [1e9 / v for v in values["none"][ROWS[3]] if v]
    slow_ok = all(c["mode"] == "slow" and c["switches"] == 0 for c in checks["bw slow"])
    fast_ok = all(c["mode"] == "fast" and c["switches"] == 0 for c in checks["bw fast"])
    notes = [f"{c}: {COLUMN_HELP[c]}" for c in columns]
    notes.append(f"bw slow: W was in slow mode, with no switch, through every workload: "
                 f"{'yes' if slow_ok else 'NO'} ({len(checks['bw slow'])} runs checked); "
                 f"bw fast stayed fast: {'yes' if fast_ok else 'NO'}")
    if getppid:
        nss = {c: [1e9 / v for v in values[c][ROWS[3]] if v] for c in columns}
        notes.append("getppid ns/call (median): " + ", ".join(
            f"{c} {summary(v)['median']:.0f}" for c, v in nss.items() if v))
    lost = [l for l in naive if l]
    if lost:
        notes.append("naive bcc per session (events to Python, lost): " + "; ".join(
            l.strip() for l in lost))
    for row, col, goal in [(ROWS[0], "bw fast", 0.99), (ROWS[0], "bw slow", 0.95),
                           (ROWS[1], "bw fast", 0.90), (ROWS[1], "bw slow", 0.90),
                           (ROWS[2], "bw fast", 0.90), (ROWS[2], "bw slow", 0.90)]:
        ratios = [v / b for v, b in zip(values[col][row], values["none"][row]) if v and b]
        s = summary(ratios)
        targets.append(target(f"{row}, {col}", f">= {goal:.2f}", s and s["median"],
                              s is not None and s["median"] >= goal,
                              f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})" if s else "n/a"))
    return {"tables": [{"id": "throughput", "title": "1-3. Throughput under each observer "
                        "(ratio to none in the same repetition)", "columns": ["workload"] + columns,
                        "rows": rows, "notes": notes}],
            "targets": targets, "raw": {"values": raw, "checks": checks, "naive": naive}}
