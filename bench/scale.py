"""Item 6: beanwatch watching 1,000 cgroups of 10 processes each (150 in quick mode).

Measures BPF map memory, start-up, CPU and time per snapshot round, and beanwatch's RSS.
"""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict

from common import MiB, Scratch, Watcher, bpf_objects, cpu_ns, stop_process, vm_rss
from report import target, text_cell

PER_CGROUP = 10


def run(ctx) -> dict:
    n_cg = 150 if ctx.quick else 1000
    window_s = 3.0 if ctx.quick else 10.0
    # leave room for the rest of the host under pid_max and threads-max
    limits = [int(open(f"/proc/sys/kernel/{k}").read()) for k in ("pid_max", "threads-max")]
    n_cg = max(10, min(n_cg, (min(limits) - 5000) // PER_CGROUP))
    res = {"cgroups": n_cg, "processes_per_cgroup": PER_CGROUP, "pid_max": limits[0]}
    with Scratch("scale") as sc:
        cgs = [sc.make(f"c{i:04d}") for i in range(n_cg)]
        home = sc.make("spawner")
        t0 = time.time()
        spawner = sc.spawn(home, [ctx.bins["spawner"], str(PER_CGROUP)] + [sc.path(c) for c in cgs],
                           stdout=subprocess.PIPE, text=True)
        try:
            line = spawner.stdout.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError("spawner did not start its processes")
            res["processes"] = int(line[1])
            res["spawn_s"] = time.time() - t0
            ctx.log(f"scale: {res['processes']} processes in {n_cg} cgroups in {res['spawn_s']:.1f} s")
            args = [a for c in cgs for a in ("--limit", f"{c}=64G")]
            w = Watcher(args, None)
            try:
                w.started(timeout=300)
                res["startup_s"] = w.startup
                # wait for the first full round, then measure whole rounds over the window
                first = w.of("snapshot")[0]["ts"]
                w.wait_for(lambda r: r["event"] == "snapshot" and r["ts"] > first, 60)
                time.sleep(0.5)
                mark, c0, t_start = time.time(), cpu_ns(w.pid), time.time()
                time.sleep(window_s)
                c1, t_end = cpu_ns(w.pid), time.time()
                rounds = defaultdict(list)
                for r in w.of("snapshot", since=mark):
                    rounds[r["ts"]].append(r["_arrival"])
                full = {ts: arr for ts, arr in rounds.items() if len(arr) == n_cg}
                res["rounds"] = len(full)
                res["cpu_pct"] = 100 * (c1 - c0) / 1e9 / (t_end - t_start)
                res["cpu_ms_per_round"] = ((c1 - c0) / 1e6 / len(full)) if full else None
                res["emit_ms"] = (sorted(max(a) - ts for ts, a in full.items())[len(full) // 2] * 1e3
                                  if full else None)
                last = {r["cgroup"]: r for r in w.of("snapshot", since=mark)}
                res["seen"] = sum(1 for r in last.values() if r["estimate_bytes"] > 0)
                maps = bpf_objects(w.pid)["maps"]
                res["map_bytes"] = sum(int(m.get("memlock", 0)) for m in maps)
                res["maps"] = len(maps)
                res["rss"] = vm_rss(w.pid)
            finally:
                w.stop()
        finally:
            stop_process(spawner)
    return tables(res)


def tables(res) -> dict:
    n = res["cgroups"]
    rows = [
        ("processes spawned (clone3 into each cgroup)", f"{res.get('processes')} in {res.get('spawn_s', 0):.1f} s"),
        ("start-up to first snapshot (seeding all from /proc)", f"{res.get('startup_s', 0):.2f} s"),
        ("BPF map memory (memlock, all maps of beanwatch)", f"{res.get('map_bytes', 0) / MiB:.1f} MiB in {res.get('maps')} maps"),
        ("snapshot rounds in the window (--interval 1)", f"{res.get('rounds')}"),
        ("CPU per snapshot round", f"{res['cpu_ms_per_round']:.1f} ms" if res.get("cpu_ms_per_round") else "n/a"),
        ("round: from its timestamp to its last record out", f"{res['emit_ms']:.1f} ms" if res.get("emit_ms") else "n/a"),
        ("CPU, % of a core", f"{res.get('cpu_pct', 0):.2f}"),
        ("beanwatch VmRSS", f"{res.get('rss', 0) / MiB:.1f} MiB"),
        ("cgroups whose estimate counts their processes", f"{res.get('seen')}/{n}"),
    ]
    return {"tables": [{"id": "scale", "title": f"6. Scale: {n} watched cgroups x {PER_CGROUP} "
                        "processes (--limit CG=64G each)", "columns": ["measure", "value"],
                        "rows": [{"label": a, "cells": [text_cell(b)]} for a, b in rows],
                        "notes": ["maps are preallocated (procs: 131072 entries, leaves: 16384), "
                                  "so their memory does not grow with the number watched"]}],
            "targets": [target(f"scale: {n} cgroups all counted", f"{n}/{n}", res.get("seen"),
                               res.get("seen") == n, f"{res.get('seen')}/{n}")],
            "raw": res}
