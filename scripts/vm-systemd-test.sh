#!/usr/bin/env bash
# The service on a real systemd host: run as root inside the Debian 12 guest of
# scripts/vm-systemd.sh (make test-systemd), from a writable copy of the project. Installs
# with `make install` (offline: no network in the guest), then walks the unit through its
# life and prints one PASS or FAIL line per check. Exit status: the number of FAILs (0: all
# passed). Not for a development host: it installs beanwatch and starts the service.
set -uo pipefail

export LC_ALL=C.UTF-8 PIP_NO_INDEX=1 SYSTEMD_PAGER=
unit=beanwatch.service
slice=bwtest.slice
# shellcheck source=scripts/guest-checks.sh
source "$(dirname "$0")/guest-checks.sh"
wait_state() {   # wait_state STATE SECONDS: until the unit is STATE (polling every 0.1 s)
	local deadline=$(($(date +%s) + $2))
	while [ "$(prop ActiveState)" != "$1" ]; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

echo "== host: $(uname -r), $(systemctl --version | head -n1), PID 1 $(cat /proc/1/comm)"
echo "== cgroup controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"

# --- make install ---------------------------------------------------------------------------
dpkg-query -W -f '${Package}\n' | sort >/tmp/packages.before
t0=$(date +%s.%N)
if make install >/tmp/install.log 2>&1; then
	pass "make install (offline, PIP_NO_INDEX=1) in $(since "$t0") s"
else
	fail "make install"
	indent </tmp/install.log
	echo "== nothing more to check without an installed beanwatch"
	exit "$fails"
fi
dpkg-query -W -f '${Package}\n' | sort >/tmp/packages.after
added=$(comm -13 /tmp/packages.before /tmp/packages.after | tr '\n' ' ')
tools=$(dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' stress-ng tmux strace prometheus 2>/dev/null \
	| awk '$2 ~ /^ii/ {print $1}' | tr '\n' ' ')
check "make install added no packages to a host with the runtime ones (added: ${added:-none}); no test tools (${tools:-none})" \
	test -z "$added$tools"
check "installed: /usr/local/bin/beanwatch $(/usr/local/bin/beanwatch --version 2>&1)" \
	test -x /usr/local/bin/beanwatch
"/opt/beanwatch/venv/bin/python" - <<'EOF' | sed 's/^/       /'
import click, pyroute2, prometheus_client, importlib.metadata as m
for name in ("click", "pyroute2", "prometheus_client"):
    mod = __import__(name)
    print(f"{name} {m.version(name)} from {mod.__file__.rsplit('/', 2)[0]}")
EOF

if beanwatch check >/tmp/check.log 2>&1; then
	pass "beanwatch check"
else
	fail "beanwatch check (the probes on $(uname -r))"
fi
indent </tmp/check.log

# --- start: active only after READY -------------------------------------------------------
systemd-run -q --unit=bwtest-hold --slice="$slice" sleep infinity
cat >/etc/beanwatch/beanwatch.toml <<EOF
[defaults]
interval = 0.5

[cgroup."$slice"]
limit = "96M"
action = "kill"
EOF
chmod 0600 /etc/beanwatch/beanwatch.toml
t0=$(date +%s.%N)
systemctl start --no-block "$unit"
saw_activating=0
programs_when_active=-1
deadline=$(($(date +%s) + 300))
while [ "$(date +%s)" -lt "$deadline" ]; do
	state=$(prop ActiveState)
	case $state in
		activating) saw_activating=1 ;;
		active) programs_when_active=$(our_programs); break ;;
		failed) break ;;
	esac
	sleep 0.1
done
start_s=$(since "$t0")
if [ "$state" = active ]; then
	pass "the unit starts: active after ${start_s} s (TCG: the probes compile slowly)"
else
	fail "the unit starts (state $state after ${start_s} s)"
	dump_journal 40
	echo "== the unit did not start: nothing more to check"
	exit "$fails"
fi
check "active only after READY=1: activating first ($saw_activating), ${programs_when_active} programs attached the moment it turned active" \
	test "$saw_activating" = 1 -a "$programs_when_active" -gt 0
msgs=$(journalctl -b -u "$unit" -o cat --no-pager)
if printf '%s\n' "$msgs" | grep -n -m1 'watching .* cgroup' >/tmp/w && printf '%s\n' "$msgs" | grep -n -m1 '^Started ' >/tmp/s \
	&& [ "$(cut -d: -f1 /tmp/w)" -lt "$(cut -d: -f1 /tmp/s)" ]; then
	pass "journal order: beanwatch's 'watching ...' before systemd's 'Started ...'"
else
	fail "journal order: beanwatch's 'watching ...' before systemd's 'Started ...'"
fi
status_text=$(prop StatusText)
check "StatusText from STATUS=: '$status_text'" test "${status_text#watching 1 cgroup(s)}" != "$status_text"
pid=$(prop MainPID)
active_at=$(date +%s)

