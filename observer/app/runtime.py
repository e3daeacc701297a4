"""The runtime under the CLI: opens the host, builds the session, runs the loops with their sinks and signals."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from dataclasses import dataclass, replace

from ..core.config import DEFAULT_HYSTERESIS, Action, BarrierAction, ConfigError, Limit
from ..core.errors import BeanwatchError
from ..core.model import Account
from ..core.sizes import format_size, to_pages
from ..kernel import wire
from ..host.cgroupfs import CgroupFS, find_mounts
from ..host.procfs import ProcFS
from ..output import render
from ..core.records import account_record, record
from .session import Session, Watch, measure, measure_usage


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


@dataclass(frozen=True)
class Options:
    """How a session runs: what `watch` takes on its command line, with its defaults."""

    interval: float = 1.0
    duration: float | None = None
    as_json: bool = False
    keep_frozen: bool = False
    ringbuf_pages: int = 64
    vm_hook: str = "auto"
    kill_via: str = "auto"            # "signals": freeze + SIGKILL even where cgroup.kill exists
    metrics_addr: str | None = None
    journal: bool = False
    on_exceed: str | None = None      # hook paths, checked already
    on_action: str | None = None
    hook_timeout: float = 2.0
    state_dir: str | None = None      # None: state.DEFAULT_STATE_DIR
    memory_max: Limit | None = None   # limits from memory.max, followed live (no --limit)
    max_leaves: int | None = None     # kernel map sizes: None sizes them from the host
    max_procs: int | None = None
    vm_limits: tuple = ()             # --vm-limit: (cgroup name, core.config.VmLimit) pairs


def resolve_watches(host: Host, limits, action: Action | None, hysteresis: float | None,
                    adaptive=False, file_config=None, wait_for_missing=False, policy=None,
                    barrier_action=None, has_on_action=True):
    """--limit specs and --config entries to Watch objects, each checked (freeze and kill
    are refused where they could reach init or beanwatch). With neither, every cgroup
    with its memory limit, in report mode. With wait_for_missing, a cgroup that does not
    exist yet is watched under its name (id 0): the session waits for it.

    action and hysteresis are the command line's (None: not given there). Each setting
    comes from, in order: the cgroup's own table in the file, the command line, the file's
    [defaults], the built-in default (report, DEFAULT_HYSTERESIS); barrier_action (a
    config.BarrierAction, None: not given) the same way. A barrier action other than report
    is refused, with the reason, where it cannot be carried out: on a cgroup the guard
    refuses, throttle where memory.high is missing, hook without an on-action hook
    (has_on_action False), and on a --limit without a barrier.

    policy: the Limit fields given on the command line (count, kill_scope, grace, prefer,
    avoid), for every --limit, and for config entries whose own table does not set them."""
    from ..host.actions import ActionRefused, guard
    from ..host.configfile import first
    policy = dict(policy or {})
    defaults = file_config if file_config is not None else None
    cli_action = first(action, defaults.default_action if defaults else None, Action.REPORT)
    cli_hyst = first(hysteresis, defaults.default_hysteresis if defaults else None,
                     DEFAULT_HYSTERESIS)
    cli_barrier = first(barrier_action,
                        getattr(defaults, "default_barrier_action", None) if defaults else None,
                        BarrierAction())
    wanted = [(spec.cgroup, Limit(spec.limit, spec.barrier, cli_action, cli_hyst, adaptive,
                                  barrier_action=cli_barrier, **policy))
              for spec in limits]
    for spec in limits:
        if barrier_action is not None and barrier_action.kind != "report" and spec.barrier is None:
            raise ConfigError(f"--barrier-action {barrier_action} on {spec.cgroup}: it has no "
                              "barrier (give CGROUP=SIZE:BARRIER)")
    if file_config is not None:
        wanted += [(cg, replace(lim, adaptive=adaptive,
                                **{k: v for k, v in policy.items() if k not in c.explicit}))
                   for c, (cg, lim) in zip([c for c in file_config.cgroups
                                            if c.limit is not None],   # as limits() skips
                                           file_config.limits(action, hysteresis,
                                                              barrier_action=barrier_action))]
    for _, lim in wanted:
        if lim.barrier is not None and lim.barrier_action.kind == "hook" and not has_on_action:
            raise ConfigError("barrier action hook needs --on-action PATH (the hook it runs)")
    if not wanted:
        watches = []
        for cid, name in sorted(host.cg.walk().items(), key=lambda kv: kv[1]):
            lim = host.cg.memory_limit(name)
            watches.append(Watch(name, cid, Limit(lim, None, Action.REPORT, cli_hyst, adaptive)
                                 if lim else None))
        return watches
    watches, seen = [], set()
    for spec, limit in wanted:
        name = host.cg.resolve(spec, missing_ok=wait_for_missing)
        if name in seen:
            raise ConfigError(f"cgroup {name} is given twice")
        seen.add(name)
        try:
            cid = host.cg.cgroup_id(name)
        except FileNotFoundError:
            # Not there yet: it cannot hold init or beanwatch (both are somewhere); the guard
            # runs again before every action, once the cgroup exists.
            watches.append(Watch(name, 0, limit))
            continue
        except OSError as e:
            raise ConfigError(f"cannot open cgroup {name}: {e.strerror}") from None
        if limit.action is not Action.REPORT:
            try:
                guard(host.cg, name, cid, host.own_cgroup, host.init_cgroup)
            except ActionRefused as e:
                raise ConfigError(f"action {limit.action.value} on {name}: {e}") from None
        if limit.barrier is not None and limit.barrier_action.kind in ("signal", "throttle"):
            try:
                guard(host.cg, name, cid, host.own_cgroup, host.init_cgroup)
            except ActionRefused as e:
                raise ConfigError(f"barrier action {limit.barrier_action} on {name}: "
                                  f"{e}") from None
            if limit.barrier_action.kind == "throttle" and not host.cg.has_memory_high(name):
                raise ConfigError(f"barrier action throttle on {name}: it has no memory.high "
                                  "(cgroup2 with the memory controller enabled in its "
                                  "parent's cgroup.subtree_control)")
        watches.append(Watch(name, cid, limit))
    return watches


def refusal_problem() -> str | None:
    """Why --vm-limit cannot be enforced here (None: it can): probed, no compiler."""
    from ..kernel.loader import refusal_problem as probe
    return probe()


def resolve_vm_limits(host: Host, specs, file_config=None) -> list:
    """--vm-limit specs and the config's vm_limit entries to (cgroup name, VmLimit); a
    cgroup given twice, or vm limits that nest, are refused."""
    from ..core.config import VmLimit, check_vm_limits_disjoint
    wanted = [(s.cgroup, VmLimit(s.limit, s.barrier)) for s in specs]
    if file_config is not None:
        wanted += file_config.vm_limits()
    out, seen = [], set()
    for spec, limit in wanted:
        name = host.cg.resolve(spec, missing_ok=True)
        if name in seen:
            raise ConfigError(f"cgroup {name} has two vm limits")
        seen.add(name)
        out.append((name, limit))
    check_vm_limits_disjoint(seen)
    return out


def with_vm_watches(host: Host, watches, vm_limits) -> list[Watch]:
    """The watches, plus one without a limit for each vm-limited cgroup not watched yet:
    its refusals count toward its failcnt and show in its records and metrics."""
    have = {w.name for w in watches}
    out = list(watches)
    for name, _ in vm_limits:
        if name not in have:
            try:
                cid = host.cg.cgroup_id(name)
            except OSError:
                cid = 0
            out.append(Watch(name, cid, None))
    return out


def all_cgroups(host: Host, cgroups=()) -> list[Watch]:
    """Watches without limits: the cgroups named (and their descendants), else all of them."""
    if cgroups:
        names = [host.cg.resolve(c) for c in cgroups]
        return [Watch(n, host.cg.cgroup_id(n), None) for n in dict.fromkeys(names)]
    return [Watch(n, cid, None) for cid, n in sorted(host.cg.walk().items(), key=lambda kv: kv[1])]


def terminal_width(out) -> int | None:
    """The terminal's width where out is one (the table is fitted to it), else None (a
    pipe or a file: nothing is cut)."""
    import shutil
    try:
        return shutil.get_terminal_size().columns if out.isatty() else None
    except (AttributeError, ValueError, OSError):
        return None


class TableSink:
    """Collects snapshot records and redraws the table once per round; logs the rest.

    On a terminal the screen is redrawn, as `top` does: the table, then an events area
    with the latest EVENTS_SHOWN event lines (mode switches, checks, barrier and limit,
    actions), so that they stay in view; they also go to stderr when stderr is not that
    terminal (2>file). Elsewhere (a pipe, a file) each table is appended and the events go
    to stderr, one line each."""

    EVENTS_SHOWN = 10

    def __init__(self, n_accounts, out=sys.stdout, err=sys.stderr):
        import collections
        self.n = n_accounts   # a callable: the number of accounts changes on reload
        self.out = out
        self.err = err
        self.batch: list[dict] = []
        self.clear = out.isatty()
        self.width = terminal_width(out)
        self.events = collections.deque(maxlen=self.EVENTS_SHOWN)
        self.last_table = ""

    def __call__(self, rec: dict) -> None:
        if rec["event"] != "snapshot":
            if not self.clear:
                render.message(render.describe(rec))
                return
            stamp = time.strftime("%H:%M:%S", time.localtime(rec["ts"]))
            self.events.append(f"{stamp} {render.describe(rec)}")
            if not _isatty(self.err):
                render.message(render.describe(rec))
            self.draw()
            return
        self.batch.append(rec)
        if len(self.batch) >= self.n():
            self.last_table = render.table(self.batch, self.width)
            self.batch = []
            if self.clear:
                self.draw()
            else:
                self.out.write(self.last_table + "\n\n")
                self.out.flush()

    def draw(self) -> None:
        """The whole screen: the table, then the events area."""
        lines = [self.last_table, "", f"recent events ({len(self.events)})"]
        width = self.width or 79
        lines += [line[:width] for line in self.events]
        self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
        self.out.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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


def read_pid_max(path: str = "/proc/sys/kernel/pid_max") -> int | None:
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def quiet_collector() -> None:
    """Before the loop: everything start-up made (bcc, the modules, the probes' tables:
    ~39,000 objects) is collected once and frozen out of the cyclic collector's reach. A
    full collection of them took ~12 ms here (0.02 ms after), a stall at any allocation of
    the loop that a crossing would wait behind. Garbage is still freed by reference counts;
    what the loop makes later is still collected."""
    gc.collect()
    gc.freeze()


def build_session(host: Host, watches, sink, options: Options = Options(),
                  on_growth=None) -> Session:
    """on_growth takes the kernel's EV_GROW* events (`trace`); the session the others."""
    from ..host.actions import Actor
    from ..host.hooks import HookRunner, reap_hook_cgroups
    from ..host.netlink import PeakReader
    from ..host.state import DEFAULT_STATE_DIR, FrozenLedger, ThrottleLedger
    from ..kernel.loader import ProbeOptions, Probes
    o = options
    holder = {}
    from ..kernel.loader import map_sizes
    procs, leaves = map_sizes(read_pid_max(), host.cg.count(), o.max_procs, o.max_leaves)
    growth = wire.GROWTH_KINDS

    def on_event(ev):   # per event: thousands a second under a tenant's churn
        if ev[0] in growth:
            if on_growth is not None:
                on_growth(ev)
            return
        holder["s"].on_event(ev)

    probes = Probes(on_event,
                    ProbeOptions(ring_pages=o.ringbuf_pages, vm_hook=o.vm_hook,
                                 max_procs=procs, max_leaves=leaves,
                                 vm_limits=bool(o.vm_limits), exact_vm=on_growth is not None))
    actor = Actor(host.cg, host.own_cgroup, host.init_cgroup, procfs=host.procfs,
                  use_cgroup_kill=(o.kill_via == "auto"))
    hooks = None
    if o.on_action or o.on_exceed:
        # each hook run in a cgroup of its own under the cgroup2 mount, killed whole
        hooks = HookRunner(o.on_action, o.on_exceed, o.hook_timeout, cgroup_mount=host.cg.root,
                           on_note=render.message)
    for path in reap_hook_cgroups(host.cg.root):
        render.message(f"killed what the hook of a beanwatch that died left in {path}")
    session = Session(watches, host.cg, host.procfs, probes, actor, sink, interval=o.interval,
                      keep_frozen=o.keep_frozen, taskstats=PeakReader(),
                      ledger=FrozenLedger(o.state_dir or DEFAULT_STATE_DIR), hooks=hooks,
                      memory_max=o.memory_max, vm_limits=o.vm_limits,
                      throttle_ledger=ThrottleLedger(o.state_dir or DEFAULT_STATE_DIR))
    holder["s"] = session
    return session


