#!/usr/bin/env bash
# scripts/vm.sh KERNEL COMMAND...: runs COMMAND in this project's directory inside a QEMU guest
# booted from Debian's own kernel image package for KERNEL, prints its stdout and stderr, and
# exits with its status. The guest sees this host's root filesystem read-only (virtme-ng), with
# writable overlays: nothing it does reaches the host except the run directory below.
#
#   KERNEL   5.10 (Debian 11 bullseye), 6.1 (12 bookworm), 6.12 (13 trixie), sid (unstable's newest)
#   COMMAND  one argument: a bash command line (bash -c); several: the program and its arguments
#
# Environment:
#   VM_APPEND    extra kernel command line, e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf
#   VM_MEM       guest memory (default 2G)          VM_CPUS   guest CPUs (default 2)
#   VM_KVM=1     try KVM (default TCG: a nested KVM guest hangs at boot on these machines)
#   VM_TCG_THREAD  single (default) or multi: QEMU's TCG threading with more than one CPU. Multi
#                (QEMU's own default) kills guests that patch kernel text, as every BPF attach
#                does: "Oops: int3", a panic or a hang (scripts/textpoke-stress.sh shows it)
#   VM_TIMEOUT   wall-clock seconds before the guest is killed (default 1800)
#   VM_VERBOSE=1 show the guest's console (kernel log) on stderr as well
#   VM_HEADERS   package (default): bcc compiles against the kernel's own Debian headers package,
#                as on a real host of that release; host: against this host's newest
#                /usr/src/linux-headers-*-amd64 (what `make setup` installs), linked in the guest
#   BW_TEST_TIME_SCALE  passed into the guest: integration tests stretch their deadlines for
#                beanwatch by it (default 4 under TCG, 1 with KVM)
#   VM_KEEP=1    keep the run directory (console, guest setup log, stdout, stderr, status)
#   BW_VM_CACHE  cache root (default /var/lib/beanwatch-vm): apt lists, .debs, unpacked kernels,
#                the virtme-ng tool venv, and per-run directories. It must not be under /tmp,
#                /var/tmp, /var/cache, /var/log or /var/lib/apt: the guest mounts tmpfs there.
#   BW_VM_REFRESH=1  look for a newer kernel package even if one is unpacked already
#
# Needs root (apt, dpkg-deb, the cache). First use installs qemu-system-x86, busybox-static and
# kmod (test-only host packages, not beanwatch's runtime ones) and virtme-ng into a tool venv.
set -euo pipefail

VNG_VERSION=1.42
HOST_PACKAGES=(qemu-system-x86 busybox-static kmod file)

die() { echo "vm.sh: $*" >&2; exit 125; }     # the runner failed
usage() { echo "vm.sh: $*" >&2; exit 2; }     # bad arguments or environment

[ $# -ge 2 ] || { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
kernel=$1; shift

project=$(cd "$(dirname "$0")/.." && pwd)
cache=${BW_VM_CACHE:-/var/lib/beanwatch-vm}
mem=${VM_MEM:-2G}
cpus=${VM_CPUS:-2}
timeout=${VM_TIMEOUT:-1800}
[[ $cpus =~ ^[1-9][0-9]{0,2}$ ]] || usage "VM_CPUS must be a positive integer, not '$cpus'"
[[ $timeout =~ ^[1-9][0-9]{0,6}$ ]] || usage "VM_TIMEOUT must be a positive number of seconds, not '$timeout'"
[[ $mem =~ ^[1-9][0-9]{0,6}[MG]$ ]] || usage "VM_MEM must look like 2G or 1536M, not '$mem'"
case ${VM_HEADERS:-package} in package | host) ;; *) usage "VM_HEADERS must be package or host, not '$VM_HEADERS'" ;; esac

case $kernel in
	5.10 | bullseye) suite=bullseye ;;
	6.1 | bookworm) suite=bookworm ;;
	6.12 | trixie) suite=trixie ;;
	sid | unstable) suite=sid ;;
	*) usage "unknown kernel '$kernel' (one of 5.10, 6.1, 6.12, sid)" ;;
