"""Item 7: the cost of switching between fast and slow mode, and of flapping across a limit.

One switch each way (time and CPU), then a workload oscillating across the limit at 1-1000 Hz
under hysteresis 0, the default (0.1) and --adaptive: switches per second and the fault
throughput of a toucher in the same cgroup.
"""

from __future__ import annotations

import subprocess
import time

from common import MiB, Scratch, Watcher, cpu_ns, stop_process, summary
from report import abs_cell, ratio_cell, text_cell

SWITCH_LIMIT = 256 * MiB
OSC_LIMIT = 512 * MiB
TOUCH_CHUNK_MIB = 32
FREQS = [1, 10, 100, 1000]
SETTLE = 0.3    # s: long enough for beanwatch to be done with a switch
# mapped total of the cgroup, as a share of the limit: low and high point of the oscillation
AMPLITUDES = {"narrow 0.95-1.05 L": (0.95, 1.05), "wide 0.70-1.05 L": (0.70, 1.05)}
CONFIGS = {"none": None, "hysteresis 0": ["--hysteresis", "0"], "default 0.1": [],
           "adaptive": ["--adaptive"]}


# -- one switch each way ---------------------------------------------------------------------
def switch_costs(ctx, sc: Scratch) -> dict:
    """Each cycle: a settled map (fast -> slow), an unmap followed at once by a map (how long
    the switch back to fast keeps beanwatch's loop from the next event), a settled unmap."""
    cycles = 3 if ctx.quick else 12
    S = sc.make("switch")
    out = {k: [] for k in ("to_slow_record", "to_slow_ts", "to_slow_checked", "to_fast_record",
                           "next_event_after_fast", "cpu_to_slow_ms", "cpu_to_fast_ms")}
    sw = sc.spawn(S, [ctx.bins["switcher"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                  text=True, cpus=ctx.cpus)

    def cmd(line: str) -> float:
        sw.stdin.write(line + "\n")
        sw.stdin.flush()
        return int(sw.stdout.readline().split()[1]) / 1e9   # as the syscall began, CLOCK_REALTIME

    def mode(w, m, mark):
        return w.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == S and r["mode"] == m,
                          10, mark)

    big = f"map {2 * SWITCH_LIMIT // MiB}"
    w = Watcher(["--limit", f"{S}={SWITCH_LIMIT}"], ctx.startups).started()
    try:
        time.sleep(0.3)
        c0, t0 = cpu_ns(w.pid), time.time()
        time.sleep(0.7)
        idle_rate = (cpu_ns(w.pid) - c0) / (time.time() - t0)   # ns of CPU per second, idle

        def cpu_since(c0, t0):
            return (cpu_ns(w.pid) - c0 - idle_rate * (time.time() - t0)) / 1e6

        for _ in range(cycles):
            mark, c0, t0 = len(w.records), cpu_ns(w.pid), time.time()
            after = cmd(big)
            rec = mode(w, "slow", mark)
            chk = w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == S, 10, mark)
            time.sleep(SETTLE)
            out["cpu_to_slow_ms"].append(cpu_since(c0, t0))
            out["to_slow_record"].append(rec["_arrival"] - after)
            out["to_slow_ts"].append(rec["ts"] - after)
            out["to_slow_checked"].append(chk["_arrival"] - after)
            mark = len(w.records)
            after = cmd("unmap")
            rec = mode(w, "fast", mark)
            out["to_fast_record"].append(rec["_arrival"] - after)
            mark = len(w.records)
            after = cmd(big)
            out["next_event_after_fast"].append(mode(w, "slow", mark)["_arrival"] - after)
            time.sleep(SETTLE)
            mark, c0, t0 = len(w.records), cpu_ns(w.pid), time.time()
            after = cmd("unmap")
            rec = mode(w, "fast", mark)
            out["to_fast_record"].append(rec["_arrival"] - after)
            time.sleep(SETTLE)
            out["cpu_to_fast_ms"].append(cpu_since(c0, t0))
    finally:
        w.stop()
        stop_process(sw)
    return out


# -- oscillation -----------------------------------------------------------------------------
def fixed_vm(ctx, sc: Scratch) -> int:
    """VmSize of a small C program of ours with nothing mapped (libc, stack, ...)."""
    p = sc.spawn(sc.make("probe"), [ctx.bins["switcher"]], stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.05)
        with open(f"/proc/{p.pid}/statm") as f:
            return int(f.read().split()[0]) * 4096
    finally:
        stop_process(p)


