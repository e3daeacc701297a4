"""The beanwatch command line: parses and validates, then calls the runtime (nothing imports it)."""

from __future__ import annotations

import math
import os
import sys

import click

from .. import __version__
from ..core.config import (DEFAULT_HYSTERESIS, MAX_GRACE, Action, ConfigError, Count, KillScope,
                           parse_limit_spec, parse_vm_limit_spec)
from ..core.errors import BeanwatchError
from ..output import render
from . import demo, runtime

EXAMPLES_WATCH = """
\b
Examples:
  beanwatch watch --limit batch.slice=4G --action kill
  beanwatch watch --limit /sys/fs/cgroup/job=512M:448M --json --duration 60
  beanwatch watch          # every cgroup, limits from memory.max, report only
"""


class FiniteFloatRange(click.FloatRange):
    """FloatRange that also refuses NaN, which passes every range comparison."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if math.isnan(rv):
            self.fail(f"{value!r} is not a number.", param, ctx)
        return rv


def fail(message: str, code: int = 1):
    click.echo(f"beanwatch: {message}", err=True)
    sys.exit(code)


def require_root() -> None:
    if os.geteuid() != 0:
        fail("must run as root (loading BPF programs needs CAP_BPF and CAP_PERFMON)")


def open_host_or_exit(watches_of=None):
    """The host, and the watches watches_of(host) gives; a bad name or limit exits 2."""
    try:
        host = runtime.open_host()
        return host, (watches_of(host) if watches_of else None)
    except BeanwatchError as e:
        fail(str(e), 2)


def _parsed(parse, value):
    """parse(value), with beanwatch's own error turned into click's usage error (one line,
    exit 2); None (an option not given) passes through unparsed."""
    if value is None:
        return None
    try:
        return parse(value)
    except BeanwatchError as e:
        raise click.BadParameter(str(e)) from None


def _limits_callback(ctx, param, values):
    return _parsed(lambda vs: [parse_limit_spec(v) for v in vs], values)


def _barrier_action_callback(ctx, param, value):
    from ..core.config import parse_barrier_action
    return _parsed(parse_barrier_action, value)


def _vm_limits_callback(ctx, param, values):
    return _parsed(lambda vs: [parse_vm_limit_spec(v) for v in vs], values)


def _metrics_callback(ctx, param, value):
    from ..output.metrics import parse_address
    _parsed(parse_address, value)
    return value


def _hook_callback(ctx, param, value):
    from ..host.hooks import check_hook
    return _parsed(check_hook, value)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="One JSON object per line on stdout.")(f)


def limit_option(f):
    return click.option("--limit", "limits", multiple=True, metavar="CGROUP=SIZE[:BARRIER]",
                        callback=_limits_callback,
                        help="Watch CGROUP (relative to the cgroup2 mount, or absolute) with a "
                             "limit and optional barrier; sizes take K/M/G/T. Repeatable.")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="beanwatch")
def cli():
    """On-demand per-cgroup memory accounting with eBPF.

    A cgroup whose processes' mapped memory (an upper bound of their resident memory)
    stays under its limit costs nothing per page fault. Above it, exact usage is
    followed, and a cgroup past its limit is reported, frozen or killed.
    """


@cli.command(epilog=EXAMPLES_WATCH)
@limit_option
@click.option("--vm-limit", "vm_limits", multiple=True, metavar="CGROUP=SIZE[:BARRIER]",
              callback=_vm_limits_callback,
              help="Refuse growth of CGROUP's mapped total (its processes' summed VmSize) past "
                   "SIZE: mmap, shmat, mremap, brk fail with ENOMEM and the process lives; "
                   "growth past BARRIER is counted. Needs BPF LSM (see `beanwatch check`). "
                   "Repeatable.")
@click.option("--config", "config_path", type=click.Path(dir_okay=True), default=None,
              help="TOML file of limits (see README); reloaded on SIGHUP. It must be owned by "
                   "root and not writable by group or others.")
@click.option("--action", type=click.Choice([a.value for a in Action]), default=None,
              help="What to do with a cgroup past its limit [default: report]. A cgroup's "
                   "own setting in --config comes first, then this, then the config's "
                   "[defaults].")
@click.option("--barrier-action", metavar="report|signal:SIG|throttle|hook", default=None,
              callback=_barrier_action_callback,
              help="Once when exact usage passes a cgroup's barrier (again after it fell back "
                   "under the barrier less the hysteresis): report (the barrier record only; "
                   "default), signal:SIG to each of its processes, throttle (memory.high at "
                   "the barrier until usage falls back), hook (runs --on-action). Precedence "
                   "as --action.")
@click.option("--hysteresis", type=FiniteFloatRange(0, 1, max_open=True), default=None,
              help=f"Return to fast mode below limit x (1 - this) [default: "
                   f"{DEFAULT_HYSTERESIS:g}]; precedence as --action.")
@click.option("--count", type=click.Choice([c.value for c in Count]), default=None,
              help="What usage counts: resident memory, or resident memory and swap "
                   "[default: rss].")
@click.option("--kill-scope", type=click.Choice([k.value for k in KillScope]), default=None,
              help="What --action kill takes: the whole limited cgroup, its largest child "
                   "cgroup, or its largest process (by PSS) [default: cgroup].")
@click.option("--prefer", multiple=True, metavar="PATTERN",
              help="Kill first: child cgroups (path below the limited one) or processes "
                   "(name) matching this glob. Repeatable. Also oomd's user.oomd_prefer.")
@click.option("--avoid", multiple=True, metavar="PATTERN",
              help="Kill last: as --prefer. Also oomd's user.oomd_avoid.")
@click.option("--grace", type=FiniteFloatRange(0, MAX_GRACE), default=None,
              help="Send SIGTERM to the victim first, and SIGKILL after this many seconds if "
                   "usage is still over [default: 0: SIGKILL at once].")
@click.option("--adaptive/--fixed-hysteresis", default=True, show_default=True,
              help="Widen the hysteresis while a cgroup flaps between modes (up to 50%).")
@click.option("--interval", type=FiniteFloatRange(0.05, 3600), default=None,
              help="Seconds between snapshots and slow-mode exact checks [default: 1, or the "
                   "config's].")
@click.option("--duration", type=FiniteFloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds.")
@json_option
@click.option("--keep-frozen", is_flag=True, help="Leave cgroups frozen by --action freeze on exit.")
@click.option("--on-exceed", metavar="PATH", callback=_hook_callback,
              help="Run PATH before each action (data in BEANWATCH_* variables); exit 1 vetoes. "
                   "The cgroup is held frozen meanwhile (freeze and kill).")
@click.option("--on-action", metavar="PATH", callback=_hook_callback,
              help="Run PATH after each action (data in BEANWATCH_* variables).")
@click.option("--hook-timeout", type=FiniteFloatRange(0.05, 60), default=2.0, show_default=True,
              help="Seconds a hook may run before it is killed, with every process it started "
                   "(and ignored). Hooks run beside the loop: other cgroups are enforced meanwhile.")
@click.option("--journal", is_flag=True,
              help="Also send every record but snapshots to the systemd journal as structured "
                   "fields (BEANWATCH_*), with a syslog priority per event.")
@click.option("--metrics", "metrics_addr", metavar="[ADDR:]PORT", default=None,
              callback=_metrics_callback,
              help="Serve Prometheus metrics on /metrics, e.g. 127.0.0.1:9638; a port alone "
                   "binds loopback. At most 8 scrapes at once, 5 s per read or write.")
@click.option("--ringbuf-pages", type=click.IntRange(1, 65536), default=64, hidden=True)
@click.option("--vm-hook", type=click.Choice(["auto", "mmap-lock", "syscalls"]), default="auto",
              hidden=True, help="How address-space changes are followed (for benchmarks).")
@click.option("--kill-via", type=click.Choice(["auto", "signals"]), default="auto", hidden=True,
              help="signals: freeze + SIGKILL through pidfds even where cgroup.kill exists.")
@click.option("--max-leaves", type=click.IntRange(64, 1 << 22), default=None, hidden=True,
              help="Entries of the per-cgroup kernel maps (default: from the host; for tests).")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the BPF source and exit.")
def watch(limits, vm_limits, config_path, action, barrier_action, hysteresis, count, kill_scope,
          prefer, avoid, grace, adaptive, interval, duration, as_json,
          keep_frozen, on_exceed, on_action, hook_timeout, journal, metrics_addr, ringbuf_pages,
          vm_hook, kill_via, max_leaves, print_bpf):
    """Watch cgroups live and act on limits."""
    if print_bpf:
        from ..kernel.loader import probe_source
        with open(probe_source()) as f:
            click.echo(f.read())
        return
    # First of all: a SIGHUP (a reload) or SIGTERM that comes while the config is read and
    # the probes compile (a second or more) is kept for the loop, never the end of the daemon.
    signals = runtime.Signals()
    from ..host.configfile import load
    from .session import memory_max_template
    action = Action(action) if action is not None else None
    if action not in (None, Action.REPORT) and not limits and not config_path:
        raise click.UsageError(f"--action {action.value} needs --limit or --config (limits "
                               "read from memory.max are only reported)")
    if barrier_action is not None and not limits and not config_path:
        raise click.UsageError("--barrier-action needs --limit or --config (limits read from "
                               "memory.max have no barrier)")
    try:
        file_config = load(config_path) if config_path else None
    except BeanwatchError as e:
        fail(str(e), 2)
    require_root()
    policy = {k: v for k, v in (("count", count and Count(count)),
                                ("kill_scope", kill_scope and KillScope(kill_scope)),
                                ("grace", grace), ("prefer", tuple(prefer)),
                                ("avoid", tuple(avoid))) if v not in (None, ())}
    wants_vm = bool(vm_limits) or bool(file_config and file_config.vm_limits())
    if wants_vm and (problem := runtime.refusal_problem()):
        fail(f"--vm-limit cannot be enforced here: {problem}", 2)
    vm = []

    def watches_for(host, config):
        """The watches: --limit and the config's limits, plus the vm-limited cgroups (vm
        limits only: just those, not every cgroup's memory.max)."""
        watches = []
        if limits or (config and config.limits()) or not vm:
            watches = runtime.resolve_watches(host, limits, action, hysteresis, adaptive,
                                              config, wait_for_missing=True, policy=policy,
                                              barrier_action=barrier_action,
                                              has_on_action=bool(on_action))
        return runtime.with_vm_watches(host, watches, vm)

    def resolve(host):
        vm.extend(runtime.resolve_vm_limits(host, vm_limits, file_config))
        return watches_for(host, file_config)
    host, watches = open_host_or_exit(resolve)
    if interval is None:
        interval = (file_config.interval if file_config and file_config.interval else 1.0)

    def reload():
        """SIGHUP: the config file again; a bad one keeps the running config. The vm
        limits stay as they were at start (their programs are compiled in then)."""
        return watches_for(host, load(config_path))

    options = runtime.Options(
        interval=interval, duration=duration, as_json=as_json, keep_frozen=keep_frozen,
        ringbuf_pages=ringbuf_pages, vm_hook=vm_hook, kill_via=kill_via,
        metrics_addr=metrics_addr, journal=journal, on_exceed=on_exceed, on_action=on_action,
        hook_timeout=hook_timeout, max_leaves=max_leaves, vm_limits=tuple(vm),
        # no --limit and no --config: limits from memory.max, followed live
        memory_max=(None if limits or file_config or vm else
                    memory_max_template(DEFAULT_HYSTERESIS if hysteresis is None
                                        else hysteresis, adaptive)))
    sys.exit(runtime.run_watch(host, watches, options, reload if config_path else None,
                               signals=signals))


