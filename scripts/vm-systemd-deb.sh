#!/usr/bin/env bash
# The Debian package's install / upgrade / purge cycle on a real systemd host (make test-deb):
# builds beanwatch_VERSION_all.deb and beanwatch_VERSION+rebuild1_all.deb (scripts/build-deb.sh),
# prepares a local apt repository with every package they need, then boots the Debian 12 guest
# of scripts/vm-systemd.sh and runs scripts/vm-systemd-deb-test.sh there. Exit status: the
# guest script's (the number of failed checks), 2 when something on the way failed.
#
# The guest has no network, and its image already holds beanwatch's dependencies (make
# install needs them there). So that `apt install ./beanwatch_*.deb` really resolves and
# fetches them, the guest first removes them (the four python3-* packages, the kernel
# headers, and whatever apt autoremove then finds unneeded: bcc, LLVM, gcc), and apt's
# only source is a flat repository shared with the guest (VM_SHARE): the closure of the
# package's Depends and Recommends on an empty Debian 12 system, downloaded here once with a
# private apt configuration for bookworm (the image's mirror and suites), indexed with
# dpkg-scanpackages. Cached under $BW_VM_CACHE/deb (default /var/lib/beanwatch-vm/deb); the
# lists are refreshed after a day, so the headers follow the image's kernel.
#
# Root (build dependencies, QEMU). The guest boot waits for /tmp/bw-vm.lock (one guest at a
# time on the machine); the build and the download do not.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
cache=${BW_VM_CACHE:-/var/lib/beanwatch-vm}/deb
suffix=+rebuild1

say() { echo "test-deb: $*" >&2; }
die() { echo "test-deb: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (build dependencies, apt, QEMU)"
t_run=$(date +%s)

share=$(mktemp -d /tmp/bw-test-deb.XXXXXX)
trap 'rm -rf "$share"' EXIT
chmod 0755 "$share"

# --- the two packages ----------------------------------------------------------------------
say "building the packages (lintian on the first)"
DIST=$share bash "$src/scripts/build-deb.sh" >&2 || die "make deb failed"
DIST=$share DEB_VERSION_SUFFIX=$suffix LINTIAN=0 bash "$src/scripts/build-deb.sh" >&2 \
	|| die "make deb with DEB_VERSION_SUFFIX=$suffix failed"
rm -f "$share"/*.buildinfo "$share"/*.changes
version=$(cd "$src" && dpkg-parsechangelog -S Version)
first=$share/beanwatch_${version}_all.deb
[ -f "$first" ] && [ -f "$share/beanwatch_$version${suffix}_all.deb" ] || die "the two packages are not in $share"

# --- the local repository ------------------------------------------------------------------
apt_dir=$cache/apt
repo=$cache/repo
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || die "$keyring is missing: apt-get install debian-archive-keyring"
command -v dpkg-scanpackages >/dev/null || die "dpkg-scanpackages is missing: apt-get install dpkg-dev"
mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/sources.list.d" \
	"$apt_dir/preferences.d" "$repo/partial"
: >"$apt_dir/status"   # an empty system: apt plans every package the deb needs
cat >"$apt_dir/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
EOF
apt_opts=(-o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/status"
	-o "Dir::Cache=$apt_dir/cache"
	-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
	-o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$apt_dir/preferences.d"
	-o "APT::Architecture=amd64" -o "APT::Architectures::=amd64" -o "Debug::NoLocking=1"
	-o "APT::Sandbox::User=root" -o "APT::Install-Recommends=true")
fresh=$(find "$apt_dir/state/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 | wc -l)
if [ "$fresh" = 0 ] || [ "${BW_VM_REFRESH:-0}" = 1 ]; then
	say "apt-get update (private bookworm lists under $apt_dir)"
	apt-get "${apt_opts[@]}" update -qq >&2 || die "apt-get update failed"
fi
# (print-uris leaves out what the archives directory already holds: an empty one here.)
apt-get "${apt_opts[@]}" install --print-uris -qq -y "$first" >"$share/uris" \
	|| die "apt cannot resolve $(basename "$first") on Debian 12"
# Files the host's own apt already has (same name: same version) need no download.
awk '{print $2}' "$share/uris" | grep -v '^beanwatch_' >"$share/wanted"
while read -r f; do
	[ -f "$repo/$f" ] || [ ! -f "/var/cache/apt/archives/$f" ] || cp "/var/cache/apt/archives/$f" "$repo/"
done <"$share/wanted"
apt-get "${apt_opts[@]}" -o "Dir::Cache::archives=$repo" install --download-only -qq -y "$first" >&2 || die "apt-get download failed"
# Only the current closure: no older versions beside the new ones, and never beanwatch itself.
for f in "$repo"/*.deb; do
	grep -qxF "$(basename "$f")" "$share/wanted" || rm -f "$f"
done
(cd "$repo" && dpkg-scanpackages -m . 2>/dev/null | gzip -9n >Packages.gz)
say "local repository: $(wc -l <"$share/wanted") packages, $(du -sh --apparent-size "$repo" | cut -f1) ($repo)"
mkdir "$share/repo"
# The guest sees the share through 9p: hard links (same file system) or copies.
cp -l "$repo"/*.deb "$repo/Packages.gz" "$share/repo/" 2>/dev/null || cp "$repo"/*.deb "$repo/Packages.gz" "$share/repo/"
rm -f "$share/uris" "$share/wanted"

# --- the guest ---------------------------------------------------------------------------
say "waiting for /tmp/bw-vm.lock (one guest at a time)"
set +e
VM_SHARE=$share VM_TIMEOUT=${VM_TIMEOUT:-1800} flock /tmp/bw-vm.lock \
	bash "$src/scripts/vm-systemd.sh" scripts/vm-systemd-deb-test.sh
status=$?
set -e
say "make test-deb took $(($(date +%s) - t_run)) s; status $status"
exit "$status"