esac

case $cache in
	/tmp | /tmp/* | /var/tmp* | /var/cache* | /var/log* | /var/lib/apt*)
		usage "BW_VM_CACHE=$cache is hidden from the guest (it mounts tmpfs there): choose another" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (apt-get, dpkg-deb and the cache root need it)"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)

# --- host tools (once) ------------------------------------------------------------------------
missing=()
for p in "${HOST_PACKAGES[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "vm.sh: installing test-only host packages: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq -o DPkg::Lock::Timeout=600 >&2
	apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >&2
fi

# virtme-ng lives in a tool venv of its own: it is a host-side tool of the test runner, never
# imported by beanwatch or its tests, so it stays out of the project's .venv (and out of
# `make setup`, which every CI run and every user runs), and every worktree shares one copy.
vng=$cache/vng/bin/vng
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$vng" ] || [ "$("$cache/vng/bin/python" -c 'import importlib.metadata as m; print(m.version("virtme-ng"))' 2>/dev/null)" != "$VNG_VERSION" ]; then
	echo "vm.sh: installing virtme-ng $VNG_VERSION into $cache/vng" >&2
	rm -rf "$cache/vng"
	/usr/bin/python3 -m venv "$cache/vng"
	"$cache/vng/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" >&2 2> >(grep -v "^WARNING: Location" >&2)
fi

# --- kernel package (once per kernel; BW_VM_REFRESH=1 looks for a newer one) --------------------
apt_dir=$cache/apt
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
apt_opts=(-o "Dir::State=$apt_dir/state" -o "Dir::Cache=$apt_dir/cache"
	-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
	-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
	-o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")

mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" "$apt_dir/preferences.d"
apt_update() {
	# The same archive the host uses (deb.debian.org), each release with its security suite.
	{
		for s in bullseye bookworm trixie; do
			echo "deb [signed-by=$keyring] http://deb.debian.org/debian $s main"
			echo "deb [signed-by=$keyring] http://deb.debian.org/debian-security $s-security main"
		done
		echo "deb [signed-by=$keyring] http://deb.debian.org/debian sid main"
	} >"$apt_dir/sources.list"
	echo "vm.sh: apt-get update (private lists under $apt_dir)" >&2
	apt-get "${apt_opts[@]}" update -qq >&2 || die "apt-get update failed"
}

# The newest version of a metapackage (linux-image-amd64, linux-headers-amd64) within a suite
# and its security suite, and the versioned package it depends on.
resolve() {
	local meta=$1 best="" v
	while read -r v; do
		if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
	done < <(apt-cache "${apt_opts[@]}" madison "$meta" |
		awk -F'|' -v s="$suite" '{gsub(/ /, "", $2); split($3, a, " "); split(a[2], b, "/")} b[1] == s || b[1] == s "-security" {print $2}')
	[ -n "$best" ] || die "no $meta in $suite"
	apt-cache "${apt_opts[@]}" show "$meta=$best" | sed -n 's/^Depends: *//p' | head -n 1 |
		tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -E "^${meta%-amd64}-[0-9]" | head -n 1
}

