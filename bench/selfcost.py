"""Item 5: beanwatch's own cost: CPU, RSS, start-up and events lost, idle and under load.

The load is 100k mmap+munmap pairs/s in a watched cgroup, in fast and in slow mode; losses
are its `lost` records and the kernel side's stats map.
"""

from __future__ import annotations

import json
import subprocess
import time

from common import MiB, Scratch, Watcher, bpf_objects, cpu_ns, cpu_seconds, summary
from observer.kernel import wire
from report import target, text_cell

RATE = 100_000


def memory(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmLck"):
                out[key] = int(line.split()[1]) * 1024
    return out


def kernel_stats(pid: int) -> list[int] | None:
    """beanwatch's per-CPU stats map summed (indexes: observer/kernel/wire.py STAT_*)."""
    for m in bpf_objects(pid)["maps"]:
        if m.get("map_type") != "6":   # BPF_MAP_TYPE_PERCPU_ARRAY: the stats map
            continue
        out = subprocess.run(["bpftool", "-j", "map", "dump", "id", m["map_id"]],
                             capture_output=True, text=True).stdout
        stats = [0] * wire.STAT_MAX
        for entry in json.loads(out or "[]"):
            f = entry.get("formatted", {})
            if isinstance(f.get("key"), int) and f["key"] < wire.STAT_MAX:
                stats[f["key"]] = sum(v["value"] for v in f["values"])
        return stats
    return None


def window(w: Watcher, seconds: float, load=None) -> dict:
    """CPU share and memory of beanwatch over a window, with an optional load running."""
    pid = w.pid
    mark = time.time()
    k0, c0, n0 = kernel_stats(pid), cpu_seconds(pid), cpu_ns(pid)
    t0 = time.time()
    rate = None
    if load is not None:
        out, _ = load.communicate(timeout=seconds * 3 + 30)
        rate = float(out.split()[-1])
    else:
        time.sleep(seconds)
    dt = time.time() - t0
    c1, n1, k1 = cpu_seconds(pid), cpu_ns(pid), kernel_stats(pid)
    lost = [r for r in w.of("lost", since=mark)]
    res = {"seconds": dt, "cpu_pct": 100 * (c1 - c0) / dt, "cpu_pct_schedstat": 100 * (n1 - n0) / 1e9 / dt,
           "mem": memory(pid), "rate": rate, "lost_records": len(lost),
           "events_lost_records": sum(r.get("events_lost", 0) for r in lost)}
    if k0 and k1:
        d = [b - a for a, b in zip(k0, k1)]
        res.update(ringbuf_full=d[wire.STAT_RINGBUF_FULL], vm_updates=d[wire.STAT_VM_UPDATES],
                   procs_full=d[wire.STAT_PROCS_FULL], faults_followed=d[wire.STAT_FAULTS])
    return res


def run(ctx) -> dict:
    idle_s = 3.0 if ctx.quick else 10.0
    load_s = 1.0 if ctx.quick else 5.0
    phases, starts = {}, []
    with Scratch("self") as sc:
        W = sc.make("w")
        # idle: one watched cgroup, nothing running in it
        w = Watcher(["--limit", f"{W}=64G"], ctx.startups).started()
        try:
            starts.append(w.startup)
            time.sleep(1.0)
            ctx.log(f"selfcost: idle {idle_s:g} s")
            phases["idle"] = window(w, idle_s)
            ctx.log(f"selfcost: {RATE} mmap+munmap/s for {load_s:g} s, fast mode")
            load = sc.spawn(W, [ctx.bins["vmops"], "mmap", str(int(RATE * load_s)), "256", str(RATE)],
                            cpus=ctx.cpus, stdout=subprocess.PIPE, text=True)
            phases["100k/s fast"] = window(w, load_s, load)
        finally:
            w.stop()
        # slow: the same load with 2 GiB reserved in the cgroup and a 1 GiB limit
        holder = sc.spawn(W, [ctx.bins["switcher"]], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
        try:
            holder.stdin.write("map 2048\n")
            holder.stdin.flush()
            holder.stdout.readline()
            w = Watcher(["--limit", f"{W}=1G"], ctx.startups).started()
            try:
                starts.append(w.startup)
                w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == W, 20)
                ctx.log(f"selfcost: {RATE} mmap+munmap/s for {load_s:g} s, slow mode")
                load = sc.spawn(W, [ctx.bins["vmops"], "mmap", str(int(RATE * load_s)), "256",
                                    str(RATE)], cpus=ctx.cpus, stdout=subprocess.PIPE, text=True)
                phases["100k/s slow"] = window(w, load_s, load)
                phases["100k/s slow"]["mode"] = w.of("snapshot", W)[-1]["mode"]
            finally:
                w.stop()
        finally:
            holder.kill()
            holder.wait()
    return tables(phases, starts, idle_s)


def tables(phases, starts, idle_s) -> dict:
    cols = ["phase", "CPU % of a core", "VmRSS", "RssAnon / RssFile / VmLck", "load achieved",
            "lost records", "kernel: ringbuf full / changes accounted"]
    rows = []
    for name, p in phases.items():
        m = p["mem"]
        rows.append({"label": name, "cells": [
            text_cell(f"{p['cpu_pct']:.2f} (schedstat {p['cpu_pct_schedstat']:.2f})"),
            text_cell(f"{m.get('VmRSS', 0) / MiB:.1f} MiB"),
            text_cell(f"{m.get('RssAnon', 0) / MiB:.1f} / {m.get('RssFile', 0) / MiB:.1f} / "
                      f"{m.get('VmLck', 0) / MiB:.1f} MiB"),
            text_cell(f"{p['rate']:.0f}/s" if p["rate"] else "-"),
            text_cell(f"{p['lost_records']} ({p['events_lost_records']} events)"),
            text_cell(f"{p.get('ringbuf_full', '?')} / {p.get('vm_updates', '?')}")]})
    idle = phases.get("idle")
    rss_max = max((p["mem"].get("VmRSS", 0) for p in phases.values()), default=0)
    lost = sum(p["lost_records"] + p.get("ringbuf_full", 0) for n, p in phases.items() if n != "idle")
    targets = [
        target("own cost: idle CPU", "<= 0.5% of a core", idle and idle["cpu_pct"],
               bool(idle) and idle["cpu_pct"] <= 0.5,
               f"{idle['cpu_pct']:.2f}% over {idle['seconds']:.0f} s" if idle else "n/a",
               f"{idle['cpu_pct'] - 0.5:+.2f} points" if idle else ""),
        target("own cost: RSS", "<= 80 MiB", rss_max / MiB, rss_max <= 80 * MiB,
               f"max VmRSS {rss_max / MiB:.1f} MiB", f"{rss_max / MiB - 80:+.1f} MiB"),
        target("own cost: events lost at 100k mmap/s", "0", lost, lost == 0,
               f"{lost} (lost records + kernel ringbuf-full count, fast and slow)"),
    ]
    s = summary(starts)
    notes = [f"idle: {idle_s:g} s, one watched cgroup (empty), default --interval 1; CPU from "
             "utime+stime in /proc/PID/stat (10 ms ticks) and from schedstat (ns)",
             f"load: bench/programs/vmops.c paced at {RATE} mmap+munmap pairs/s (256 KiB, "
             "untouched) in the watched cgroup; slow: 2 GiB reserved in it, limit 1 GiB",
             "kernel counts are host-wide (every process's address-space changes are accounted)",
             "lost records: `lost` records in its --json output during the window; kernel: the "
             "stats map (ringbuf reserve failures, address-space changes accounted) read with bpftool",
             f"start-up (process start to first snapshot) here: {', '.join(f'{x:.2f}' for x in starts)} s"
             + (f"; all starts in this run are summarised at the end" if s else "")]
    return {"tables": [{"id": "selfcost", "title": "5. beanwatch's own cost", "columns": cols,
                        "rows": rows, "notes": notes}],
            "targets": targets, "raw": {"phases": phases, "starts": starts}}
