#!/usr/bin/env bash
# Runs a script of this project inside a real systemd host: a Debian 12 (bookworm) guest with
# systemd as PID 1, booted under QEMU, then prints its output and exits with its status.
#
#   scripts/vm-systemd.sh [SCRIPT [ARG...]]      default SCRIPT: scripts/vm-systemd-test.sh
#   scripts/vm-systemd.sh --build                build (or check) the cached image only
#
# The image: a raw ext4 disk made once with mmdebstrap from the Debian archive and cached
# under $BW_VM_CACHE (default /var/lib/beanwatch-vm/systemd), rebuilt when its recipe below
# changes. Every run boots a copy-on-write overlay of it, so the cached image stays clean.
# The guest boots the image's own kernel and initrd (Debian 12's 6.1), without network.
# This project's directory is shared read-only over 9p; the guest copies it (without .git
# and .venv) to /root/src and runs SCRIPT there as root, in a oneshot unit started by
# systemd.wants= on the kernel command line, then powers off. SCRIPT's output and status
# come back through a second, writable 9p share.
#
# Environment:
#   VM_TIMEOUT   seconds the whole guest run may take (default 1200)
#   VM_MEMORY    guest memory in MiB (default 2048); VM_CPUS (default 2)
#   VM_VERBOSE=1 also shows the guest's serial console while it runs
#   VM_KEEP=1    keeps the run directory (overlay, console log) and prints its path
#   VM_SHARE=DIR also shares DIR read-only: the guest mounts it at /mnt/bwshare and SCRIPT
#                finds that path in BW_VM_SHARE (for files too big to copy with the project)
#   BW_VM_CACHE  where the image is cached
# Host tools (TEST-only dependencies, installed on first use): mmdebstrap, qemu-system-x86,
# qemu-utils. /dev/kvm may exist but a nested KVM guest hangs here, so QEMU runs with TCG.
# Run one guest at a time on a shared host: `flock /tmp/bw-vm.lock scripts/vm-systemd.sh`
# (make test-systemd does).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cache=${BW_VM_CACHE:-/var/lib/beanwatch-vm/systemd}
VM_TIMEOUT=${VM_TIMEOUT:-1200}
VM_MEMORY=${VM_MEMORY:-2048}
VM_CPUS=${VM_CPUS:-2}
suite=bookworm
mirror=http://deb.debian.org/debian

say() { echo "vm-systemd: $*" >&2; }
die() { echo "vm-systemd: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (mmdebstrap and QEMU's 9p shares need it)"
case "$VM_TIMEOUT" in '' | *[!0-9]*) die "VM_TIMEOUT must be a number of seconds" ;; esac

# --- host tools (for tests only: never part of `make install`) ---------------------------
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
	say "installing the test tools ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --- the image ---------------------------------------------------------------------------
packages=(systemd systemd-sysv dbus udev kmod procps util-linux iproute2 python3 python3-bpfcc
	python3-venv python3-pip python3-setuptools python3-wheel python3-click python3-pyroute2
	python3-prometheus-client linux-image-amd64 linux-headers-amd64 make jq bpftool)

# The guest side, baked into the image: a oneshot unit that mounts the two shares, runs the
# runner the host leaves in the output share (so that changing it needs no new image), and
# powers off whatever happens.
read -r -d '' boot <<'EOF' || true
#!/bin/bash
# bw-vmtest: started by systemd.wants=bw-vmtest.service on the kernel command line.
up=$(cut -d' ' -f1 /proc/uptime)
mkdir -p /mnt/bwsrc /mnt/bwout
modprobe -q 9pnet_virtio
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 bwout /mnt/bwout || exit 1
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro bwsrc /mnt/bwsrc || exit 1
echo "$up" >/mnt/bwout/runner-uptime
exec bash /mnt/bwout/runner
EOF
# The runner: copies the project and runs the command the host left in cmd; records its
# output, status and the boot's journal.
read -r -d '' runner <<'EOF' || true
out=/mnt/bwout
# This unit is part of the boot, so systemd-analyze time has no answer yet: the timestamps.
us() { systemctl show -p "$1" --value "${@:2}"; }
printf 'kernel to systemd (PID 1) %.2f s, to multi-user.target %.2f s\n' \
	"$(us UserspaceTimestampMonotonic)e-6" \
	"$(us ActiveEnterTimestampMonotonic multi-user.target)e-6" >"$out/boot-times"
rm -rf /root/src && mkdir -p /root/src
tar -C /mnt/bwsrc --exclude=./.git --exclude=./.venv --exclude='*/__pycache__' -cf - . \
	| tar -C /root/src -xf -
if [ -f "$out/share" ]; then
	mkdir -p /mnt/bwshare
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro bwshare /mnt/bwshare || exit 1
	export BW_VM_SHARE=/mnt/bwshare
fi
cd /root/src || exit 1
eval "set -- $(cat "$out/cmd")"
bash "$@" 2>&1 | tee "$out/log"
status=${PIPESTATUS[0]}
journalctl -b --no-pager >"$out/journal" 2>&1
echo "$status" >"$out/status"
sync
echo "bw-vmtest: status $status, powering off"
EOF
read -r -d '' unit <<'EOF' || true
[Unit]
Description=beanwatch test run (host: scripts/vm-systemd.sh)
After=multi-user.target
SuccessAction=poweroff-force
FailureAction=poweroff-force
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bw-vmtest
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
EOF

recipe="suite=$suite mirror=$mirror packages=${packages[*]}
$(printf '%s\n%s\n' "$boot" "$unit" | sha256sum | cut -c1-16) v1"