def segment(ctx, sc, cg: str, hz: int, seconds: float, lo: float, hi: float, fixed: int) -> dict:
    """Oscillator and toucher together in cg; the toucher's fault rate and its time window
    (the oscillator starts first and ends last, so the window sees only the oscillation)."""
    base = int(lo * OSC_LIMIT - TOUCH_CHUNK_MIB * MiB - 2 * fixed) // MiB
    extra = int((hi - lo) * OSC_LIMIT) // MiB
    osc = sc.spawn(cg, [ctx.bins["oscillator"], str(base), str(extra), str(hz), str(seconds + 0.1),
                        "64"], cpus=ctx.cpus, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.05)
        t0 = time.time()
        touch = sc.spawn(cg, [ctx.bins["faults"], "0", str(TOUCH_CHUNK_MIB), str(seconds),
                              "dontneed"], cpus=ctx.cpus, stdout=subprocess.PIPE, text=True)
        out, _ = touch.communicate(timeout=seconds + 60)
        osc.communicate(timeout=seconds + 60)
    finally:
        stop_process(osc)
    # the toucher works until t0 + seconds, then exits: its exit is not part of the window
    return {"rate": float(out.split()[-1]), "start": t0, "end": t0 + seconds}


def durations(quick: bool) -> dict[int, float]:
    return {1: 1.2, 10: 0.4, 100: 0.4, 1000: 0.4} if quick else {1: 3.0, 10: 1.5, 100: 1.5, 1000: 1.5}


def oscillation(ctx, sc: Scratch) -> dict:
    reps = 1 if ctx.quick else 2
    fixed = fixed_vm(ctx, sc)
    segs = [(amp, hz) for amp in AMPLITUDES for hz in FREQS]
    cg = {s: sc.make(f"osc-{i}") for i, s in enumerate(segs)}
    dur = durations(ctx.quick)
    rates = {c: {s: [] for s in segs} for c in CONFIGS}
    switches = {c: {s: [] for s in segs} for c in CONFIGS}
    steady = {c: {s: [] for s in segs} for c in CONFIGS}   # switches/s in the second half
    slow_share = {c: {s: [] for s in segs} for c in CONFIGS}
    names = list(CONFIGS)
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for config in order:
            ctx.log(f"oscillation rep {rep + 1}/{reps}: {config}")
            flags = CONFIGS[config]
            w = None
            if flags is not None:
                args = [a for s in segs for a in ("--limit", f"{cg[s]}={OSC_LIMIT}")] + flags
                w = Watcher(args, ctx.startups)
            try:
                if w is not None:
                    w.started()
                for s in segs:
                    amp, hz = s
                    lo, hi = AMPLITUDES[amp]
                    r = segment(ctx, sc, cg[s], hz, dur[hz], lo, hi, fixed)
                    rates[config][s].append(r["rate"])
                    if w is not None:
                        time.sleep(0.02)
                        modes = w.of("mode", cg[s])
                        inside = [m for m in modes if r["start"] <= m["_arrival"] <= r["end"]]
                        switches[config][s].append(len(inside) / (r["end"] - r["start"]))
                        mid = (r["start"] + r["end"]) / 2
                        steady[config][s].append(sum(m["_arrival"] >= mid for m in inside)
                                                 / (r["end"] - mid))
                        slow_share[config][s].append(share_slow(modes, r["start"], r["end"]))
            finally:
                if w is not None:
                    w.stop()
    return {"rates": rates, "switches": switches, "steady": steady, "slow_share": slow_share, "segs": segs,
            "fixed_vm": fixed}


def share_slow(modes: list[dict], start: float, end: float) -> float:
    """Share of [start, end] the cgroup spent in slow mode, from its mode records."""
    state = "fast"
    for m in modes:
        if m["_arrival"] < start:
            state = m["mode"]
    t, slow = start, 0.0
    for m in modes:
        if start <= m["_arrival"] <= end:
            if state == "slow":
                slow += m["_arrival"] - t
            state, t = m["mode"], m["_arrival"]
    if state == "slow":
        slow += end - t
    return slow / (end - start)


def run(ctx) -> dict:
    with Scratch("switch") as sc:
        costs = switch_costs(ctx, sc)
        osc = oscillation(ctx, sc)
    return tables(costs, osc)


