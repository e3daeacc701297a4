#!/usr/bin/env bash
# Installs beanwatch as a system service, idempotently (`sudo make install`):
#   /opt/beanwatch/venv                   the package, in a venv of the system Python that
#                                         sees the distribution's bcc (--system-site-packages)
#   /usr/local/bin/beanwatch              a link to the venv's console script
#   /usr/local/share/bash-completion/completions/beanwatch   bash completion
#   /etc/systemd/system/beanwatch.service the unit (replaced on every run: customise it
#                                         with `systemctl edit beanwatch`)
#   /etc/beanwatch/beanwatch.toml         the config, from the example, only if absent
#   /etc/beanwatch/beanwatch.toml.example the example, refreshed on every run
#
# DESTDIR=/some/root installs under that root and leaves the host alone (no daemon-reload):
# for tests and staging. The venv is not relocatable: its scripts name $DESTDIR's paths.
# PYTHON picks the interpreter (default /usr/bin/python3, the one python3-bpfcc is built
# for); WHEEL installs a wheel built elsewhere instead of building one from this tree.
# pip's own PIP_* variables apply (PIP_NO_INDEX=1 PIP_NO_DEPS=1 for an offline run).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PYTHON=${PYTHON:-/usr/bin/python3}
WHEEL=${WHEEL:-}

venv=/opt/beanwatch/venv
bindir=/usr/local/bin
unitdir=/etc/systemd/system
confdir=/etc/beanwatch

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
	die "run as root (sudo make install), or set DESTDIR to install under another root"
fi
case "$DESTDIR" in
	"" | /*) ;;
	*) die "DESTDIR must be an absolute path, not $DESTDIR" ;;
esac
[ -x "$PYTHON" ] || die "no Python at $PYTHON (set PYTHON)"
owner=()
[ "$(id -u)" = 0 ] && owner=(-o root -g root)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- the venv ---------------------------------------------------------------------------
vdir=$DESTDIR$venv
vpy=$vdir/bin/python
if [ ! -x "$vpy" ] || ! "$vpy" -c '' 2>/dev/null \
	|| ! grep -qx 'include-system-site-packages = true' "$vdir/pyvenv.cfg" 2>/dev/null; then
	# missing, broken (its Python was removed or upgraded) or unable to see bcc
	rm -rf "$vdir"
	install -d -m 0755 "$(dirname "$vdir")"
	"$PYTHON" -m venv --system-site-packages "$vdir"
	say "created $vdir from $PYTHON"
fi
pip=("$vpy" -m pip --disable-pip-version-check -q)

# --- the package ------------------------------------------------------------------------
wheel=$WHEEL
if [ -z "$wheel" ]; then
	# Build from a copy, so that the checkout gets no root-owned build/ or egg-info.
	mkdir "$tmp/src"
	cp -R "$src/pyproject.toml" "$src/README.md" "$src/observer" "$src/probes" "$tmp/src/"
	find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
	isolation=()
	# Offline when the venv already has what the build backend needs (setuptools, wheel).
	"$vpy" -c 'import setuptools.build_meta, wheel' 2>/dev/null \
		&& isolation=(--no-build-isolation --no-index)
	"${pip[@]}" wheel --no-deps "${isolation[@]}" -w "$tmp/dist" "$tmp/src"
	wheel=$(echo "$tmp"/dist/beanwatch-*.whl)
fi
[ -f "$wheel" ] || die "no wheel at $wheel"
# This tree's files even when the version number did not change, then the dependencies
# (click, pyroute2, prometheus_client) that are missing. Where the distribution's packages
# provide them all (python3-click, python3-pyroute2, python3-prometheus-client: `make
# install` installs them), nothing comes from PyPI: pip only checks their versions.
"${pip[@]}" install --no-deps --force-reinstall "$wheel"
index=()
where=""
if "$vpy" -c 'import click, pyroute2, prometheus_client' 2>/dev/null; then
	index=(--no-index)
	where=" (from the distribution's packages)"
fi
"${pip[@]}" install "${index[@]}" "$wheel" || die "the dependencies of beanwatch are missing or too old$where"
version=$("$vdir/bin/beanwatch" --version 2>/dev/null || true)
say "installed ${version:-beanwatch} in $vdir"
if ! "$vpy" -c 'import bcc' 2>/dev/null; then
	echo "install: warning: bcc is not importable from $PYTHON: install python3-bpfcc" \
		"(sudo make setup does)" >&2
fi

# --- the command ------------------------------------------------------------------------
install -d -m 0755 "$DESTDIR$bindir"
# Relative, so that the link is right both under DESTDIR and once in place.
ln -sfn "../../..$venv/bin/beanwatch" "$DESTDIR$bindir/beanwatch"

# Shell completion (click's), where bash-completion looks for it. Skipped when the
# console script cannot run yet (no click in an offline DESTDIR install).
completion=$DESTDIR/usr/local/share/bash-completion/completions/beanwatch
if _BEANWATCH_COMPLETE=bash_source "$vdir/bin/beanwatch" >"$tmp/completion" 2>/dev/null \
	&& grep -q _beanwatch_completion "$tmp/completion"; then
	install -D -m 0644 "$tmp/completion" "$completion"
fi

# --- the unit and the config ------------------------------------------------------------
install -D -m 0644 "${owner[@]}" "$src/packaging/beanwatch.service" "$DESTDIR$unitdir/beanwatch.service"
install -d -m 0755 "${owner[@]}" "$DESTDIR$confdir"
install -m 0644 "${owner[@]}" "$src/packaging/beanwatch.toml.example" "$DESTDIR$confdir/beanwatch.toml.example"
config=$DESTDIR$confdir/beanwatch.toml
if [ -e "$config" ] || [ -L "$config" ]; then
	say "kept $confdir/beanwatch.toml"
else
	install -m 0600 "${owner[@]}" "$src/packaging/beanwatch.toml.example" "$config"
	say "wrote $confdir/beanwatch.toml from the example: adjust its limits"
fi

# --- systemd ----------------------------------------------------------------------------
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	if systemctl is-active --quiet beanwatch.service; then
		say "beanwatch is running the previous version: systemctl restart beanwatch"
	else
		say "start it with: systemctl enable --now beanwatch"
	fi
else
	say "systemd is not running here${DESTDIR:+ (or DESTDIR is set)}: no daemon-reload"
fi
