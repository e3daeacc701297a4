#!/usr/bin/env bash
# The Debian package on a real systemd host: run as root inside the Debian 12 guest of
# scripts/vm-systemd.sh by scripts/vm-systemd-deb.sh (make test-deb), which shares the two
# packages (VERSION and VERSION+rebuild1) and a flat apt repository with their dependencies
# at $BW_VM_SHARE. The guest has no network. Removes beanwatch's dependencies from the image,
# installs the package with apt from the local repository only, then walks it through
# install, reload, enforcement, upgrade and purge, one PASS or FAIL line per check. Exit
# status: the number of FAILs (0: all passed). Not for a development host: it removes
# packages, installs beanwatch and starts the service.
set -uo pipefail

export LC_ALL=C.UTF-8 SYSTEMD_PAGER='' DEBIAN_FRONTEND=noninteractive
unit=beanwatch.service
slice=bwdeb.slice
conf=/etc/beanwatch/beanwatch.toml
# shellcheck source=scripts/guest-checks.sh
source "$(dirname "$0")/guest-checks.sh"
new_record() {   # new_record EVENT COUNT SECONDS: waits for more than COUNT records, prints the last
	local n
	for _ in $(seq $(($3 * 5))); do
		n=$(records "$1" | wc -l)
		[ "$n" -gt "$2" ] && { records "$1" | tail -n1; return 0; }
		sleep 0.2
	done
	return 1
}
wait_active() {   # wait_active SECONDS: until the unit is active (0) or failed/out of time (1)
	local deadline=$(($(date +%s) + $1)) state
	while [ "$(date +%s)" -lt "$deadline" ]; do
		state=$(prop ActiveState)
		[ "$state" = active ] && return 0
		[ "$state" = failed ] && return 1
		sleep 0.2
	done
	return 1
}
toucher() {   # toucher NAME [--no-block]: a process touching 256M in $slice, as unit NAME
	local name=$1
	shift
	systemd-run -q "$@" --unit="$name" --slice="$slice" -p CollectMode=inactive-or-failed \
		python3 /root/toucher.py
}
cat >/root/toucher.py <<'EOF'
import mmap, time
m = mmap.mmap(-1, 256 << 20)
for i in range(0, 256 << 20, 4096):
    m[i] = 1
time.sleep(60)
EOF

share=${BW_VM_SHARE:-}
if [ ! -d "$share/repo" ]; then
	fail "the packages and the local repository are shared at \$BW_VM_SHARE ('$share'): run scripts/vm-systemd-deb.sh"
	exit "$fails"
fi
mkdir -p /root/debs
cp "$share"/beanwatch_*_all.deb /root/debs/
cd /root/debs || exit 1
old=$(ls beanwatch_*_all.deb | grep -v '+rebuild' | head -n1)
new=$(ls beanwatch_*+rebuild*_all.deb | head -n1)
old_v=$(dpkg-deb -f "$old" Version)
new_v=$(dpkg-deb -f "$new" Version)
kver=$(uname -r)

echo "== host: $kver, $(systemctl --version | head -n1), PID 1 $(cat /proc/1/comm)"
echo "== packages: ./$old and ./$new; the guest has no network (no route: $(ip -o route | wc -l) routes)"

# --- a host without beanwatch's dependencies -----------------------------------------------
# The image has them (make install needs them): take them away, and what only they needed.
dpkg-query -W -f '${Package}\n' | sort >/tmp/packages.image
t0=$(date +%s.%N)
apt-get purge -y -qq python3-bpfcc python3-click python3-pyroute2 python3-prometheus-client \
	linux-headers-amd64 "linux-headers-$kver" >/tmp/remove.log 2>&1
apt-get autoremove --purge -y -qq >>/tmp/remove.log 2>&1
dpkg-query -W -f '${Package}\n' | sort >/tmp/packages.bare
removed=$(comm -23 /tmp/packages.image /tmp/packages.bare)
left=$(for p in python3-bpfcc python3-click python3-pyroute2 python3-prometheus-client libbpfcc; do
	installed "$p" && echo "$p"; done)
if [ -z "$left" ] && [ ! -e "/lib/modules/$kver/build" ]; then
	pass "the guest lacks beanwatch's dependencies: $(wc -l <<<"$removed") packages removed in $(since "$t0") s, no /lib/modules/$kver/build"
else
	fail "the guest lacks beanwatch's dependencies (still installed: ${left:-none}; build: $(ls -d "/lib/modules/$kver/build" 2>&1))"
	indent </tmp/remove.log
fi
note "removed: $(tr '\n' ' ' <<<"$removed")"

# The image's own sources (deb.debian.org) cannot be reached: apt must not find them there.
apt-get update -qq >/tmp/update-offline.log 2>&1
if apt-get install -s "./$old" >/tmp/sim.log 2>&1; then
	fail "without the local repository apt cannot resolve the dependencies (it could: is there a network?)"
elif unmet=$(grep -m1 -E 'Depends: (python3-|linux-headers)' /tmp/sim.log); then
	pass "without the local repository apt cannot resolve the dependencies: $(sed 's/^ *//' <<<"$unmet")"