def status_line(session) -> str:
    """One short line for `systemctl status` (sd_notify STATUS=)."""
    accounts = list(session.accounts)
    slow = sum(1 for a in accounts if a.mode.value == "slow")
    acted = sum(a.actions for a in accounts)
    line = f"watching {len(accounts)} cgroup(s), {slow} slow, {acted} action(s)"
    errors = session.loop_errors + getattr(session.probes, "callback_errors", 0)
    if errors:
        line += f", {errors} error(s)"
    return line


STATUS_EVERY = 5.0   # seconds between two STATUS= updates (only when the line changed)


def output_counters(journal) -> list[tuple[str, str, float]]:
    """Counters of the outputs, for the metrics: (name, help, value)."""
    if journal is None:
        return []
    return [("beanwatch_journal_dropped",
             "Records the systemd journal could not take (absent, or behind past the queue).",
             journal.dropped),
            ("beanwatch_journal_truncated",
             "Records sent to the journal with their pid list cut to fit one datagram.",
             journal.truncated)]


def run_watch(host: Host, watches, options: Options, reload=None, signals=None,
              notify=None) -> int:
    """`watch`: the session until a signal or the duration; reload() gives fresh watches
    on SIGHUP (None: there is no config to reload). Returns the exit code.

    signals: the handlers the CLI installed first thing (else installed here). notify: the
    channel to systemd (host/sdnotify; from $NOTIFY_SOCKET by default, a no-op without):
    READY=1 once the probes are attached and the first reconcile is done, RELOADING=1 then
    READY=1 around a reload, WATCHDOG=1 from the loop at half $WATCHDOG_USEC, STOPPING=1 at
    the end, STATUS= with a one-line summary."""
    from ..host.sdnotify import Notifier
    from ..host.selfguard import protect_self
    signals = signals or Signals()
    notify = notify or Notifier.from_environ()
    holder = {}
    sink = json_sink if options.as_json else TableSink(lambda: len(holder["s"].accounts))
    journal = None
    if options.journal:
        from ..output.journal import JournalSink
        journal, to_output = JournalSink(), sink
        if problem := journal.problem():
            render.message(f"--journal: {problem}; records for it are dropped and counted")

        def sink(rec):
            to_output(rec)
            journal(rec)
    session = build_session(host, watches, sink, options)
    holder["s"] = session
    last_status = {"at": float("-inf"), "line": ""}

    def on_hup():
        if not signals.take_hup():
            return
        if reload is None:
            render.message("SIGHUP: no --config to reload")
            return
        notify.reloading("reloading the config")
        try:
            fresh = reload()
        except BeanwatchError as e:
            render.message(f"reload refused, keeping the running config: {e}")
            sink(record("reload", time.time(), None, ok=False, detail=str(e)))
            notify.ready("reload refused; " + status_line(session))
            return
        session.apply_watches(fresh)
        render.message(f"reloaded: watching {len(fresh)} cgroup(s)")
        sink(record("reload", time.time(), None, ok=True, detail=f"{len(fresh)} cgroup(s)"))
        notify.ready(status_line(session))

    def on_loop():
        notify.feed()        # WATCHDOG=1: only the loop feeds it, so a stuck loop is seen
        on_hup()
        if journal is not None:
            journal.flush()  # what journald could not take at once, never waited for
        now = time.monotonic()
        if notify.enabled and now - last_status["at"] >= STATUS_EVERY:
            line = status_line(session)
            if line != last_status["line"]:
                notify.status(line)
                last_status["line"] = line
            last_status["at"] = now

    server = None
    try:
        session.start()
        if options.metrics_addr is not None:
            from ..output.metrics import serve
            server = serve(session, options.metrics_addr, extra=lambda: output_counters(journal))
            render.message(f"metrics on http://{server.address}/metrics")
        for note in protect_self():
            render.message(note)
        if not session.probes.follows_rss:
            render.message("kmem:rss_stat and exceptions:page_fault_user are missing: slow mode "
                           "relies on periodic exact checks every --interval")
        render.message(f"watching {len(session.accounts)} cgroup(s) "
                       f"(address space via {session.probes.vm_hook}); Ctrl-C to stop")
        last_status["line"] = status_line(session)
        last_status["at"] = time.monotonic()
        notify.ready(last_status["line"])
        notify.watchdog()
        quiet_collector()
        session.run(options.duration, signals, on_loop=on_loop)
    except BeanwatchError as e:
        render.message(str(e))
        return 1
    finally:
        notify.stopping("stopping: detaching the probes, thawing what was frozen")
        if server is not None:
            server.shutdown()
        for name in session.stop():
            render.message(f"thawed {name}")
        notify.close()
    if session.loop_errors:
        render.message(f"{session.loop_errors} internal error(s) were logged during the session")
    if journal is not None:
        journal.flush()
        if journal.dropped or journal.queue:
            render.message(f"{journal.dropped + len(journal.queue)} record(s) could not be sent "
                           "to the systemd journal")
        journal.close()
    return 0


