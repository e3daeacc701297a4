"""Prometheus text exposition of a live session (the only prometheus_client importer)."""

from __future__ import annotations

from .. import __version__
from ..kernel import wire
from ..core.errors import BeanwatchError
from ..core.names import display_name


class MetricsError(BeanwatchError):
    """The metrics address is invalid or cannot be bound."""


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:9638', ':9638' (all addresses), '[::1]:9638' -> (host, port); port 0
    takes any free port (the server tells which)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsError(f"bad metrics address {text!r}: expected HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    if "\n" in host or "\0" in host:
        raise MetricsError(f"bad metrics address {text!r}")
    return host, int(port)


class SessionCollector:
    """Reads the session at scrape time: nothing is kept twice, and a scrape costs the
    session nothing between scrapes. Runs in the HTTP server's thread; it only reads."""

    def __init__(self, session, extra=None):
        self.session = session
        self.extra = extra   # () -> [(name, help, value)]: counters of the outputs

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        s = self.session
        accounts = list(s.accounts)   # a reload replaces the list; iterate a stable one
        labels = ["cgroup", "name"]

        def gauge(name, doc):
            return GaugeMetricFamily(name, doc, labels=labels)

        def counter(name, doc):
            return CounterMetricFamily(name, doc, labels=labels)

        est = gauge("beanwatch_cgroup_estimate_bytes", "Upper estimate: summed total_vm of the processes.")
        exact = gauge("beanwatch_cgroup_exact_bytes", "Summed RSS at the last exact check (slow mode).")
        limit = gauge("beanwatch_cgroup_limit_bytes", "Limit on the cgroup and its descendants.")
        barrier = gauge("beanwatch_cgroup_barrier_bytes", "Warning level (barrier).")
        slow = gauge("beanwatch_cgroup_slow_mode", "1 while exact usage is followed (slow mode).")
        held = gauge("beanwatch_cgroup_held_bytes", "Exact usage in slow mode, else the estimate.")
        fails = counter("beanwatch_cgroup_failures", "Exact checks above the barrier or limit (failcnt).")
        switches = counter("beanwatch_cgroup_mode_switches", "Switches between fast and slow mode.")
        checks = counter("beanwatch_cgroup_exact_checks", "Exact measurements from /proc.")
        actions = CounterMetricFamily("beanwatch_cgroup_actions", "Actions taken.",
                                      labels=["cgroup", "name", "action"])
        for acc in accounts:
            lv = [acc.name, display_name(acc.name)]
            est.add_metric(lv, acc.estimate)
            held.add_metric(lv, acc.held)
            if acc.exact is not None:
                exact.add_metric(lv, acc.exact)
            if acc.limit is not None:
                limit.add_metric(lv, acc.limit.limit)
                if acc.limit.barrier is not None:
                    barrier.add_metric(lv, acc.limit.barrier)
                actions.add_metric(lv + [acc.limit.action.value], acc.actions)
            slow.add_metric(lv, 1 if acc.mode.value == "slow" else 0)
            fails.add_metric(lv, acc.failcnt)
            switches.add_metric(lv, acc.switches)
            checks.add_metric(lv, acc.checks)
        yield from (est, exact, limit, barrier, slow, held, fails, switches, checks, actions)

        stats = s.last_stats
        lost = CounterMetricFamily("beanwatch_events_lost", "Wake-ups the kernel could not send (ring buffer full).")
        lost.add_metric([], stats[wire.STAT_RINGBUF_FULL])
        yield lost
        unacc = CounterMetricFamily("beanwatch_processes_unaccounted",
                                    "Processes or cgroups the kernel side could not account (maps full).")
        unacc.add_metric([], stats[wire.STAT_PROCS_FULL] + stats[wire.STAT_LEAVES_FULL])
        yield unacc
        faults = CounterMetricFamily("beanwatch_faults_followed", "Page faults followed in slow mode.")
        faults.add_metric([], stats[wire.STAT_FAULTS])
        yield faults
        errors = CounterMetricFamily("beanwatch_errors", "Callback and loop errors (logged).")
        errors.add_metric([], s.probes.callback_errors + s.loop_errors)
        yield errors
        probe = GaugeMetricFamily("beanwatch_fault_probe_attached",
                                  "1 while the page-fault program is attached (some cgroup slow).")
        probe.add_metric([], 1 if s.probes.faults_on else 0)
        yield probe
        info = GaugeMetricFamily("beanwatch_info", "Build and probe information.",
                                 labels=["version", "vm_hook"])
        info.add_metric([__version__, str(s.probes.vm_hook)], 1)
        yield info
        for name, doc, value in (self.extra() if self.extra is not None else ()):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


def serve(session, address: str, extra=None):
    """Starts the exposition server in a daemon thread; returns the server (to shut down)."""
    host, port = parse_address(address)
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise MetricsError("--metrics needs the prometheus_client package") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(session, extra))
    try:
        result = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise MetricsError(f"cannot serve metrics on {address}: {e.strerror}") from None
    return result[0] if isinstance(result, tuple) else result
