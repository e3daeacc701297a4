"""How tight the estimate is: estimate/exact per workload, and the share of time a cgroup
whose limit is twice its workload's peak RSS spends in fast mode.

Phase 1 runs each workload under `beanwatch verify` (samples of estimate and exact every
0.1 s); phase 2 runs it again under `beanwatch watch --limit CG=2*peak --action report` and
counts the snapshots taken in fast mode while the workload ran.
usage: tightness.py [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from common import MiB, Scratch, beanwatch, json_records

WORKLOADS = {
    "vm --vm-keep 64M": ["--vm", "1", "--vm-bytes", "64M", "--vm-keep"],
    "mmap 32M": ["--mmap", "2", "--mmap-bytes", "32M"],
    "mmapmany": ["--mmapmany", "1"],
    "brk": ["--brk", "1"],
    "brk --brk-notouch": ["--brk", "1", "--brk-notouch"],
    "bigheap": ["--bigheap", "1"],
    "mremap 64M": ["--mremap", "1", "--mremap-bytes", "64M"],
    "fork x4": ["--fork", "4"],
}


def stress(seconds: float, args: list[str]) -> list[str]:
    return ["stress-ng", *args, "--oomable", "--timeout", f"{seconds:g}", "--quiet"]


def phase1(seconds: float, args: list[str]) -> dict:
    with Scratch("tight") as sc:
        cg = sc.make("w")
        v = subprocess.Popen(beanwatch("verify", "--cgroup", cg, "--json", "--interval", "0.1",
                                       "--duration", f"{seconds + 3:g}"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(2.0)  # compile and attach
        p = sc.spawn(cg, stress(seconds, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.wait()
        out, _ = v.communicate()
    samples = [r for r in json_records(out) if r["event"] == "verify" and r["processes"]
               and r["exact_bytes"]]
    ratios = [r["estimate_bytes"] / r["exact_bytes"] for r in samples]
    return {"samples": len(samples),
            "violations": sum(1 for r in json_records(out) if r["event"] == "violation"),
            "peak_exact": max((r["exact_bytes"] for r in samples), default=0),
            "ratio_median": statistics.median(ratios) if ratios else None,
            "ratio_max": max(ratios) if ratios else None}


def phase2(seconds: float, args: list[str], limit: int) -> dict:
    with Scratch("tight") as sc:
        cg = sc.make("w")
        w = subprocess.Popen(beanwatch("watch", "--limit", f"{cg}={limit}", "--action", "report",
                                       "--json", "--interval", "0.1"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(2.0)
        start = time.time()
        p = sc.spawn(cg, stress(seconds, args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.wait()
        end = time.time()
        w.terminate()
        out, _ = w.communicate()
    snaps = [r for r in json_records(out) if r["event"] == "snapshot" and start <= r["ts"] <= end]
    fast = sum(1 for r in snaps if r["mode"] == "fast")
    last = snaps[-1] if snaps else {}
    return {"snapshots": len(snaps), "fast_share": fast / len(snaps) if snaps else None,
            "switches": last.get("switches")}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", dest="json_out")
    opts = ap.parse_args()
    rows = []
    for name, args in WORKLOADS.items():
        one = phase1(opts.seconds, args)
        limit = max(2 * one["peak_exact"], 16 * MiB)
        two = phase2(opts.seconds, args, limit)
        rows.append({"workload": name, "limit": limit, **one, **two})
        print(f"{name}: {rows[-1]}", file=sys.stderr)
    print(f"| workload | peak RSS | estimate/exact (median, max) | fast-mode share at limit 2x peak | switches | violations |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = (f"{r['ratio_median']:.1f}, {r['ratio_max']:.1f}" if r["ratio_median"] else "-")
        share = f"{100 * r['fast_share']:.0f}%" if r["fast_share"] is not None else "-"
        print(f"| {r['workload']} | {r['peak_exact'] / MiB:.1f} MiB | {ratio} | {share} | "
              f"{r['switches']} | {r['violations']} |")
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
