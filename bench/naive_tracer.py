"""A naive bcc tracer to compare with: one perf event to Python per fault and per mmap/brk.

Events (exceptions:page_fault_user, and the exits of mmap, munmap and brk) are counted per
cgroup in Python, as a typical bcc script does.

Prints "ready" once attached; on SIGTERM or SIGINT prints one JSON line with the counts.
usage: naive_tracer.py
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter

from bcc import BPF

PROGRAM = r"""
struct ev { u64 cgid; u64 addr; u32 pid; u32 kind; };
BPF_PERF_OUTPUT(events);

static __always_inline int send(void *ctx, u32 kind, u64 addr)
{
	struct ev e = {};
	e.cgid = bpf_get_current_cgroup_id();
	e.pid = bpf_get_current_pid_tgid() >> 32;
	e.kind = kind;
	e.addr = addr;
	events.perf_submit(ctx, &e, sizeof(e));
	return 0;
}

TRACEPOINT_PROBE(exceptions, page_fault_user) { return send(args, 0, args->address); }
TRACEPOINT_PROBE(syscalls, sys_exit_mmap) { return send(args, 1, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_munmap) { return send(args, 2, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_brk) { return send(args, 3, args->ret); }
"""


def main() -> int:
    counts: Counter = Counter()
    lost = [0]
    stop = []
    b = BPF(text=PROGRAM)

    def on_event(_cpu, data, _size):
        ev = b["events"].event(data)
        counts[(ev.cgid, ev.kind)] += 1

    def on_lost(n):
        lost[0] += n

    b["events"].open_perf_buffer(on_event, page_cnt=64, lost_cb=on_lost)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    print("ready", flush=True)
    try:
        while not stop:
            b.perf_buffer_poll(timeout=100)
    finally:
        b.cleanup()
    print(json.dumps({"events": sum(counts.values()), "lost": lost[0],
                      "cgroups": len({c for c, _ in counts})}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