# --- reload ---------------------------------------------------------------------------------
sed -i 's/limit = "96M"/limit = "112M"/' /etc/beanwatch/beanwatch.toml
if systemctl reload "$unit"; then
	sleep 1
	check "systemctl reload: still active ($(prop ActiveState)), same main pid ($pid -> $(prop MainPID))" \
		test "$(prop ActiveState)" = active -a "$(prop MainPID)" = "$pid"
else
	fail "systemctl reload returned an error"
fi
for _ in $(seq 50); do [ -n "$(records reload)" ] && break; sleep 0.2; done
rec=$(records reload | tail -n1)
check "reload record in the journal: ${rec:-none}" test "$(jq -r .BEANWATCH_OK <<<"${rec:-{\}}")" = true

# --- enforcement and records in journald ----------------------------------------------------
cat >/tmp/toucher.py <<'EOF'
import mmap, time
m = mmap.mmap(-1, 256 << 20)
for i in range(0, 256 << 20, 4096):
    m[i] = 1
time.sleep(60)
EOF
t0=$(date +%s.%N)
result=$(systemd-run --wait -q --unit=bwtest-toucher --slice="$slice" -p CollectMode=inactive-or-failed \
	python3 /tmp/toucher.py 2>&1; systemctl show -p Result --value bwtest-toucher 2>/dev/null)
for _ in $(seq 50); do [ -n "$(records action)" ] && break; sleep 0.2; done
action=$(records action | tail -n1)
check "a toucher of 256M in $slice (limit 112M, kill) was killed after $(since "$t0") s" \
	test -n "$action"
note "action record: ${action:-none}"
[ -n "$action" ] || dump_journal 60
unreadable=$(records error | grep -c smaps_rollup)
check "the precise tier read every process (no smaps_rollup refused: $unreadable error records)" \
	test "$unreadable" = 0
fields=$(journalctl -b -u "$unit" -o json | jq -r 'keys[] | select(startswith("BEANWATCH_"))' | sort -u | tr '\n' ' ')
check "records reach journald as structured entries: $fields" grep -q BEANWATCH_EVENT <<<"$fields"

# --- watchdog -------------------------------------------------------------------------------
check "WatchdogSec from the unit: $(prop WatchdogUSec)" test "$(prop WatchdogUSec)" = 30s
w1=$(prop WatchdogTimestampMonotonic)
sleep 16
w2=$(prop WatchdogTimestampMonotonic)
check "the watchdog is fed: WatchdogTimestampMonotonic $w1 -> $w2" test "$w2" -gt "$w1"
left=$((active_at + 36 - $(date +%s)))
[ "$left" -gt 0 ] && sleep "$left"
check "alive past WatchdogSec ($(($(date +%s) - active_at)) s active): $(prop ActiveState), restarts $(prop NRestarts), pid $(prop MainPID)" \
	test "$(prop ActiveState)" = active -a "$(prop NRestarts)" = 0 -a "$(prop MainPID)" = "$pid"

# A stuck loop is caught: SIGSTOP the daemon; systemd kills it (SIGABRT) and restarts it.
kill -STOP "$pid"
t0=$(date +%s.%N)
deadline=$(($(date +%s) + 75))
while [ "$(prop NRestarts)" = 0 ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
caught=$(since "$t0")
if journalctl -b -u "$unit" -o cat | grep -q 'Watchdog timeout'; then
	pass "a stopped loop is caught by the watchdog after ${caught} s and restarted (restarts: $(prop NRestarts))"
else
	fail "a stopped loop is caught by the watchdog (restarts: $(prop NRestarts) after ${caught} s)"
	kill -CONT "$pid" 2>/dev/null
fi
if wait_state active 300; then
	pass "active again after the watchdog restart (pid $(prop MainPID))"
else
	fail "active again after the watchdog restart (state $(prop ActiveState))"
	dump_journal 20
fi

# --- stop -----------------------------------------------------------------------------------
t0=$(date +%s.%N)
systemctl stop "$unit"
stop_s=$(since "$t0")
check "systemctl stop in ${stop_s} s, clean exit: Result=$(prop Result), status $(prop ExecMainStatus)" \
	test "$(prop Result)" = success -a "$(prop ExecMainStatus)" = 0
sleep 1   # the kernel frees programs asynchronously
left=$(our_programs)
check "no BPF program left after stop ($left)" test "$left" = 0
frozen=$(frozen_cgroups | tr '\n' ' ')
check "nothing frozen after stop (${frozen:-no cgroup.freeze = 1})" test -z "$frozen"
if journalctl -b -u "$unit" -o cat | grep -q 'Stopping beanwatch'; then :; fi

# --- systemd's own review ------------------------------------------------------------------
score=$(systemd-analyze security "$unit" 2>/dev/null | tail -n1)
check "systemd-analyze security: ${score:-no answer}" test -n "$score"
systemctl stop bwtest-hold 2>/dev/null

echo "== $fails check(s) failed; test run $(since "$t_run") s"
exit "$fails"
