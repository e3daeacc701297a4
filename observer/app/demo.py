"""`beanwatch demo`: the whole cycle on a scratch cgroup, with nothing to configure."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ..output import render
from ..core.config import Action, Limit
from ..core.errors import BeanwatchError
from ..core.sizes import format_size
from ..host.scratch import remove_cgroup, spawn_in_cgroup

DEMO_STEPS = ["reserve:1G", "touch:16M", "sleep:2", "touch:1G", "hold"]
# The workload's 1 GiB reservation must pass the limit (fast -> slow) and its touching must
# pass it too (the kill): limits outside this range could show neither.
MIN_DEMO_LIMIT, MAX_DEMO_LIMIT = 64 << 20, 768 << 20


def demo_limit_problem(limit: int) -> str | None:
    if MIN_DEMO_LIMIT <= limit <= MAX_DEMO_LIMIT:
        return None
    return (f"--limit for the demo must be from {format_size(MIN_DEMO_LIMIT)} to "
            f"{format_size(MAX_DEMO_LIMIT)}: its workload reserves 1G and touches about 1G, "
            f"which must pass the limit")


def run_demo(host, limit: int, as_json: bool) -> int:
    from .runtime import Options, Signals, build_session, json_sink
    from .session import Watch
    name = f"/beanwatch-demo-{os.getpid()}"
    path = host.cg.path(name)
    os.mkdir(path)
    records: list[dict] = []

    def sink(rec):
        records.append(rec)
        if as_json:
            json_sink(rec)
        elif rec["event"] != "snapshot":
            print(f"  {rec['ts'] - t0:6.2f}s  {render.describe(rec)}", flush=True)

    t0 = time.time()
    stop = Signals()
    proc = None
    session = None
    ended = None
    try:
        watch = Watch(name, host.cg.cgroup_id(name), Limit(limit, None, Action.KILL))
        session = build_session(host, [watch], sink, Options(interval=0.5))
        if not as_json:
            print(f"beanwatch demo: cgroup {name}, limit {format_size(limit)}, action kill")
            print("  workload: reserve 1G (untouched), touch 16M, pause, then touch until stopped")
        session.start()
        proc = spawn_in_cgroup([sys.executable, "-m", "observer.app.workload", *DEMO_STEPS],
                               os.path.join(path, "cgroup.procs"), stderr=subprocess.DEVNULL,
                               cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        session.run(30.0, lambda: stop() or proc.poll() is not None)
        session.run(0.6, stop)  # the records that follow the kill
        ended = proc.poll()     # before our own cleanup kills it: only beanwatch's kill counts
    except BeanwatchError as e:
        render.message(str(e))
        return 1
    finally:
        if session is not None:
            session.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        remove_cgroup(path)
    return summarize(records, limit, ended, as_json)


def summarize(records, limit, returncode, as_json) -> int:
    switches = [r for r in records if r["event"] == "mode"]
    checks = [r for r in records if r["event"] == "check"]
    actions = [r for r in records if r["event"] == "action"]
    killed = returncode is not None and returncode < 0
    ok = bool(switches) and bool(checks) and bool(actions) and killed
    if as_json:
        return 0 if ok else 1
    print("summary:")
    print(f"  mode switches {len(switches)}, exact checks {len(checks)}, actions {len(actions)}")
    for a in actions:
        over = a["held_bytes"] - limit
        print(f"  {a['action']} at {format_size(a['held_bytes'])} held "
              f"({format_size(over)} past the limit)")
    if killed:
        print(f"  workload was killed (exit {returncode})")
    elif returncode is None:
        print("  workload was NOT killed: still running when the demo ended (then stopped by "
              "the demo's cleanup)")
    else:
        print(f"  workload was NOT killed: it exited by itself (exit {returncode})")
    print("  result: " + ("the whole cycle ran" if ok else "INCOMPLETE"))
    return 0 if ok else 1