@cli.command()
@limit_option
@click.option("--interval", type=FiniteFloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
def top(limits, interval):
    """Full-screen live view, sorted by how close each cgroup is to its limit.

    Report only: top never freezes or kills. Keys: s cycles the sort (closeness to the
    limit, held, estimate, name), n sorts by name, q quits.
    """
    if not sys.stdout.isatty():
        raise click.UsageError("top needs a terminal; use `watch` for a stream")
    require_root()
    host, watches = open_host_or_exit(lambda host: runtime.resolve_watches(
        host, limits, Action.REPORT, DEFAULT_HYSTERESIS))
    try:
        code = runtime.run_top(host, watches, interval)
    except BeanwatchError as e:
        fail(str(e), 1)
    sys.exit(code)


@cli.command()
@click.option("--cgroup", "cgroups", multiple=True, metavar="CGROUP",
              help="Verify this cgroup (and its descendants); repeatable. Default: all.")
@click.option("--duration", type=FiniteFloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds to run.")
@click.option("--interval", type=FiniteFloatRange(0.05, 3600), default=1.0, show_default=True,
              help="Seconds between two comparisons.")
@json_option
def verify(cgroups, duration, interval, as_json):
    """Check the estimate against /proc on your own workloads.

    Runs the live accounting and, every interval, compares each process's estimate with
    its VmSize and VmRSS, and each cgroup's with its processes' summed RSS. Prints
    violations (an estimate below RSS: the estimate would be unsound) and drift (estimate
    minus VmSize: up to 1/64 of it or 256 KiB, 16 MiB at most a process, while small
    shrinks wait). Exits 1 on any violation.
    """
    require_root()
    host, watches = open_host_or_exit(lambda host: runtime.all_cgroups(host, cgroups))
    sys.exit(runtime.run_verify(host, watches, duration, interval, as_json))


def _min_size_callback(ctx, param, value):
    from ..core.sizes import PAGE_SIZE, parse_size
    size = _parsed(parse_size, value)
    if size < PAGE_SIZE:
        raise click.BadParameter(f"{value!r} is below one page ({PAGE_SIZE} bytes)")
    return size


EXAMPLES_TRACE = """
\b
Examples:
  beanwatch trace --min-size 16M
  beanwatch trace --cgroup batch.slice --limit batch.slice/job=2G --rss-min 4M
  beanwatch trace --json --duration 60   # limits from memory.max
"""


@cli.command(epilog=EXAMPLES_TRACE)
@click.option("--cgroup", "cgroups", multiple=True, metavar="CGROUP",
              help="Trace this cgroup (and its descendants); repeatable. Default: all.")
@limit_option
@click.option("--min-size", "min_size", default="64M", show_default=True, metavar="SIZE",
              callback=_min_size_callback,
              help="Show one change of a process's address space of this size or more.")
@click.option("--rss-min", "rss_min", default="1M", show_default=True, metavar="SIZE",
              callback=_min_size_callback,
              help="In slow mode, show each process whose resident memory grew by this much "
                   "or more over one interval.")
@click.option("--interval", type=FiniteFloatRange(0.05, 3600), default=1.0, show_default=True,
              help="Seconds between slow-mode exact checks (and rss lines).")
@click.option("--duration", type=FiniteFloatRange(0, min_open=True), default=None,
              help="Seconds to run (default: until Ctrl-C).")
@json_option
def trace(cgroups, limits, min_size, rss_min, interval, duration, as_json):
    """Live stream of address-space growth: which process grew, when, by how much.

    One line per change of a process's mapped total (VmSize) of at least --min-size:
    time, cgroup and name, pid and comm, kind (mmap, brk, mremap, stack, shm, exec, fork,
    or mapping where the kernel does not say), the change in bytes, and the cgroup's
    estimate after it.

    Limits (--limit, else each cgroup's memory.max, followed live) put a cgroup in slow
    mode as watch does; a mode line tells each switch. While a cgroup is slow, once per
    --interval, one rss line for each of its processes whose resident memory grew by
    --rss-min or more: the growth, its RSS now, the cgroup's exact usage and limit.
    Report only: nothing is limited, frozen, throttled or killed.
    """
    from .session import memory_max_template
    require_root()
    host, (watches, names) = open_host_or_exit(
        lambda host: runtime.trace_watches(host, limits, cgroups))
    sys.exit(runtime.run_trace(
        host, watches, names, min_size, duration, as_json, interval=interval, rss_min=rss_min,
        # no --limit: limits from memory.max, followed live (report only)
        memory_max=None if limits else memory_max_template(DEFAULT_HYSTERESIS, True)))


@cli.command()
@limit_option
@json_option
@click.option("--format", "fmt", type=click.Choice(["table", "beancounters"]), default=None,
              help="Text layout: table (default) or OpenVZ's /proc/user_beancounters.")
def status(limits, as_json, fmt):
    """One-shot accounting from /proc, no BPF: estimate, exact, limit, mode.

    Each cgroup is measured once: usage above its barrier or limit counts one failure
    (failcnt). Exits 3 when any cgroup is above its limit, 2 on a usage error.
    """
    if as_json and fmt is not None:
        raise click.UsageError("--format and --json exclude each other (--json is one JSON "
                               "object per line)")
    host, watches = open_host_or_exit(lambda host: runtime.resolve_watches(
        host, limits, Action.REPORT, DEFAULT_HYSTERESIS))
    records = runtime.status_records(host, watches)
    if as_json:
        for rec in records:
            click.echo(render.json_line(rec))
    elif fmt == "beancounters":
        click.echo(render.beancounters(records))
    else:
        click.echo(render.table(records, runtime.terminal_width(sys.stdout)))
    sys.exit(runtime.status_exit_code(records))


@cli.command("demo")
@click.option("--limit", "limit_text", default="256M", show_default=True,
              help="Limit for the scratch cgroup, from 64M to 768M.")
@json_option
def demo_command(limit_text, as_json):
    """Zero-configuration demonstration on a scratch cgroup.

    A workload reserves 1 GiB of address space but touches 16 MiB (fast -> slow mode,
    exact check passes, no kill), then touches memory past the limit (killed).
    """
    from ..core.sizes import parse_size
    try:
        limit = parse_size(limit_text)
        if problem := demo.demo_limit_problem(limit):
            raise ConfigError(problem)
    except BeanwatchError as e:
        raise click.BadParameter(str(e), param_hint="--limit") from None
    require_root()
    host, _ = open_host_or_exit()
    sys.exit(demo.run_demo(host, limit, as_json))


@cli.command()
@json_option
def check(as_json):
    """What this host supports; exits non-zero with the reason if beanwatch cannot run."""
    sys.exit(runtime.run_check(as_json))


def main():
    cli(prog_name="beanwatch")


if __name__ == "__main__":
    main()