else
	fail "without the local repository apt refuses the package, but not for its dependencies:"
	indent </tmp/sim.log
fi

# From here on apt's only source is the repository the host prepared.
mkdir -p /root/apt-off
mv /etc/apt/sources.list /root/apt-off/ 2>/dev/null
mv /etc/apt/sources.list.d/* /root/apt-off/ 2>/dev/null
echo "deb [trusted=yes] file:$share/repo ./" >/etc/apt/sources.list.d/beanwatch-test.list
if apt-get update -qq >/tmp/update.log 2>&1; then
	pass "apt-get update from the local repository ($(ls "$share"/repo/*.deb | wc -l) packages at file:$share/repo)"
else
	fail "apt-get update from the local repository"
	indent </tmp/update.log
fi

# --- apt install ./beanwatch_VERSION_all.deb -------------------------------------------------
t0=$(date +%s.%N)
if apt install -y "./$old" </dev/null >/tmp/install.log 2>&1; then
	pass "apt install ./$old in $(since "$t0") s (the unit started inside: probes compiled)"
else
	fail "apt install ./$old (status $?)"
fi
grep -E '^(The following NEW|Need to get|After this|Setting up beanwatch|Created symlink|E:|W:|dpkg:)' /tmp/install.log | indent
dpkg-query -W -f '${Package}\n' | sort >/tmp/packages.installed
added=$(comm -13 /tmp/packages.bare /tmp/packages.installed)
back=$(for p in python3-bpfcc python3-click python3-pyroute2 python3-prometheus-client linux-headers-amd64 "linux-headers-$kver"; do
	installed "$p" || echo "$p"; done)
check "apt pulled the dependencies from the local repository: $(wc -l <<<"$added") packages; missing: ${back:-none}" \
	test -z "$back"
note "added: $(tr '\n' ' ' <<<"$added")"
check "the Recommends brought the running kernel's headers: /lib/modules/$kver/build -> $(readlink "/lib/modules/$kver/build")" \
	test -f "/lib/modules/$kver/build/Makefile"
sizes=0
[ -n "$added" ] && sizes=$(dpkg-query -W -f '${Installed-Size}\n' $added | awk '{s += $1} END {print s}')
note "installed size: beanwatch $(dpkg-query -W -f '${Installed-Size}' beanwatch) KiB" \
	"($(dpkg -L beanwatch | while read -r f; do [ -f "$f" ] && [ ! -L "$f" ] && echo "$f"; done | xargs du -cb | tail -n1 | cut -f1) bytes in files);" \
	"with what apt added: $((sizes / 1024)) MiB"
check "installed: /usr/bin/beanwatch --version: $(/usr/bin/beanwatch --version 2>&1)" test -x /usr/bin/beanwatch
python3 - <<'EOF' | sed 's/^/       /'
import importlib.metadata as m
import bcc, click, pyroute2, prometheus_client
for name in ("click", "pyroute2", "prometheus_client"):
    mod = __import__(name)
    print(f"{name} {m.version(name)} from {mod.__file__.rsplit('/', 2)[0]}")
EOF

# --- enabled, running, READY --------------------------------------------------------------
check "the unit is enabled: is-enabled $(systemctl is-enabled "$unit" 2>&1), $(ls /etc/systemd/system/multi-user.target.wants/$unit 2>&1)" \
	test "$(systemctl is-enabled "$unit" 2>/dev/null)" = enabled -a -L /etc/systemd/system/multi-user.target.wants/$unit
if wait_active 180; then
	pass "the unit is running: $(prop ActiveState)/$(prop SubState), Type=$(prop Type), StatusText '$(prop StatusText)', pid $(prop MainPID)"
	check "READY=1 was sent (Type=notify: active only after it), $(our_programs) BPF programs attached" \
		test "$(prop Type)" = notify -a "$(our_programs)" -gt 0
else
	fail "the unit is running with the shipped $conf: $(prop ActiveState)/$(prop SubState), Result=$(prop Result)"
fi
note "the shipped config's cgroups: $(grep -o '^\[cgroup\.[^]]*\]' "$conf" | tr '\n' ' '); user.slice: $( [ -d /sys/fs/cgroup/user.slice ] && echo exists || echo 'does not exist')"
note "journal of the first start:"
dump_journal 12
if ! wait_active 1; then
	echo "== the installed unit does not run: nothing more to check before the purge"
fi

# --- beanwatch check ------------------------------------------------------------------------
t0=$(date +%s.%N)
if beanwatch check >/tmp/check.log 2>&1; then
	pass "beanwatch check in $(since "$t0") s"
else
	fail "beanwatch check (status $?)"
fi
indent </tmp/check.log

# --- a limit from the config kills a toucher ------------------------------------------------
systemd-run -q --unit=bwdeb-hold --slice="$slice" sleep infinity
cat >>"$conf" <<EOF

# Added by scripts/vm-systemd-deb-test.sh: a scratch slice for a toucher.
[cgroup."$slice"]
limit = "96M"
action = "kill"
EOF
conf_sum=$(md5sum <"$conf")
n=$(records reload | wc -l)
systemctl reload "$unit"
rec=$(new_record reload "$n" 30)
check "systemctl reload applies the edited $conf: ${rec:-no reload record}" \
	test "$(jq -r .BEANWATCH_OK <<<"${rec:-{\}}")" = true
n=$(records action | wc -l)
t0=$(date +%s.%N)
toucher bwdeb-toucher1 --wait >/dev/null 2>&1
rec=$(new_record action "$n" 10)
check "a toucher of 256M in $slice (limit 96M, kill) was killed after $(since "$t0") s: ${rec:-no action record}" \
	test -n "$rec" -a "$(jq -r .BEANWATCH_ACTION <<<"${rec:-{\}}")" = kill

# --- upgrade to the rebuilt package -----------------------------------------------------------
pid=$(prop MainPID)
t0=$(date +%s.%N)
if apt install -y "./$new" </dev/null >/tmp/upgrade.log 2>&1; then
	pass "apt install ./$new (upgrade) in $(since "$t0") s"
else
	fail "apt install ./$new (upgrade, status $?)"
	indent </tmp/upgrade.log
fi
check "the installed version is $(dpkg-query -W -f '${Version}' beanwatch) (want $new_v, was $old_v)" \
	test "$(dpkg-query -W -f '${Version}' beanwatch)" = "$new_v"
extra=$(ls /etc/beanwatch/ | grep -v '^beanwatch.toml$' | tr '\n' ' ')
check "the edited config is kept: same content, no .dpkg-* beside it (${extra:-none})" \
	test "$(md5sum <"$conf")" = "$conf_sum" -a -z "$extra"
wait_active 180
check "the upgrade restarted the unit: MainPID $pid -> $(prop MainPID), $(prop ActiveState)/$(prop SubState)" \
	test "$(prop MainPID)" != "$pid" -a "$(prop MainPID)" != 0 -a "$(prop ActiveState)" = active
n=$(records action | wc -l)
t0=$(date +%s.%N)
toucher bwdeb-toucher2 --wait >/dev/null 2>&1
rec=$(new_record action "$n" 10)
check "after the upgrade the kept limit still kills a toucher ($(since "$t0") s): ${rec:-no action record}" \
	test -n "$rec"

# --- purge while a cgroup is frozen -------------------------------------------------------
# Freeze instead of kill: the purge stops the unit, which must thaw what it froze.
sed -i '/^\[cgroup\."'"$slice"'"\]/,$ s/^action = "kill"/action = "freeze"/' "$conf"
n=$(records reload | wc -l)
systemctl reload "$unit"
new_record reload "$n" 30 >/dev/null
n=$(records action | wc -l)
toucher bwdeb-toucher3 --no-block
rec=$(new_record action "$n" 60)
frozen=$(frozen_cgroups | tr '\n' ' ')
check "before the purge: a toucher frozen (${frozen:-nothing frozen}): ${rec:-no action record}" \
	test -n "$frozen"
t0=$(date +%s.%N)
if apt purge -y beanwatch </dev/null >/tmp/purge.log 2>&1; then
	pass "apt purge beanwatch in $(since "$t0") s"
else
	fail "apt purge beanwatch (status $?)"
	indent </tmp/purge.log
fi
sleep 1   # the kernel frees programs asynchronously
status=$(dpkg-query -W -f '${db:Status-Abbrev}' beanwatch 2>/dev/null)
check "dpkg knows no beanwatch any more ('${status:-not known}': no config-files left)" \
	test -z "$(tr -d ' ' <<<"$status" | grep -v '^[up]n$')"
units=$(ls /lib/systemd/system/$unit /usr/lib/systemd/system/$unit /etc/systemd/system/$unit 2>/dev/null)
check "no unit file (${units:-none}); systemctl: $(systemctl list-unit-files "$unit" --no-legend | wc -l) unit files, load state $(prop LoadState)" \
	test -z "$units" -a "$(prop LoadState)" = not-found
links=$(find /etc/systemd/system -name "$unit" 2>/dev/null | tr '\n' ' ')
check "no enabled symlink (${links:-none})" test -z "$links"
procs=$(pgrep -f '^/usr/bin/python3 /usr/bin/beanwatch' | tr '\n' ' ')
check "no beanwatch process (${procs:-none})" test -z "$procs"
check "no /run/beanwatch" test ! -e /run/beanwatch
check "no /etc/beanwatch" test ! -e /etc/beanwatch
left=$(our_programs)
check "no BPF program of ours (bpftool prog show: $left)" test "$left" = 0
frozen=$(frozen_cgroups | tr '\n' ' ')
check "nothing frozen (${frozen:-no cgroup.freeze = 1})" test -z "$frozen"
events=$(grep frozen "/sys/fs/cgroup/$slice/cgroup.events" 2>&1)
check "the frozen toucher was thawed, not killed: $slice '$events', toucher $(prop SubState bwdeb-toucher3)" \
	test "$events" = "frozen 0" -a "$(prop SubState bwdeb-toucher3)" = running
systemctl stop bwdeb-toucher3 bwdeb-hold 2>/dev/null

echo "== $fails check(s) failed; test run $(since "$t_run") s"
exit "$fails"
