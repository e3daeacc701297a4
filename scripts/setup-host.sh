#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for beanwatch, idempotently: distribution packages (bcc comes
# from the distribution, not PyPI), kernel headers for bcc's compiler, tracefs, and the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "setup-host: run as root (sudo make ...)" >&2
	exit 1
fi

arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
release=$(uname -r)
packages=(python3-bpfcc libbpfcc python3-venv python3-pip gcc gcc-multilib make stress-ng bpftool strace tmux prometheus systemd util-linux)

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