def run_top(host: Host, watches, interval: float) -> int:
    from ..output.top import run_top as top
    signals = Signals()
    # no config to reload: a hang-up is the terminal gone, and ends top
    return top(lambda sink: build_session(host, watches, sink, Options(interval=interval)),
               lambda: signals() or signals.hup)


# the session's records that `verify` passes on (its own are "verify" and "violation")
VERIFY_SHOWS = frozenset({"error", "lost"})


def run_verify(host: Host, watches, duration: float, interval: float, as_json: bool) -> int:
    """`verify`: the live accounting checked against /proc; 1 on any violation, and on any
    round that raised (its sample lost)."""
    from .verify import Verifier

    def sink(rec):
        if as_json:
            json_sink(rec)
        elif rec["event"] == "violation":
            render.message(render.describe_violation(rec))

    def session_sink(rec):
        # the session's own records are not verify's output, save what says it went blind
        # or failed: a round that raised (its tick, and so verify's sample, lost) or events
        # lost. Dropped, a verify that sampled nothing looked like one that saw no process.
        if rec["event"] in VERIFY_SHOWS:
            if as_json:
                json_sink(rec)
            else:
                render.message(render.describe(rec))

    stop = Signals()
    session = build_session(host, watches, session_sink, Options(interval=interval))
    verifier = Verifier(session, sink)
    try:
        session.start()
        render.message(f"verifying {len(watches)} cgroup(s) for {duration:g}s")
        quiet_collector()
        session.run(duration, stop, on_tick=verifier)
    except BeanwatchError as e:
        render.message(str(e))
        return 1
    finally:
        session.stop()
    if not as_json:
        print(render.verify_table(verifier.tallies))
    if stop.signal is not None:
        render.message(f"stopped by {signal.Signals(stop.signal).name} before "
                       f"{duration:g}s were up")
    if session.loop_errors:
        # a round that raised lost its sample: what was not looked at is not verified
        render.message(f"{session.loop_errors} internal error(s) during the session: "
                       "samples were lost")
    return 1 if verifier.violations or session.loop_errors else 0


