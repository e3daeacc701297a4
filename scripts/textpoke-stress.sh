#!/usr/bin/env bash
# scripts/textpoke-stress.sh [SECONDS]: inside a scripts/vm.sh guest (root), patches the
# kernel's own text over and over while other processes run through the patched code, for
# SECONDS (default 30), then prints "survived".
#
# Enabling or disabling a tracepoint flips its static key: the kernel rewrites the jump at
# every call site with text_poke_bp (int3 first, then the rest, then the first byte, with a
# serializing IPI to every CPU between the steps). beanwatch does the same every time it
# attaches or detaches a program. Here kmem:rss_stat is flipped through tracefs (the first
# enabled event also hooks the scheduler's tracepoints for comm recording) while exec and
# exit run mm_trace_rss_stat on the other CPU. Under QEMU's multi-threaded TCG the guest dies
# of it: "Oops: int3" then a panic (Debian 6.12, QEMU 7.2, within 20 s) or a hard hang with an
# RCU stall (6.1). Under single-threaded TCG (what vm.sh uses) it survives.
# Not for a host: it turns tracing on and off machine-wide.
set -eu
secs=${1:-30}
[[ $secs =~ ^[1-9][0-9]{0,4}$ ]] || { echo "textpoke-stress: SECONDS must be a positive integer, not '$secs'" >&2; exit 2; }
ev=/sys/kernel/tracing/events/kmem/rss_stat/enable
[ -w "$ev" ] || { echo "textpoke-stress: cannot write $ev (root, tracefs mounted?)" >&2; exit 2; }
end=$(( $(date +%s) + secs ))
( n=0; while [ "$(date +%s)" -lt $end ]; do echo 1 >$ev; echo 0 >$ev; n=$((n + 1)); done; echo "flips $n" ) &
( n=0; while [ "$(date +%s)" -lt $end ]; do /bin/true; n=$((n + 1)); done; echo "execs $n" ) &
wait
echo 0 >$ev
echo "survived ${secs}s"
