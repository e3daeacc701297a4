"""The floor of a hook: an empty RAW_TRACEPOINT_PROBE program on each raw tracepoint named.

What any program on these hooks costs at least (the tracepoint's dispatch into BPF), to
read beanwatch's cost against. Prints "ready" once attached; exits on SIGTERM or SIGINT.
usage: floor.py TRACEPOINT...   (e.g. mmap_lock_released rss_stat)
"""

from __future__ import annotations

import signal
import sys

from bcc import BPF


def main() -> int:
    hooks = sys.argv[1:]
    if not hooks or not all(h.isidentifier() for h in hooks):
        print("usage: floor.py TRACEPOINT...", file=sys.stderr)
        return 2
    bpf = BPF(text="\n".join(f"RAW_TRACEPOINT_PROBE({h}) {{ return 0; }}" for h in hooks))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        bpf.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
