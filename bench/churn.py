"""Cgroup churn: a tenant making, entering, leaving and removing cgroups under a watched one
as fast as it can; beanwatch's CPU per cgroup churned, of several trees in one run.

usage: churn.py [--reps N] [--seconds S] [--bulk N] [--profile DIR] NAME=ROOT...
  ROOT: a beanwatch tree (a worktree or a detached snapshot). Each repetition runs every tree
  once, in rotated order, each in a child of its own (the session in-process there: its CPU
  is RUSAGE_SELF, the churner's is not in it). --bulk makes N idle cgroups beside the watched
  one first (a walk of the tree then costs something). --profile DIR: each run also writes
  a cProfile of the session to DIR/NAME-REP.prof (slower: profile runs are not for ratios).

Prints per tree: cgroups churned a second, the session's CPU (share of a core), us of CPU
per cgroup churned, events per cgroup, walks, the longest loop round (work between two
polls, ms wall clock; and the longest in the loop's own CPU time) and the longest walk
(ms); then the median ratio of us per cgroup to the first
tree's of the same repetition (min-max). No assertion: the numbers are the result.

    sudo flock /tmp/bw-host.lock .venv/bin/python bench/churn.py base=/work/snap after=.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# The churner of tests/integration/test_fresh_cgroups.py (mkdir, a sleeper moved in and out,
# rmdir, in a loop; prints how many cgroups it made)
CHURNER = os.path.join(os.path.dirname(HERE), "tests", "programs", "churner.py")


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(root: str, seconds: float, bulk: int, profile: str | None) -> dict:
    """In a child: the session of the tree at root, watching a tenant that churns."""
    sys.path.insert(0, os.path.abspath(root))
    from observer.app.runtime import Options, build_session, open_host
    from observer.app.session import Watch
    from observer.core.config import Action, Limit
    from observer.kernel import loader
    sys.path.insert(1, HERE)
    from common import Scratch   # after observer: its own tree stays the one imported
    loader.probe_source = lambda: os.path.join(os.path.abspath(root), "probes", "accounting.c")
    assert loader.__file__.startswith(os.path.abspath(root)), loader.__file__
    host = open_host()
    with Scratch("churn") as sc:
        sc.make_idle(bulk)
        parent, home = sc.make("tenant"), sc.make("home")
        watch = Watch(parent, host.cg.cgroup_id(parent), Limit(256 << 20, None, Action.KILL))
        records = []
        session = build_session(host, [watch], records.append, Options(interval=1.0))
        # the longest stretch of work between two polls: how long the loop is deaf
        probes, poll = session.probes, session.probes.poll
        # (wall clock, and this thread's CPU: a long wall stretch with little CPU is the
        # scheduler's, the churner and the kernel sharing two cores, not the loop's work)
        state = {"back": None, "worst": 0.0, "polls": 0, "cpu_back": None, "worst_cpu": 0.0}

        def timed_poll(ms):
            if state["back"] is not None:
                state["worst"] = max(state["worst"], time.monotonic() - state["back"])
                state["worst_cpu"] = max(state["worst_cpu"],
                                         time.thread_time() - state["cpu_back"])
            poll(ms)
            state["polls"] += 1
            state["back"], state["cpu_back"] = time.monotonic(), time.thread_time()
        probes.poll = timed_poll
        # each stretch of walking the loop does at once: a slice of a walk, or a whole one
        walks = []

        def timed(fn):
            def run(*a, **kw):
                t = time.monotonic()
                try:
                    return fn(*a, **kw)
                finally:
                    walks.append(time.monotonic() - t)
            return run
        session.walk_slice = timed(session.walk_slice)
        session.refresh_tree = timed(session.refresh_tree)
        session.start()
        try:
            session.run(0.5, lambda: False)   # settle
            leaves0 = len(probes.counters())
            state["worst"], state["worst_cpu"], state["polls"], walks[:] = 0.0, 0.0, 0, []
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            seen0, walks0 = session.events_seen, session.walks
            churner = sc.spawn(home, [sys.executable, CHURNER, sc.path(parent),
                                      sc.path(home), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
            prof = None
            if profile:
                import cProfile
                prof = cProfile.Profile(time.process_time)   # CPU, not waits
                prof.enable()
            t0, c0 = time.monotonic(), cpu_self()
            session.run(seconds + 5, lambda: churner.poll() is not None)
            wall, cpu = time.monotonic() - t0, cpu_self() - c0
            if prof is not None:
                prof.disable()
                prof.dump_stats(profile)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            made = int(churner.communicate(timeout=30)[0] or 0)
            errors = [r for r in records if r.get("event") == "error"]
            return {"made": made, "seconds": round(wall, 2), "per_s": round(made / wall),
                    "cpu": round(cpu / wall, 3),
                    "us_per_cgroup": round(cpu / made * 1e6, 1) if made else None,
                    "events_per_cgroup": round((session.events_seen - seen0) / made, 2)
                    if made else None,
                    "walks": session.walks - walks0,
                    "rounds_per_cgroup": round(state["polls"] / made, 3) if made else None,
                    "sys_share": round((ru.ru_stime - ru0.ru_stime) / max(cpu, 1e-9), 2),
                    "ctx_switches_per_cgroup": round((ru.ru_nvcsw - ru0.ru_nvcsw + ru.ru_nivcsw
                                                      - ru0.ru_nivcsw) / made, 2) if made else None,
                    "worst_round_ms": round(state["worst"] * 1e3, 1),
                    "worst_round_cpu_ms": round(state["worst_cpu"] * 1e3, 1),
                    "worst_walk_ms": round(max(walks, default=0.0) * 1e3, 1),
                    "located": session.located, "deferred": session.locate_deferred,
                    "lost": session.last_stats[0], "errors": len(errors),
                    # entries of the kernel's leaves map left behind by the churn
                    "leaves_grown": len(probes.counters()) - leaves0}
        finally:
            session.stop()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        root, seconds, bulk, profile = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), \
            sys.argv[5] or None
        print(json.dumps(one(root, seconds, bulk, profile)), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--bulk", type=int, default=0)
    ap.add_argument("--profile", default=None)
    ap.add_argument("trees", nargs="+", metavar="NAME=ROOT")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("churn: needs root", file=sys.stderr)
        return 1
    trees = []
    for t in args.trees:
        name, sep, root = t.partition("=")
        if not sep or not os.path.isdir(os.path.join(root, "observer")):
            print(f"churn: {t!r} is not NAME=ROOT of a beanwatch tree", file=sys.stderr)
            return 2
        trees.append((name, root))
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    results = {name: [] for name, _ in trees}
    for rep in range(args.reps):
        order = trees[rep % len(trees):] + trees[:rep % len(trees)]
        for name, root in order:
            prof = os.path.join(args.profile, f"{name}-{rep}.prof") if args.profile else ""
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", root,
                                str(args.seconds), str(args.bulk), prof],
                               capture_output=True, text=True, timeout=args.seconds + 120)
            if p.returncode:
                print(f"{name} rep {rep}: failed\n{p.stderr[-2000:]}", file=sys.stderr)
                results[name].append(None)
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            results[name].append(r)
            print(json.dumps({"tree": name, "rep": rep, **r}), flush=True)
    first = trees[0][0]
    print(f"\n{'tree':10} {'cg/s':>6} {'cpu':>5} {'us/cg':>7} {'ev/cg':>6} {'walks':>5} "
          f"{'round ms':>8} {'cpu ms':>6} {'walk ms':>7}  us/cg ratio to {first} (min-max)")
    for name, _ in trees:
        rs = [r for r in results[name] if r and r["made"]]
        if not rs:
            print(f"{name:10} no result")
            continue

        def med(k):
            return statistics.median(r[k] for r in rs)
        ratios = [r["us_per_cgroup"] / b["us_per_cgroup"]
                  for r, b in zip(results[name], results[first]) if r and b and r["made"]
                  and b["made"]]
        ratio = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
                 if ratios else "-")
        print(f"{name:10} {med('per_s'):6.0f} {med('cpu'):5.0%} {med('us_per_cgroup'):7.1f} "
              f"{med('events_per_cgroup'):6.2f} {med('walks'):5.0f} {med('worst_round_ms'):8.1f} "
              f"{med('worst_round_cpu_ms'):6.1f} {med('worst_walk_ms'):7.1f}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
