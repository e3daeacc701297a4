#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for beanwatch, idempotently: distribution packages (bcc comes
# from the distribution, not PyPI), kernel headers for bcc's compiler, tracefs, and the venv.
#   setup-host.sh            a development and test host (make setup, test, demo, bench): the
#                            runtime packages, the test tools, and this checkout's .venv
#   setup-host.sh --runtime  what the service needs and nothing else (make install): bcc,
#                            the kernel headers, tracefs; no test tools, no .venv
#   --list                   print the packages the choice installs (before the kernel
#                            headers), one per line, and exit; needs no root
set -euo pipefail
cd "$(dirname "$0")/.."

# What `beanwatch watch` needs on a production host.
runtime_packages=(python3-bpfcc libbpfcc python3-venv python3-pip python3-setuptools python3-wheel python3-click python3-pyroute2 python3-prometheus-client)
# What only the tests, the demo's checks and the benchmarks use: compilers for the test
# programs (gcc, gcc-multilib for the 32-bit ones, make), workloads (stress-ng), inspection
# (bpftool, strace), the operator tests (tmux, prometheus, systemd-analyze, nsenter).
test_packages=(gcc gcc-multilib make stress-ng bpftool strace tmux prometheus systemd util-linux)

runtime_only=false
list_only=false
for arg in "$@"; do
	case "$arg" in
		--runtime) runtime_only=true ;;
		--list) list_only=true ;;
		*) echo "setup-host: unknown argument $arg (--runtime, --list)" >&2; exit 2 ;;
	esac
done
packages=("${runtime_packages[@]}")
$runtime_only || packages+=("${test_packages[@]}")
if $list_only; then
	printf '%s\n' "${packages[@]}"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "setup-host: run as root (sudo make ...)" >&2
	exit 1
fi

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
release=$(uname -r)

missing=()
for p in "${packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

# bcc compiles against kernel headers. Prefer the running kernel's; hosts with custom
# kernels (like CI's) have none packaged, so take the distribution's newest and link them.
# Their struct layouts may differ: beanwatch reads every layout it needs from BTF instead.
build=/lib/modules/$release/build
if [ ! -e "$build/include" ]; then
	if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
		dpkg -s "linux-headers-$release" >/dev/null 2>&1 || missing+=("linux-headers-$release")
	else
		meta=linux-headers-$arch
		grep -qi ubuntu /etc/os-release 2>/dev/null && meta=linux-headers-generic
		dpkg -s "$meta" >/dev/null 2>&1 || missing+=("$meta")
	fi
fi

if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-host: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -e "$build/include" ]; then
	# newest headers of this architecture, e.g. /usr/src/linux-headers-6.1.0-56-amd64
	hdr=$(ls -d /usr/src/linux-headers-*-"$arch" /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n 1 || true)
	if [ -z "$hdr" ]; then
		echo "setup-host: no kernel headers found under /usr/src" >&2
		exit 1
	fi
	common=${hdr%-"$arch"}
	common=${common%-generic}
	[ -d "$common-common" ] && common="$common-common"
	[ -d "$common" ] || common=$hdr
	mkdir -p "/lib/modules/$release"
	ln -sfn "$hdr" "$build"
	ln -sfn "$common" "/lib/modules/$release/source"
	echo "setup-host: linked $build -> $hdr (no headers packaged for $release)"
fi

# bcc finds tracepoints through tracefs
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
	mount -t tracefs nodev /sys/kernel/tracing
fi

if $runtime_only; then
	echo "setup-host: ready for the service (runtime packages only)"
	exit 0
fi

# The venv sees the distribution's bcc through --system-site-packages; the system Python
# is the one python3-bpfcc is built for.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
	rm -rf .venv
	/usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c 'import observer, pytest, hypothesis, click, pyroute2, prometheus_client, yaml, kubernetes_validate' 2>/dev/null \
	|| [ pyproject.toml -nt .venv/.installed ]; then
	.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch .venv/.installed
fi
echo "setup-host: ready (.venv/bin/beanwatch)"
