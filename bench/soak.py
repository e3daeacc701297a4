"""Soak (not in CI): a stress-ng mix in several cgroups under limits with kill actions.

Runs `beanwatch watch --config` (kill on every cgroup) and `beanwatch verify` side by side
for --minutes, relaunching each workload when it ends or is killed, and reports beanwatch's
RSS over time, events lost, violations, kills per cgroup and wrong kills (a kill where no
kill was expected, or whose exact check was not above the limit).
usage: soak.py [--minutes 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from common import MiB, Scratch, beanwatch

# cgroup: (stress-ng arguments, limit, kills expected)
MIX = {
    # stress-ng 0.15 divides --vm-bytes among the workers: ~150 MiB in all with its parents
    "vm": (["--vm", "2", "--vm-bytes", "128M", "--vm-keep"], "128M", True),
    "mmap": (["--mmap", "4", "--mmap-bytes", "32M"], "1G", False),
    "fork": (["--fork", "4"], "1G", False),
    "brk": (["--brk", "1"], "64M", False),
    "bigheap": (["--bigheap", "1"], "256M", True),
    "mremap": (["--mremap", "2", "--mremap-bytes", "32M"], "1G", False),
}


def reader(proc, sink):
    for line in proc.stdout:
        if line.startswith("{"):
            sink.append(json.loads(line))


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--json", dest="json_out")
    opts = ap.parse_args()
    seconds = opts.minutes * 60
    with Scratch("soak") as sc, tempfile.TemporaryDirectory() as tmp:
        cgs = {name: sc.make(name) for name in MIX}
        conf = os.path.join(tmp, "soak.toml")
        with open(conf, "w") as f:
            f.write("[defaults]\naction = \"kill\"\ninterval = 1.0\n")
            for name, (_, limit, _) in MIX.items():
                f.write(f'[cgroup."{cgs[name]}"]\nlimit = "{limit}"\n')
        os.chmod(conf, 0o600)
        watch_records, verify_records = [], []
        w = subprocess.Popen(beanwatch("watch", "--config", conf, "--json"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        v = subprocess.Popen(beanwatch("verify", "--cgroup", sc.prefix, "--json", "--interval",
                                       "1", "--duration", f"{seconds + 5:g}"),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threads = [threading.Thread(target=reader, args=(w, watch_records), daemon=True),
                   threading.Thread(target=reader, args=(v, verify_records), daemon=True)]
        for t in threads:
            t.start()
        time.sleep(3)
        running: dict[str, subprocess.Popen] = {}
        launches = {name: 0 for name in MIX}
        rss = []
        start = time.time()
        try:
            while time.time() - start < seconds:
                for name, (args, _, _) in MIX.items():
                    p = running.get(name)
                    if p is None or p.poll() is not None:
                        running[name] = sc.spawn(cgs[name], ["stress-ng", *args, "--oomable",
                                                             "--timeout", "60", "--quiet"],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        launches[name] += 1
                rss.append((round(time.time() - start), rss_of(w.pid)))
                time.sleep(10 if seconds > 120 else 1)
        finally:
            for p in running.values():
                if p.poll() is None:
                    p.kill()
            w.terminate()
            w.wait(timeout=30)
            v.wait(timeout=seconds + 60)
        for t in threads:
            t.join(timeout=5)
    by_cg = {v: k for k, v in cgs.items()}
    actions = [r for r in watch_records if r["event"] == "action"]
    wrong = [a for a in actions if not MIX[by_cg[a["cgroup"]]][2]
             or a["exact_bytes"] is None or a["exact_bytes"] <= a["limit_bytes"]]
    lost = [r for r in watch_records if r["event"] == "lost"]
    errors = [r for r in watch_records if r["event"] == "error"]
    violations = [r for r in verify_records if r["event"] == "violation"]
    report = {
        "minutes": opts.minutes,
        "beanwatch_rss_mib": [(t, round(b / MiB, 1)) for t, b in rss],
        "events_lost": sum(r.get("events_lost", 0) for r in lost) // max(1, len(MIX)),
        "errors": len(errors),
        "violations": len(violations),
        "kills": {name: sum(1 for a in actions if by_cg[a["cgroup"]] == name) for name in MIX},
        "launches": launches,
        "wrong_kills": len(wrong),
        "exit_code": w.returncode,
    }
    rss_values = [b for _, b in report["beanwatch_rss_mib"]]
    print(f"soak {opts.minutes:g} min: beanwatch RSS first {rss_values[0]} MiB, "
          f"max {max(rss_values)} MiB, last {rss_values[-1]} MiB")
    print(f"events lost {report['events_lost']}, errors {report['errors']}, "
          f"violations {report['violations']}, wrong kills {report['wrong_kills']}, "
          f"exit {report['exit_code']}")
    print("kills/launches: " + ", ".join(f"{n} {report['kills'][n]}/{launches[n]}" for n in MIX))
    if opts.json_out:
        with open(opts.json_out, "w") as f:
            json.dump(report, f, indent=1)
    ok = not (violations or wrong or errors) and w.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