build_image() {
	local work t0
	t0=$(date +%s)
	work=$(mktemp -d "$cache/build.XXXXXX")
	say "building the $suite image in $work (a few minutes)"
	# minbase plus the list: apt's Recommends are not installed (no gcc beyond the headers').
	mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
		--customize-hook='echo bw-systemd >"$1/etc/hostname"' \
		--customize-hook='echo "127.0.1.1 bw-systemd" >>"$1/etc/hosts"' \
		--customize-hook='echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"' \
		--customize-hook='chroot "$1" passwd -d root' \
		--customize-hook='rm -f "$1"/etc/machine-id; touch "$1"/etc/machine-id' \
		"$suite" "$work/root" "deb $mirror $suite main" "deb $mirror $suite-updates main" \
		"deb ${mirror%/debian}/debian-security $suite-security main" >&2
	install -D -m 0755 /dev/stdin "$work/root/usr/local/sbin/bw-vmtest" <<<"$boot"
	install -D -m 0644 /dev/stdin "$work/root/etc/systemd/system/bw-vmtest.service" <<<"$unit"
	cp "$(ls "$work"/root/boot/vmlinuz-* | sort -V | tail -n1)" "$work/vmlinuz"
	cp "$(ls "$work"/root/boot/initrd.img-* | sort -V | tail -n1)" "$work/initrd.img"
	# headroom for `make install` and its venv; the raw file is sparse
	mkfs.ext4 -q -F -L bwroot -d "$work/root" "$work/base.img" 6G
	rm -rf "$work/root"
	mv "$work/base.img" "$work/vmlinuz" "$work/initrd.img" "$cache/"
	printf '%s\n' "$recipe" >"$cache/recipe"
	rmdir "$work"
	say "image built in $(($(date +%s) - t0)) s: $(du -h --apparent-size "$cache/base.img" | cut -f1)" \
		"apparent, $(du -h "$cache/base.img" | cut -f1) on disk"
}

mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8
if [ ! -f "$cache/base.img" ] || [ "$(cat "$cache/recipe" 2>/dev/null)" != "$recipe" ]; then
	rm -f "$cache/base.img" "$cache/recipe"
	rm -rf "$cache"/build.*
	build_image
fi
[ "${1:-}" = --build ] && { say "image ready: $cache/base.img"; exit 0; }

# --- one run -----------------------------------------------------------------------------
script=${1:-scripts/vm-systemd-test.sh}
[ $# -gt 0 ] && shift
[ -f "$src/$script" ] || die "no script $script in $src"
run=$(mktemp -d /tmp/bw-vm-systemd.XXXXXX)
cleanup() {
	if [ "${VM_KEEP:-0}" = 1 ]; then say "kept $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
mkdir "$run/out"
printf '%q ' "$script" "$@" >"$run/out/cmd"
printf '%s\n' "$runner" >"$run/out/runner"
share=()
if [ -n "${VM_SHARE:-}" ]; then
	[ -d "$VM_SHARE" ] || die "VM_SHARE=$VM_SHARE is not a directory"
	share=(-virtfs "local,path=$(cd "$VM_SHARE" && pwd),mount_tag=bwshare,security_model=none,readonly=on")
	: >"$run/out/share"
fi
qemu-img create -q -f qcow2 -b "$cache/base.img" -F raw "$run/overlay.qcow2"
flock -u 8   # the image is built; other runs may start their own overlays

console=$run/console.log
: >"$console"
tailer=
if [ "${VM_VERBOSE:-0}" = 1 ]; then
	tail -f "$console" >&2 &
	tailer=$!
fi
say "booting (TCG, ${VM_CPUS} CPUs, ${VM_MEMORY} MiB, timeout ${VM_TIMEOUT} s): $script $*"
t0=$(date +%s.%N)
set +e
# single-threaded TCG: multi-threaded TCG lets a vCPU run a stale int3 after the guest kernel
# patches its own text (tracepoints switched on or off); see scripts/vm.sh
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 -accel tcg,thread=single -cpu max -smp "$VM_CPUS" -m "$VM_MEMORY" \
	-nodefaults -no-user-config -display none -no-reboot \
	-serial "file:$console" \
	-kernel "$cache/vmlinuz" -initrd "$cache/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.wants=bw-vmtest.service systemd.show_status=auto" \
	-drive "file=$run/overlay.qcow2,format=qcow2,if=virtio,cache=unsafe" \
	-virtfs "local,path=$src,mount_tag=bwsrc,security_model=none,readonly=on" \
	-virtfs "local,path=$run/out,mount_tag=bwout,security_model=none" "${share[@]}" \
	-nic none -device virtio-rng-pci
qrc=$?
set -e
t1=$(date +%s.%N)
[ -n "$tailer" ] && kill "$tailer" 2>/dev/null
wall=$(echo "$t1 - $t0" | bc 2>/dev/null || python3 -c "print(round($t1 - $t0, 1))")

if [ -f "$run/out/log" ]; then
	cat "$run/out/log"
fi
[ -f "$run/out/boot-times" ] && say "guest: $(cat "$run/out/boot-times"), test unit at $(cat "$run/out/runner-uptime") s"
if [ ! -f "$run/out/status" ]; then
	if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
		say "the guest ran out of VM_TIMEOUT (${VM_TIMEOUT} s); console's last lines:"
	else
		say "the guest stopped (QEMU status $qrc) without a test status; console's last lines:"
	fi
	tail -n 40 "$console" >&2
	VM_KEEP=1
	exit 2
fi
status=$(cat "$run/out/status")
[ "$qrc" = 0 ] || say "QEMU ended with status $qrc: the guest did not power off by itself"
say "guest run took ${wall} s (QEMU start to power-off); test status $status"
exit "$status"