kdir=$cache/kernels/$suite
if [ ! -e "$kdir/kver" ] || [ "${BW_VM_REFRESH:-0}" = 1 ]; then
	lists_age=$( (find "$apt_dir/state/lists" -maxdepth 1 -name "*_Packages*" -mmin -1440 2>/dev/null || true) | wc -l)
	if [ "$lists_age" = 0 ] || [ "${BW_VM_REFRESH:-0}" = 1 ]; then apt_update; fi
	image=$(resolve linux-image-amd64)
	headers=$(resolve linux-headers-amd64)
	[ -n "$image" ] && [ -n "$headers" ] || die "cannot resolve the kernel packages of $suite"
	kver=${image#linux-image-}
	if [ ! -e "$kdir/kver" ] || [ "$(cat "$kdir/kver")" != "$kver" ]; then
		# the image, its headers (arch part and -common), as a real host of that release has them
		common=$(apt-cache "${apt_opts[@]}" show "$headers" | sed -n 's/^Depends: *//p' | head -n 1 |
			tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -E '^linux-headers-.*-common' | head -n 1)
		# Debian 14 splits the image into linux-binary-KV, linux-modules-KV (and linux-base-KV)
		parts=$(apt-cache "${apt_opts[@]}" show "$image" | sed -n 's/^Depends: *//p' | head -n 1 |
			tr ',|' '\n\n' | sed 's/^ *//; s/ .*//' | grep -Fx -e "linux-binary-$kver" -e "linux-modules-$kver" || true)
		debs=$cache/debs/$suite
		rm -rf "$debs" && mkdir -p "$debs"
		echo "vm.sh: downloading" $image $parts $headers $common >&2
		(cd "$debs" && apt-get "${apt_opts[@]}" download -qq "$image" $parts "$headers" ${common:+"$common"} >&2) ||
			die "apt-get download failed"
		new=$cache/kernels/.$suite.new
		rm -rf "$new" && mkdir -p "$new/root"
		for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$new/root"; done
		moddir=$new/root/lib/modules/$kver
		[ -d "$moddir" ] || moddir=$new/root/usr/lib/modules/$kver   # Debian 13: usr-merged
		vmlinuz=boot/vmlinuz-$kver
		[ -f "$new/root/$vmlinuz" ] || vmlinuz=${moddir#"$new/root/"}/vmlinuz   # Debian 14: no /boot
		[ -d "$moddir" ] && [ -f "$new/root/$vmlinuz" ] || die "unexpected layout in $image"
		# bcc finds headers through /lib/modules/KV/build and source; virtme links the guest's
		# /lib/modules/KV to this directory. Links are absolute: the guest sees the host's paths.
		final=$cache/kernels/$suite/root
		hdr=$(cd "$new/root/usr/src" && ls -d linux-headers-*-amd64 | head -n 1)
		com=$(cd "$new/root/usr/src" && ls -d linux-headers-*-common | head -n 1)
		ln -sfn "$final/usr/src/$hdr" "$moddir/build"
		ln -sfn "$final/usr/src/${com:-$hdr}" "$moddir/source"
		depmod -a -b "$(dirname "$(dirname "$(dirname "$moddir")")")" "$kver" 2>/dev/null || true
		echo "$vmlinuz" >"$new/vmlinuz"
		echo "$kver" >"$new/kver"
		rm -rf "$kdir" && mv "$new" "$kdir"
		rm -rf "$debs"
	fi
fi
kver=$(cat "$kdir/kver")
vmlinuz=$kdir/root/$(cat "$kdir/vmlinuz" 2>/dev/null || echo "boot/vmlinuz-$kver")
flock -u 9

# --- boot ---------------------------------------------------------------------------------------
mkdir -p "$cache/runs"
run=$(mktemp -d "$cache/runs/run.XXXXXX")
if [ "${VM_KEEP:-0}" = 1 ]; then echo "vm.sh: keeping $run" >&2; else trap 'rm -rf "$run"' EXIT; fi
case ${VM_HEADERS:-package} in
	package) ;;
	host)
		hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
		[ -n "$hdr" ] || die "VM_HEADERS=host: no /usr/src/linux-headers-*-amd64 on this host (make setup)"
		com=${hdr%-amd64}-common
		[ -d "$com" ] || com=$hdr
		printf '%s\n%s\n' "$hdr" "$com" >"$run/headers" ;;