def trace_watches(host: Host, limits, cgroups=()) -> tuple[list[Watch], list[str]]:
    """`trace`'s accounts, and the --cgroup names resolved. The accounts: each --limit
    (report only, its barrier too), else every cgroup with its memory.max (report only);
    plus each --cgroup not limited, without a limit, so that what it covers is known. A
    --limit outside every --cgroup is refused: nothing about it would be shown."""
    # adaptive as watch's default, so that limits from memory.max equal the template's
    # (else each would show as changed at the first walk)
    watches = resolve_watches(host, limits, Action.REPORT, None, adaptive=True)
    names = list(dict.fromkeys(host.cg.resolve(c) for c in cgroups))
    if names and limits:
        for w in watches:
            if not set(host.cg.ancestors_or_self(w.name)) & set(names):
                raise ConfigError(f"--limit {w.name} is outside every --cgroup traced")
    have = {w.name for w in watches}
    for n in names:
        if n not in have:
            watches.append(Watch(n, host.cg.cgroup_id(n), None))
    return watches, names


def run_trace(host: Host, watches, names, min_bytes: int, duration: float | None,
              as_json: bool, interval: float = 1.0, rss_min: int = 1 << 20,
              memory_max: Limit | None = None) -> int:
    """`trace`: one line (or JSON record) per change of a process's address space of at
    least min_bytes, in the cgroups named (names, resolved: they and their descendants),
    else in every one. The session runs with the watches' limits (report only: trace never
    freezes, kills, throttles or refuses) and, with memory_max, limits from memory.max
    followed live: while a traced cgroup is in slow mode, each interval tells which of its
    processes grew resident by rss_min or more (`rss`), and its switches (`mode`)."""
    from .trace import Tracer

    holder = {}
    stop = Signals()
    # text: records before the header (the first reconcile's mode switches) wait for it
    early = None if as_json else []

    def sink(rec):
        if early is not None:
            early.append(rec)
        elif as_json:
            json_sink(rec)
        else:
            print(render.trace_line(rec), flush=True)

    def session_sink(rec):   # the accounting's own records: losses said, switches traced
        if rec["event"] == "lost":
            render.message(render.describe(rec))
        elif "t" in holder:
            holder["t"].on_record(rec)

    session = build_session(host, watches, session_sink,
                            Options(interval=interval, memory_max=memory_max),
                            on_growth=lambda ev: holder["t"].on_growth(ev))
    tracer = Tracer(session, sink, max(1, to_pages(min_bytes)), names=frozenset(names),
                    rss_min=rss_min)
    holder["t"] = tracer
    session.on_measured = tracer.on_measured
    try:
        session.start()
        session.probes.set_trace_min(tracer.min_pages)
        what = ", ".join(names) if names else "every cgroup"
        limited = sum(1 for a in session.accounts if a.limit is not None)
        render.message(f"tracing address-space growth of {format_size(min_bytes)} or more "
                       f"in {what}" + (f" for {duration:g}s" if duration else "")
                       + f" (address space via {session.probes.vm_hook}; Ctrl-C stops); "
                       f"resident growth of {format_size(rss_min)} or more per {interval:g}s "
                       f"while slow ({limited} limit(s)"
                       + (", from memory.max" if memory_max is not None else "") + ")")
        if not as_json:
            print(render.trace_header(), flush=True)
        pending, early = early or [], None
        for rec in pending:
            sink(rec)
        # no config to reload: a hang-up is the terminal gone, and ends the trace
        quiet_collector()
        session.run(duration, lambda: stop() or stop.hup, on_loop=tracer.flush,
                    on_tick=tracer.tick)
        tracer.flush()
    except BeanwatchError as e:
        render.message(str(e))
        return 1
    finally:
        session.stop()
    return 0


