"""The beanwatch command line: watch, status, demo, check."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import dataclass, replace

import click

from .. import __version__
from ..output import render
from ..host.cgroupfs import CgroupFS, find_mounts
from ..core.config import DEFAULT_HYSTERESIS, Action, ConfigError, Limit, parse_limit_spec
from ..core.errors import BeanwatchError
from ..host.procfs import ProcFS
from ..core.sizes import format_size

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


@dataclass
class Host:
    cg: CgroupFS
    procfs: ProcFS
    own_cgroup: str
    init_cgroup: str


def open_host() -> Host:
    mounts = find_mounts()
    if not mounts.cgroup2:
        raise BeanwatchError("no cgroup2 filesystem is mounted (see /proc/self/mountinfo)")
    procfs = ProcFS()
    own = procfs.cgroup2_path(os.getpid()) or "/"
    init = procfs.cgroup2_path(1) or "/"
    return Host(CgroupFS(mounts.cgroup2, mounts.memory_v1), procfs, own, init)


def fail(message: str, code: int = 1):
    click.echo(f"beanwatch: {message}", err=True)
    sys.exit(code)


def require_root() -> None:
    if os.geteuid() != 0:
        fail("must run as root (loading BPF programs needs CAP_BPF and CAP_PERFMON)")


def _limits_callback(ctx, param, values):
    try:
        return [parse_limit_spec(v) for v in values]
    except BeanwatchError as e:
        raise click.BadParameter(str(e)) from None


def _metrics_callback(ctx, param, value):
    from ..output.metrics import parse_address
    if value is not None:
        try:
            parse_address(value)
        except BeanwatchError as e:
            raise click.BadParameter(str(e)) from None
    return value


def _hook_callback(ctx, param, value):
    from ..host.hooks import check_hook
    if value is not None:
        try:
            return check_hook(value)
        except BeanwatchError as e:
            raise click.BadParameter(str(e)) from None
    return value


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="One JSON object per line on stdout.")(f)


def limit_option(f):
    return click.option("--limit", "limits", multiple=True, metavar="CGROUP=SIZE[:BARRIER]",
                        callback=_limits_callback,
                        help="Watch CGROUP (relative to the cgroup2 mount, or absolute) with a "
                             "limit and optional barrier; sizes take K/M/G/T. Repeatable.")(f)


def resolve_watches(host: Host, limits, action: Action, hysteresis: float, adaptive=False,
                    file_config=None):
    """--limit specs and --config entries to Watch objects, each checked (freeze and kill
    are refused where they could reach init or beanwatch). With neither, every cgroup
    with its memory limit, in report mode."""
    from ..host.actions import ActionRefused, guard
    from .session import Watch
    wanted = [(spec.cgroup, Limit(spec.limit, spec.barrier, action, hysteresis, adaptive))
              for spec in limits]
    if file_config is not None:
        wanted += [(c.cgroup, replace(c.limit, adaptive=adaptive)) for c in file_config.cgroups]
    if not wanted:
        watches = []
        for cid, name in sorted(host.cg.walk().items(), key=lambda kv: kv[1]):
            lim = host.cg.memory_limit(name)
            watches.append(Watch(name, cid, Limit(lim, None, Action.REPORT, hysteresis, adaptive)
                                 if lim else None))
        return watches
    watches, seen = [], set()
    for spec, limit in wanted:
        name = host.cg.resolve(spec)
        if name in seen:
            raise ConfigError(f"cgroup {name} is given twice")
        seen.add(name)
        cid = host.cg.cgroup_id(name)
        if limit.action is not Action.REPORT:
            try:
                guard(host.cg, name, cid, host.own_cgroup, host.init_cgroup)
            except ActionRefused as e:
                raise ConfigError(f"action {limit.action.value} on {name}: {e}") from None
        watches.append(Watch(name, cid, limit))
    return watches


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
@click.option("--config", "config_path", type=click.Path(dir_okay=True), default=None,
              help="TOML file of limits (see README); reloaded on SIGHUP. It must be owned by "
                   "root and not writable by group or others.")
@click.option("--action", type=click.Choice([a.value for a in Action]), default="report",
              show_default=True, help="What to do with a cgroup past its limit.")
@click.option("--hysteresis", type=FiniteFloatRange(0, 1, max_open=True),
              default=DEFAULT_HYSTERESIS, show_default=True,
              help="Return to fast mode below limit x (1 - this).")
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
              help="Seconds a hook may run before it is killed (and ignored).")
@click.option("--journal", is_flag=True,
              help="Also send every record but snapshots to the systemd journal as structured "
                   "fields (BEANWATCH_*), with a syslog priority per event.")
@click.option("--metrics", "metrics_addr", metavar="ADDR:PORT", default=None,
              callback=_metrics_callback, help="Serve Prometheus metrics, e.g. 127.0.0.1:9638.")
@click.option("--ringbuf-pages", type=click.IntRange(1, 65536), default=64, hidden=True)
@click.option("--vm-hook", type=click.Choice(["auto", "mmap-lock", "syscalls"]), default="auto",
              hidden=True, help="How address-space changes are followed (for benchmarks).")
@click.option("--kill-via", type=click.Choice(["auto", "signals"]), default="auto", hidden=True,
              help="signals: freeze + SIGKILL through pidfds even where cgroup.kill exists.")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the BPF source and exit.")
def watch(limits, config_path, action, hysteresis, adaptive, interval, duration, as_json,
          keep_frozen, on_exceed, on_action, hook_timeout, journal, metrics_addr, ringbuf_pages,
          vm_hook, kill_via, print_bpf):
    """Watch cgroups live and act on limits."""
    from ..kernel.loader import probe_source
    if print_bpf:
        with open(probe_source()) as f:
            click.echo(f.read())
        return
    from ..host.configfile import load
    action = Action(action)
    if action is not Action.REPORT and not limits:
        raise click.UsageError(f"--action {action.value} needs at least one --limit")
    try:
        file_config = load(config_path) if config_path else None
    except BeanwatchError as e:
        fail(str(e), 2)
    require_root()
    try:
        host = open_host()
        watches = resolve_watches(host, limits, action, hysteresis, adaptive, file_config)
    except BeanwatchError as e:
        fail(str(e), 2)
    if interval is None:
        interval = (file_config.interval if file_config and file_config.interval else 1.0)

    def reload():
        """SIGHUP: the config file again; a bad one keeps the running config."""
        fresh = load(config_path)
        return resolve_watches(host, limits, action, hysteresis, adaptive, fresh)

    from ..host.hooks import HookRunner
    hooks = HookRunner(on_action, on_exceed, hook_timeout) if (on_action or on_exceed) else None
    code = run_watch(host, watches, interval, duration, as_json, keep_frozen, ringbuf_pages, vm_hook,
                     reload if config_path else None, kill_via, metrics_addr, hooks, journal)
    sys.exit(code)


class TableSink:
    """Collects snapshot records and redraws the table once per round; logs the rest."""

    def __init__(self, n_accounts, out=sys.stdout):
        self.n = n_accounts   # a callable: the number of accounts changes on reload
        self.out = out
        self.batch: list[dict] = []
        self.clear = out.isatty()

    def __call__(self, rec: dict) -> None:
        if rec["event"] != "snapshot":
            render.message(render.describe(rec))
            return
        self.batch.append(rec)
        if len(self.batch) >= self.n():
            text = render.table(self.batch)
            self.batch = []
            if self.clear:
                self.out.write("\x1b[H\x1b[2J")
            self.out.write(text + "\n\n")
            self.out.flush()


def json_sink(rec: dict) -> None:
    sys.stdout.write(render.json_line(rec) + "\n")
    sys.stdout.flush()


class Signals:
    """SIGINT and SIGTERM end the session between two polls, so cleanup always runs;
    SIGHUP asks for a reload. Handlers only set flags."""

    def __init__(self):
        self.signal = None
        self.hup = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, self._hup)

    def _stop(self, signum, _frame):
        self.signal = signum

    def _hup(self, _signum, _frame):
        self.hup = True

    def take_hup(self) -> bool:
        hup, self.hup = self.hup, False
        return hup

    def __call__(self) -> bool:
        return self.signal is not None


StopFlag = Signals


def build_session(host: Host, watches, sink, interval, keep_frozen=False, ringbuf_pages=64,
                  vm_hook="auto", kill_via="auto", state_dir=None, hooks=None):
    from ..host.actions import Actor
    from ..host.state import DEFAULT_STATE_DIR, FrozenLedger
    from ..kernel.loader import ProbeOptions, Probes
    from ..host.netlink import PeakReader
    from .session import Session
    holder = {}
    probes = Probes(lambda ev: holder["s"].on_event(ev), ProbeOptions(ring_pages=ringbuf_pages,
                                                                   vm_hook=vm_hook))
    actor = Actor(host.cg, host.procfs, host.own_cgroup, host.init_cgroup,
                  use_cgroup_kill=(kill_via == "auto"))
    session = Session(watches, host.cg, host.procfs, probes, actor, sink, interval=interval,
                      keep_frozen=keep_frozen, taskstats=PeakReader(),
                      ledger=FrozenLedger(state_dir or DEFAULT_STATE_DIR), hooks=hooks)
    holder["s"] = session
    return session


def run_watch(host, watches, interval, duration, as_json, keep_frozen, ringbuf_pages,
              vm_hook="auto", reload=None, kill_via="auto", metrics_addr=None, hooks=None,
              journal=False) -> int:
    from ..host.selfguard import protect_self
    holder = {}
    sink = json_sink if as_json else TableSink(lambda: len(holder["s"].accounts))
    if journal:
        from ..output.journal import JournalSink
        to_journal, to_output = JournalSink(), sink

        def sink(rec):
            to_output(rec)
            to_journal(rec)
    signals = Signals()
    session = build_session(host, watches, sink, interval, keep_frozen, ringbuf_pages, vm_hook,
                            kill_via, hooks=hooks)
    holder["s"] = session

    def on_hup():
        if not signals.take_hup():
            return
        if reload is None:
            render.message("SIGHUP: no --config to reload")
            return
        try:
            fresh = reload()
        except BeanwatchError as e:
            render.message(f"reload refused, keeping the running config: {e}")
            sink({"event": "reload", "ts": time.time(), "cgroup": None, "ok": False,
                  "detail": str(e)})
            return
        session.apply_watches(fresh)
        render.message(f"reloaded: watching {len(fresh)} cgroup(s)")
        sink({"event": "reload", "ts": time.time(), "cgroup": None, "ok": True,
              "detail": f"{len(fresh)} cgroup(s)"})

    server = None
    try:
        session.start()
        if metrics_addr is not None:
            from ..output.metrics import serve
            server = serve(session, metrics_addr)
            render.message(f"metrics on http://{metrics_addr}/metrics")
        for note in protect_self():
            render.message(note)
        if not session.probes.has_fault_tracepoint:
            render.message("exceptions:page_fault_user is missing (not x86?): slow mode relies "
                           "on periodic exact checks every --interval")
        render.message(f"watching {len(session.accounts)} cgroup(s) "
                       f"(address space via {session.probes.vm_hook}); Ctrl-C to stop")
        session.run(duration, signals, on_loop=on_hup)
    except BeanwatchError as e:
        render.message(str(e))
        return 1
    finally:
        if server is not None:
            server.shutdown()
        for name in session.stop():
            render.message(f"thawed {name}")
    if session.loop_errors:
        render.message(f"{session.loop_errors} internal error(s) were logged during the session")
    return 0


@cli.command()
@limit_option
@click.option("--interval", type=FiniteFloatRange(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
def top(limits, interval):
    """Full-screen live view, sorted by how close each cgroup is to its limit.

    Report only: top never freezes or kills. Keys: s cycles the sort (closeness to the
    limit, held, estimate, name), n sorts by name, q quits.
    """
    from ..output.top import run_top
    if not sys.stdout.isatty():
        raise click.UsageError("top needs a terminal; use `watch` for a stream")
    require_root()
    try:
        host = open_host()
        watches = resolve_watches(host, limits, Action.REPORT, DEFAULT_HYSTERESIS)
    except BeanwatchError as e:
        fail(str(e), 2)
    signals = Signals()
    try:
        code = run_top(lambda sink: build_session(host, watches, sink, interval), watches,
                       interval, signals)
    except BeanwatchError as e:
        fail(str(e), 1)
    sys.exit(code)


@cli.command()
@click.option("--cgroup", "cgroups", multiple=True, metavar="CGROUP",
              help="Verify this cgroup (and its descendants); repeatable. Default: all.")
@click.option("--duration", type=FiniteFloatRange(0, min_open=True), default=10.0,
              show_default=True, help="Seconds to run.")
@click.option("--interval", type=FiniteFloatRange(0.05, 3600), default=1.0, show_default=True)
@json_option
def verify(cgroups, duration, interval, as_json):
    """Check the estimate against /proc on your own workloads.

    Runs the live accounting and, every interval, compares each process's estimate with
    its VmSize and VmRSS, and each cgroup's with its processes' summed RSS. Prints
    violations (an estimate below RSS: the estimate would be unsound) and drift (estimate
    minus VmSize). Exits 1 on any violation.
    """
    from .session import Watch
    from .verify import Verifier
    require_root()
    try:
        host = open_host()
        if cgroups:
            names = [host.cg.resolve(c) for c in cgroups]
            watches = [Watch(n, host.cg.cgroup_id(n), None) for n in dict.fromkeys(names)]
        else:
            watches = [Watch(n, cid, None) for cid, n in sorted(host.cg.walk().items(),
                                                                key=lambda kv: kv[1])]
    except BeanwatchError as e:
        fail(str(e), 2)

    def sink(rec):
        if as_json:
            json_sink(rec)
        elif rec["event"] == "violation":
            who = f"pid {rec['pid']} ({rec.get('comm')})" if rec["pid"] else "cgroup total"
            render.message(f"VIOLATION {rec['cgroup']}: {who} estimate "
                           f"{format_size(rec['estimate_bytes'])} < RSS {format_size(rec['rss_bytes'])}")

    stop = Signals()
    session = build_session(host, watches, lambda rec: None, interval)
    verifier = Verifier(session, sink)
    try:
        session.start()
        render.message(f"verifying {len(watches)} cgroup(s) for {duration:g}s")
        session.run(duration, stop, on_tick=verifier)
    except BeanwatchError as e:
        render.message(str(e))
        sys.exit(1)
    finally:
        session.stop()
    if not as_json:
        click.echo(f"{'cgroup':<40} {'samples':>7} {'violations':>10} {'max drift':>9} {'est/exact':>9}")
        for name, t in verifier.tallies.items():
            click.echo(f"{name[-40:]:<40} {t.samples:>7} {t.violations:>10} "
                       f"{format_size(t.max_drift):>9} {t.max_ratio:>9.2f}")
    sys.exit(1 if verifier.violations else 0)


@cli.command()
@limit_option
@json_option
@click.option("--format", "fmt", type=click.Choice(["table", "beancounters"]), default="table",
              show_default=True)
def status(limits, as_json, fmt):
    """One-shot accounting from /proc, no BPF: estimate, exact, limit, mode."""
    from ..core.model import Account
    from .session import account_record
    import time
    try:
        host = open_host()
        watches = resolve_watches(host, limits, Action.REPORT, DEFAULT_HYSTERESIS)
    except BeanwatchError as e:
        fail(str(e), 2)
    records = []
    now = time.time()
    for w in watches:
        vm = rss = 0
        for pid in host.cg.subtree_procs(w.name):
            statm = host.procfs.statm(pid)
            if statm:
                vm += statm[0]
                rss += statm[1]
        acc = Account(w.name, w.cgroup_id, w.limit)
        acc.on_estimate(vm)
        acc.on_exact(rss, now)
        acc.failcnt = 0
        # one-shot: both are measured, so held is the exact figure
        records.append(account_record("status", acc, now, held_bytes=rss, maxheld_bytes=rss))
    if as_json:
        for rec in records:
            click.echo(render.json_line(rec))
    elif fmt == "beancounters":
        click.echo(render.beancounters(records))
    else:
        click.echo(render.table(records))


@cli.command()
@click.option("--limit", "limit_text", default="256M", show_default=True,
              help="Limit for the scratch cgroup.")
@json_option
def demo(limit_text, as_json):
    """Zero-configuration demonstration on a scratch cgroup.

    A workload reserves 1 GiB of address space but touches 16 MiB (fast -> slow mode,
    exact check passes, no kill), then touches memory past the limit (killed).
    """
    from .demo import run_demo
    from ..core.sizes import parse_size
    try:
        limit = parse_size(limit_text)
        if limit < 64 << 20:
            raise ConfigError("--limit for the demo must be at least 64M")
    except BeanwatchError as e:
        raise click.BadParameter(str(e), param_hint="--limit") from None
    require_root()
    try:
        host = open_host()
    except BeanwatchError as e:
        fail(str(e), 2)
    sys.exit(run_demo(host, limit, as_json))


@cli.command()
@json_option
def check(as_json):
    """What this host supports; exits non-zero with the reason if beanwatch cannot run."""
    from .hostcheck import run_checks
    results = run_checks()
    ok = all(r.ok or not r.required for r in results)
    if as_json:
        for r in results:
            click.echo(render.json_line({"event": "check", "name": r.name, "ok": r.ok,
                                         "required": r.required, "detail": r.detail}))
    else:
        for r in results:
            mark = "ok" if r.ok else ("MISSING" if r.required else "no")
            click.echo(f"{mark:>8}  {r.name}: {r.detail}")
    if not ok:
        failed = [r.name for r in results if r.required and not r.ok]
        fail("cannot run here: " + ", ".join(failed), 1)


def main():
    cli(prog_name="beanwatch")


if __name__ == "__main__":
    main()
