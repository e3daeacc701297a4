# shellcheck shell=bash
# Shared by the scripts that run as root inside the systemd guest of scripts/vm-systemd.sh
# (vm-systemd-test.sh, vm-systemd-deb-test.sh): PASS/FAIL lines, the unit's properties and
# what beanwatch left in the kernel. Source it after setting $unit; it counts FAILs in $fails.
fails=0
t_run=$(date +%s.%N)

note() { echo "       $*"; }
indent() { sed 's/^/       | /'; }
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; fails=$((fails + 1)); }
check() {   # check NAME COMMAND...: PASS when COMMAND succeeds
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
prop() { systemctl show -p "$1" --value "${2:-$unit}"; }
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"; }
# BPF programs of beanwatch's (names are cut to 15 characters), by name or by type: nothing
# else on this guest attaches tracing programs.
our_programs() {
	bpftool -j prog show | jq '[.[] | select(((.name // "")
		| test("^(on_vm_syscall|on_page_fault|raw_tracepoint|tracepoint__sc)"))
		or .type == "tracepoint" or .type == "raw_tracepoint")] | length'
}
frozen_cgroups() {
	find /sys/fs/cgroup -mindepth 2 -name cgroup.freeze -exec grep -l '^1$' {} + 2>/dev/null
}
# records EVENT: that event's records from beanwatch this boot, as JSON lines (journal's own
# underscore fields left out)
records() {
	journalctl -b -u "$unit" -o json --output-fields=BEANWATCH_EVENT,BEANWATCH_OK,BEANWATCH_CGROUP,BEANWATCH_ACTION,BEANWATCH_DETAIL,MESSAGE \
		| jq -c --arg e "$1" 'select(.BEANWATCH_EVENT == $e) | with_entries(select(.key | startswith("_") | not))'
}
dump_journal() { journalctl -b -u "$unit" --no-pager -o short-monotonic | tail -n "${1:-30}" | indent; }