def status_records(host: Host, watches) -> list[dict]:
    """`status`: one-shot accounting from /proc, no BPF (model.Account.measured_once: a
    cgroup above its barrier or limit counts one failure)."""
    records = []
    now = time.time()
    for w in watches:
        vm, _ = measure(host.cg, host.procfs, w.name)
        usage = measure_usage(host.cg, host.procfs, w.name, w.limit, now)
        # the precise figure where the RSS sum is over, else the RSS sum
        acc = Account.measured_once(w.name, w.cgroup_id, w.limit, vm, usage.figure)
        acc.rss, acc.pss, acc.exact_ts = usage.rss, usage.pss, now
        records.append(account_record("status", acc, now, over_limit=acc.over_limit))
    return records


STATUS_OVER_LIMIT = 3   # `status` exit code when a cgroup is above its limit (2: usage errors)


def status_exit_code(records: list[dict]) -> int:
    return STATUS_OVER_LIMIT if any(r.get("over_limit") for r in records) else 0


def run_check(as_json: bool) -> int:
    """`check`: what this host supports; 1 with the reason where beanwatch cannot run."""
    from .hostcheck import run_checks, summary
    results = run_checks()
    facts = summary(results)
    for r in results:
        if as_json:
            print(render.json_line(record("host_check", time.time(), None, check=r.name,
                                          ok=r.ok, required=r.required, detail=r.detail)))
        else:
            mark = "ok" if r.ok else ("MISSING" if r.required else "no")
            print(f"{mark:>8}  {r.name}: {r.detail}")
    if as_json:
        print(render.json_line(record("host_summary", time.time(), None, **facts)))
    else:
        if facts["vm_hook"]:
            print(f"{'hook':>8}  watch follows address-space changes via {facts['vm_hook']}")
        for gap in facts["not_covered"]:
            print(f"{'gap':>8}  not covered on this kernel: {gap}")
    failed = [r.name for r in results if r.required and not r.ok]
    if failed:
        render.message("cannot run here: " + ", ".join(failed))
        return 1
    return 0
