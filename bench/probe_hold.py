"""Holds beanwatch's BPF programs loaded, without a session: what bench/probecost.py compares.

usage: probe_hold.py ROOT fast|slow CGROUP_DIR
Loads the probes of the beanwatch tree at ROOT (its observer package, so two revisions can be
compared), gives CGROUP_DIR bounds that never fire (fast), or puts it in slow mode with
resident growth followed (slow), prints "ready" and polls its ring buffer until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[2] not in ("fast", "slow"):
        print("usage: probe_hold.py ROOT fast|slow CGROUP_DIR", file=sys.stderr)
        return 2
    root, mode, cgdir = sys.argv[1:]
    sys.path.insert(0, root)
    from observer.core.model import LeafBounds
    from observer.kernel import loader
    from observer.kernel.loader import Probes
    # the tree's own probes (an editable install maps observer.probes to one tree only)
    loader.probe_source = lambda: os.path.join(os.path.abspath(root), "probes", "accounting.c")
    probes = Probes(lambda ev: None)
    probes.start()
    print(f"loader={loader.__file__} task_btf={getattr(probes, 'task_btf', None)}",
          file=sys.stderr, flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        cgid = os.stat(cgdir).st_ino
        big = 1 << 60
        if mode == "slow":
            probes.set_bounds(cgid, LeafBounds(vm_high=big, vm_low=-big, rss_high=big,
                                               slow=True, gen=1))
            probes.enable_faults(True)
        else:
            probes.set_bounds(cgid, LeafBounds(vm_high=big, vm_low=-big))
        print("ready", flush=True)
        while not stop:
            probes.poll(100)
    finally:
        probes.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
