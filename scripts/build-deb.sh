#!/usr/bin/env bash
# Builds the Debian binary package (`make deb`): dist/beanwatch_VERSION_all.deb.
#
# From a clean copy of this checkout (the files git knows or would add, so no .venv, build/
# or caches) in a temporary directory, with dpkg-buildpackage -us -uc -b. Build
# dependencies missing from the host are installed from the Debian archive (apt-get
# build-dep, as root); nothing else comes from the network. As root the build itself runs in
# a network namespace of its own (no interface but lo), which proves it: pybuild builds the
# wheel with python3-build --no-isolation and installs it with python3-installer, offline.
# lintian runs on the result when it is installed (LINTIAN=0 skips it). DIST=dir puts the
# result elsewhere; DEB_VERSION_SUFFIX (below) builds a later version for upgrade tests.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${DIST:-$src/dist}
LINTIAN=${LINTIAN:-1}

# The distribution's tools and Python only: not a pyenv, a venv or /usr/local.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP VIRTUAL_ENV

say() { echo "build-deb: $*"; }
die() { echo "build-deb: $*" >&2; exit 1; }

command -v dpkg-buildpackage >/dev/null || die "dpkg-buildpackage is missing: apt-get install dpkg-dev"
git -C "$src" rev-parse --git-dir >/dev/null 2>&1 || die "$src is not a git checkout"

# The changelog's version is the package's: it must be the code's.
deb_version=$(cd "$src" && dpkg-parsechangelog -S Version)
py_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$src/observer/__init__.py")
[ "$deb_version" = "$py_version" ] \
	|| die "debian/changelog says $deb_version, observer.__version__ is $py_version: dch -v $py_version"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/beanwatch-$deb_version
mkdir "$tree"
# Tracked and untracked-but-not-ignored files that exist (a deleted tracked file is skipped).
(cd "$src" && git ls-files -z --cached --others --exclude-standard) \
	| (cd "$src" && while IFS= read -r -d '' f; do
		if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
	done) \
	| (cd "$src" && tar --null -T - -cf -) | tar -xf - -C "$tree"
find "$tree" -name __pycache__ -prune -exec rm -rf {} +

# DEB_VERSION_SUFFIX=+rebuild1 builds VERSION+rebuild1, a later version of the same code
# (for upgrade tests), through a changelog entry in the copy only.
suffix=${DEB_VERSION_SUFFIX:-}
if [ -n "$suffix" ]; then
	[[ $suffix =~ ^[+~][A-Za-z0-9.+~]*$ ]] || die "DEB_VERSION_SUFFIX must start with + or ~: $suffix"
	maintainer=$(cd "$src" && dpkg-parsechangelog -S Maintainer)
	{
		printf 'beanwatch (%s) unstable; urgency=medium\n\n' "$deb_version$suffix"
		printf '  * Rebuild of %s (DEB_VERSION_SUFFIX).\n\n' "$deb_version"
		printf ' -- %s  %s\n\n' "$maintainer" "$(date -R)"
		cat "$src/debian/changelog"
	} >"$tree/debian/changelog"
	deb_version=$deb_version$suffix
fi

if ! (cd "$tree" && dpkg-checkbuilddeps) 2>"$tmp/missing"; then
	[ "$(id -u)" = 0 ] || die "$(cat "$tmp/missing"); run as root (sudo make deb) to install them"
	say "installing build dependencies from the Debian archive"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get build-dep -y -qq --no-install-recommends "$tree" >/dev/null
fi

build=(dpkg-buildpackage -us -uc -b)
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
	build=(unshare --net "${build[@]}")
	say "building offline (a network namespace with no interface)"
fi
# Belt and braces where there is no namespace: pip, if anything ran it, would not look.
(cd "$tree" && PIP_NO_INDEX=1 "${build[@]}") >"$tmp/build.log" 2>&1 \
	|| { tail -n 40 "$tmp/build.log" >&2; die "dpkg-buildpackage failed (log above)"; }

mkdir -p "$out"
deb=beanwatch_${deb_version}_all.deb
cp "$tmp/$deb" "$tmp"/beanwatch_"$deb_version"_*.buildinfo "$tmp"/beanwatch_"$deb_version"_*.changes "$out/"
say "built $out/$deb ($(dpkg-deb -f "$out/$deb" Installed-Size) KiB installed)"

if [ "$LINTIAN" != 0 ] && command -v lintian >/dev/null; then
	say "lintian:"
	lintian --info --display-info --pedantic "$out/$deb" || die "lintian found errors"
fi