esac
# the guest's environment (it inherits none from here)
accel=tcg
[ "${VM_KVM:-0}" != 1 ] || accel=kvm
scale=${BW_TEST_TIME_SCALE:-$([ $accel = tcg ] && echo 4 || echo 1)}
printf 'export BW_VM_ACCEL=%q BW_TEST_TIME_SCALE=%q\n' "$accel" "$scale" >"$run/env"
if [ $# -eq 1 ]; then
	printf '%s\n' "$1" >"$run/command"
else
	printf '%q ' "$@" >"$run/command"
	echo >>"$run/command"
fi

args=(--run "$vmlinuz" --force-9p --cpus "$cpus" --memory "$mem"
	--rwdir "$run" --overlay-rwdir "$project" --cwd "$project"
	--exec "bash $project/scripts/vm-guest.sh $run $project")
if [ "${VM_KVM:-0}" != 1 ]; then
	args+=(--disable-kvm)
	# One host thread runs every vCPU in turn (single-threaded TCG). Multi-threaded TCG, QEMU's
	# default for an x86 guest with more than one CPU, lets a vCPU run a stale int3 after the
	# guest kernel has finished patching its own text (jump labels, text_poke_bp): every
	# tracepoint attached or detached patches text, and the guest dies with "Oops: int3" and a
	# panic (Debian 6.12 under QEMU 7.2: scripts/textpoke-stress.sh in seconds, and the whole
	# kernel test suite within minutes). VM_TCG_THREAD=multi asks for it anyway.
	case ${VM_TCG_THREAD:-single} in
		single | multi) [ "$cpus" = 1 ] || args+=("--qemu-opts=-accel tcg,thread=${VM_TCG_THREAD:-single}") ;;
		*) usage "VM_TCG_THREAD must be single or multi, not '$VM_TCG_THREAD'" ;;
	esac
fi
[ -z "${VM_APPEND:-}" ] || args+=(--append "$VM_APPEND")
[ "${VM_VERBOSE:-0}" != 1 ] || args+=(--verbose)

export PATH=$cache/vng/bin:$PATH   # vng runs virtme-run from PATH
start=$(date +%s.%N)
set +e
if [ "${VM_VERBOSE:-0}" = 1 ]; then
	timeout -k 10 "$timeout" "$vng" "${args[@]}" </dev/null 2>&1 | tee "$run/console" >&2
	rc=${PIPESTATUS[0]}
else
	timeout -k 10 "$timeout" "$vng" "${args[@]}" </dev/null >"$run/console" 2>&1
	rc=$?
fi
set -e
end=$(date +%s.%N)

[ ! -f "$run/stdout" ] || cat "$run/stdout"
[ ! -f "$run/stderr" ] || cat "$run/stderr" >&2
total=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
if [ -f "$run/boot" ] && [ -f "$run/ready" ] && [ -f "$run/done" ]; then
	# host clock: the files' times are set by the host side of the 9p share when written
	booted=$(date -r "$run/boot" +%s.%N) ready=$(date -r "$run/ready" +%s.%N) done=$(date -r "$run/done" +%s.%N)
	boot=$(awk -v a="$start" -v b="$booted" 'BEGIN {printf "%.1f", b - a}')
	setup=$(awk -v a="$booted" -v b="$ready" 'BEGIN {printf "%.1f", b - a}')
	cmd_s=$(awk -v a="$ready" -v b="$done" 'BEGIN {printf "%.1f", b - a}')
	echo "vm.sh: $kver: boot ${boot}s, guest setup ${setup}s, command ${cmd_s}s, total ${total}s" >&2
fi
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	echo "vm.sh: guest ($kver) killed after VM_TIMEOUT=${timeout}s" >&2
	tail -n 20 "$run/console" >&2
	exit 124
fi
if [ ! -f "$run/status" ]; then
	echo "vm.sh: the guest ($kver) never reported the command's exit status (virtme-ng exit $rc); console:" >&2
	[ -s "$run/setup.log" ] && { echo "--- guest setup log:" >&2; cat "$run/setup.log" >&2; }
	tail -n 40 "$run/console" >&2
	exit 125
fi
exit "$(cat "$run/status")"