def tables(costs, osc) -> dict:
    ms = lambda xs: summary([x * 1e3 for x in xs])  # noqa: E731
    rows = [
        ("fast -> slow: crossing mmap call to its `mode` record (arrival)", ms(costs["to_slow_record"])),
        ("fast -> slow: crossing mmap call to the record's own timestamp", ms(costs["to_slow_ts"])),
        ("fast -> slow: crossing mmap call to the exact `check` (faults followed)", ms(costs["to_slow_checked"])),
        ("fast -> slow: beanwatch CPU (ms)", summary(costs["cpu_to_slow_ms"])),
        ("slow -> fast: unmapping munmap call to its `mode` record (arrival)", ms(costs["to_fast_record"])),
        ("slow -> fast: beanwatch CPU (ms)", summary(costs["cpu_to_fast_ms"])),
        ("right after a switch to fast: next crossing mmap call to its `mode` record",
         ms(costs["next_event_after_fast"])),
    ]
    t1 = {"id": "switch_cost", "title": "7a. One switch each way (limit 256 MiB, one process "
          "mapping 512 MiB and unmapping it; ms, median, p99 (min-max))",
          "columns": ["what", "ms"],
          "rows": [{"label": a, "cells": [abs_cell(s, "", p99=True)]} for a, s in rows],
          "notes": ["a switch to slow reads the cgroup's counters, measures its processes' RSS "
                    "from /proc and attaches the page-fault tracepoints (exceptions:page_fault_user "
                    "and _kernel); a switch to fast detaches them; CPU is beanwatch's schedstat "
                    "time over the switch minus its idle rate",
                    "the last row: the cgroup is pushed over again as soon as the switch to fast is "
                    "recorded; the extra delay is the time beanwatch's loop stays blocked in the "
                    "detach (close() of the tracepoints' perf events, see strace -T)"]}
    configs = [c for c in CONFIGS if c != "none"]
    cols = ["segment", "none: toucher faults/s"] + [f"{c}: {k}" for c in configs
                                                     for k in ("switches/s", "slow", "faults ratio")]
    rows2 = []
    for s in osc["segs"]:
        amp, hz = s
        cells = [abs_cell(summary(osc["rates"]["none"][s]), "/s")]
        for c in configs:
            ratios = [v / b for v, b in zip(osc["rates"][c][s], osc["rates"]["none"][s]) if v and b]
            sw = summary(osc["switches"][c][s])
            st = summary(osc["steady"][c][s])
            sh = summary(osc["slow_share"][c][s])
            cells += [text_cell(f"{sw['median']:.1f} ({st['median']:.1f})" if sw and st else "-"),
                      text_cell(f"{100 * sh['median']:.0f}%" if sh else "-"),
                      ratio_cell(summary(ratios))]
        rows2.append({"label": f"{amp} @ {hz} Hz", "cells": cells})
    cells = [text_cell("")]
    for c in configs:
        st = [summary(osc["steady"][c][s]) for s in osc["segs"]]
        sh = [summary(osc["slow_share"][c][s]) for s in osc["segs"]]
        ratios = [v / b for s in osc["segs"] for v, b in zip(osc["rates"][c][s], osc["rates"]["none"][s])
                  if v and b]
        st = [x["median"] for x in st if x]
        sh = [x["median"] for x in sh if x]
        cells += [text_cell(f"({sum(st) / len(st):.1f})" if st else "-"),
                  text_cell(f"{100 * sum(sh) / len(sh):.0f}%" if sh else "-"),
                  ratio_cell(summary(ratios))]
    rows2.append({"label": "mean over segments", "cells": cells})
    t2 = {"id": "oscillation", "title": "7b. Mapped total oscillating across a 512 MiB limit, with "
          "a toucher in the same cgroup (faults ratio to no beanwatch)", "columns": cols,
          "rows": rows2,
          "notes": ["oscillator.c keeps the cgroup's mapped total at the low point and, HZ times a "
                    "second, maps the difference to the high point for half a period (touching 64 "
                    "KiB of it); faults.c (32 MiB, MADV_DONTNEED between passes, so its own mapped "
                    "total is constant) measures fault throughput beside it",
                    "switches/s: `mode` records for the cgroup while the toucher ran, and in "
                    "brackets in its second half only (steady state); slow: share of that time in "
                    "slow mode, from the same records"]}
    return {"tables": [t1, t2], "targets": [], "raw": {"costs": costs, "oscillation": {
        k: ({str(c): {f"{a}@{h}": v for (a, h), v in d.items()} for c, d in osc[k].items()}
            if isinstance(osc[k], dict) else osc[k]) for k in ("rates", "switches", "steady", "slow_share")}}}
