"""Built-in workloads for the demo and tests: reserve address space, touch memory.

Run as `python -m observer.workload STEP...`, steps in order:
  reserve:SIZE   map SIZE of private anonymous memory without touching it
  touch:SIZE     write one byte per page into the reserved memory, continuing where the
                 last touch stopped (reserves more if needed)
  sleep:SECONDS  pause
  hold           sleep until killed
Each step is announced on stderr.
"""

from __future__ import annotations

import mmap
import sys
import time

from ..core.sizes import parse_size

PAGE = mmap.PAGESIZE


def run(steps: list[str]) -> int:
    regions: list[mmap.mmap] = []
    touched = 0   # bytes touched across regions, in order
    for step in steps:
        op, _, arg = step.partition(":")
        print(f"workload: {step}", file=sys.stderr, flush=True)
        if op == "reserve":
            regions.append(mmap.mmap(-1, parse_size(arg), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
        elif op == "touch":
            want = touched + parse_size(arg)
            if sum(len(r) for r in regions) < want:
                regions.append(mmap.mmap(-1, want - sum(len(r) for r in regions),
                                         flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
            base = 0
            for r in regions:
                lo, hi = max(touched - base, 0), min(want - base, len(r))
                for off in range(-(-lo // PAGE) * PAGE, hi, PAGE):
                    r[off] = 1
                base += len(r)
            touched = want
        elif op == "sleep":
            time.sleep(float(arg))
        elif op == "hold":
            while True:
                time.sleep(3600)
        else:
            print(f"workload: unknown step {step!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
