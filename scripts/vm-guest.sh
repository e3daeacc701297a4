#!/usr/bin/env bash
# Runs inside a scripts/vm.sh guest (as root, as virtme-ng's --exec): readies what beanwatch
# needs, runs the command from RUN/command in PROJECT, and leaves its stdout, stderr and exit
# status in RUN, a directory shared writable with the host. Not meant to be run on a host.
set -u
run=$1 project=$2
exec 3>&1 4>&2 >"$run/setup.log" 2>&1
date +%s.%N >"$run/boot"
set -x

# The host root is shared read-only, with tmpfs overlays; virtme-ng mounts /proc, /sys, /dev.
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# Pure cgroup2 at /sys/fs/cgroup, as a systemd host has it (unified), with the memory
# controller (and cpu, io, pids where the kernel has them) enabled for the root's children.
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; then
	while mountpoint -q /sys/fs/cgroup; do umount -l /sys/fs/cgroup || break; done
	mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi
for c in memory cpu io pids; do
	grep -qw "$c" /sys/fs/cgroup/cgroup.controllers && echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control
done
cat /sys/fs/cgroup/cgroup.subtree_control
grep -w cgroup2 /proc/self/mountinfo

# /lib/modules/KV links to the unpacked package's modules directory, whose build and source
# links lead to the package's own headers; VM_HEADERS=host swaps in the host's headers.
kv=$(uname -r)
if [ -f "$run/headers" ]; then
	mods=$(readlink -f "/lib/modules/$kv")
	rm -f "/lib/modules/$kv" && mkdir "/lib/modules/$kv"
	for f in "$mods"/*; do ln -s "$f" "/lib/modules/$kv/"; done
	{ read -r hdr; read -r com; } <"$run/headers"
	ln -sfn "$hdr" "/lib/modules/$kv/build"
	ln -sfn "$com" "/lib/modules/$kv/source"
fi
ls -ld "/lib/modules/$kv" "/lib/modules/$kv/build" "/lib/modules/$kv/build/include"

# Writable where pytest and Python want to write: PROJECT is an overlay (vm.sh's
# --overlay-rwdir) and /tmp a tmpfs; nothing written there reaches the host.
export TMPDIR=/tmp HOME=/root PYTHONDONTWRITEBYTECODE=1
. "$run/env"
cd "$project" || exit 1
set +x
exec >&3 2>&4 3>&- 4>&-
date +%s.%N >"$run/ready"
bash -c "$(cat "$run/command")" </dev/null >"$run/stdout" 2>"$run/stderr"
echo $? >"$run/status"
date +%s.%N >"$run/done"
sync
