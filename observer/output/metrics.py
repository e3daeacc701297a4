"""Prometheus text exposition of a live session (the only prometheus_client importer)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .. import __version__
from ..kernel import wire
from ..core.errors import BeanwatchError
from ..core.names import display_name
from ..core.sizes import PAGE_SIZE


class MetricsError(BeanwatchError):
    """The metrics address is invalid or cannot be bound."""


DEFAULT_HOST = "127.0.0.1"   # metrics name every cgroup of the host: loopback unless asked


def parse_address(text: str) -> tuple[str, int]:
    """'127.0.0.1:9638', '[::1]:9638', '0.0.0.0:9638' (every address, said explicitly),
    '9638' or ':9638' (loopback) -> (host, port); port 0 takes any free port (the server
    tells which)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise MetricsError(f"bad metrics address {text!r}: expected [HOST:]PORT")
    if host.startswith("[") != host.endswith("]"):
        raise MetricsError(f"bad metrics address {text!r}")
    host = host.strip("[]") or DEFAULT_HOST
    if any(c in host for c in "\n\0/ "):
        raise MetricsError(f"bad metrics address {text!r}")
    return host, int(port)


def label(value: str) -> str:
    """A label value Prometheus can carry: bytes that are not UTF-8 (a cgroup name may hold
    any) written as \\xNN, so that one odd name never fails the whole scrape."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
        exact = gauge("beanwatch_cgroup_exact_bytes", "Usage at the last exact check (slow mode): summed PSS where the RSS sum was over, else the RSS sum.")
        limit = gauge("beanwatch_cgroup_limit_bytes", "Limit on the cgroup and its descendants.")
        barrier = gauge("beanwatch_cgroup_barrier_bytes", "Warning level (barrier).")
        slow = gauge("beanwatch_cgroup_slow_mode", "1 while exact usage is followed (slow mode).")
        held = gauge("beanwatch_cgroup_held_bytes",
                     "Usage measured exactly at the last check (absent while not measured: fast mode).")
        maxheld = gauge("beanwatch_cgroup_maxheld_bytes",
                        "Highest usage measured exactly (never an estimate).")
        fails = counter("beanwatch_cgroup_failures", "Exact checks above the barrier or limit (failcnt).")
        switches = counter("beanwatch_cgroup_mode_switches", "Switches between fast and slow mode.")
        checks = counter("beanwatch_cgroup_exact_checks", "Exact measurements from /proc.")
        actions = CounterMetricFamily("beanwatch_cgroup_actions", "Actions taken.",
                                      labels=["cgroup", "name", "action"])
        barrier_actions = CounterMetricFamily(
            "beanwatch_cgroup_barrier_actions", "Barrier actions taken (signal, throttle, hook).",
            labels=["cgroup", "name", "action"])
        oom = counter("beanwatch_cgroup_oom_kills",
                      "Processes the kernel's OOM killer killed in the cgroup or its descendants.")
        oom_kills = getattr(s, "oom_kills", {})
        taken = getattr(getattr(s, "barrier", None), "taken", {})
        for acc in accounts:
            lv = [label(acc.name), label(display_name(acc.name))]
            est.add_metric(lv, acc.estimate)
            if acc.held is not None:
                held.add_metric(lv, acc.held)
            if acc.maxheld is not None:
                maxheld.add_metric(lv, acc.maxheld)
            if acc.exact is not None:
                exact.add_metric(lv, acc.exact)
            if acc.limit is not None:
                limit.add_metric(lv, acc.limit.limit)
                if acc.limit.barrier is not None:
                    barrier.add_metric(lv, acc.limit.barrier)
                actions.add_metric(lv + [acc.limit.action.value], acc.actions)
                if acc.limit.barrier is not None and acc.limit.barrier_action.kind != "report":
                    barrier_actions.add_metric(lv + [acc.limit.barrier_action.kind],
                                               taken.get(acc.name, 0))
            slow.add_metric(lv, 1 if acc.mode.value == "slow" else 0)
            fails.add_metric(lv, acc.failcnt)
            switches.add_metric(lv, acc.switches)
            checks.add_metric(lv, acc.checks)
            oom.add_metric(lv, oom_kills.get(acc.name, 0))
        yield from (est, exact, limit, barrier, slow, held, maxheld, fails, switches, checks, actions,
                    barrier_actions, oom)
        vm = getattr(s, "vm", None)   # --vm-limit (app/vmlimits.VmLimits)
        if vm:
            vm_limit = gauge("beanwatch_cgroup_vm_limit_bytes",
                             "--vm-limit: mapped-total growth past this fails with ENOMEM.")
            vm_mapped = gauge("beanwatch_cgroup_vm_mapped_bytes",
                              "--vm-limit: the mapped total the kernel refuses on.")
            refusals = counter("beanwatch_cgroup_vm_refusals",
                               "--vm-limit: allocations refused with ENOMEM (also in failcnt).")
            over = counter("beanwatch_cgroup_vm_over_barrier",
                           "--vm-limit: growths let past the vm barrier (also in failcnt).")
            for w in list(vm.watches):
                lv = [label(w.name), label(display_name(w.name))]
                vm_limit.add_metric(lv, w.limit.limit)
                vm_mapped.add_metric(lv, max(w.total, 0) * PAGE_SIZE)
                refusals.add_metric(lv, w.refused)
                over.add_metric(lv, w.over_barrier)
            yield from (vm_limit, vm_mapped, refusals, over)

        stats = s.last_stats
        lost = CounterMetricFamily("beanwatch_events_lost", "Wake-ups the kernel could not send (ring buffer full).")
        lost.add_metric([], stats[wire.STAT_RINGBUF_FULL])
        yield lost
        unacc = CounterMetricFamily("beanwatch_processes_unaccounted",
                                    "Processes or cgroups the kernel side could not account (maps full).")
        unacc.add_metric([], stats[wire.STAT_PROCS_FULL] + stats[wire.STAT_LEAVES_FULL])
        yield unacc
        oom_all = CounterMetricFamily("beanwatch_oom_kills",
                                      "OOM victims the kernel marked, in any cgroup (watched or not).")
        oom_all.add_metric([], stats[wire.STAT_OOM_KILLS] if len(stats) > wire.STAT_OOM_KILLS else 0)
        yield oom_all
        faults = CounterMetricFamily("beanwatch_faults_followed", "Page faults followed in slow mode.")
        faults.add_metric([], stats[wire.STAT_FAULTS])
        yield faults
        throttled = CounterMetricFamily(
            "beanwatch_events_throttled",
            "Wake-ups over a cgroup's rate limit (token bucket): not handled one by one, the "
            "cgroup resynchronised at the next tick instead.")
        throttled.add_metric([], s.events_throttled)
        yield throttled
        quiet = CounterMetricFamily(
            "beanwatch_records_suppressed",
            "mode and check records of a cgroup over their rate, left out (counted in the next).")
        quiet.add_metric([], s.records_suppressed)
        yield quiet
        full = CounterMetricFamily(
            "beanwatch_map_full",
            "Kernel map entries that could not be made or bounds not written (maps full): "
            "every limited cgroup is then measured exactly every interval.")
        full.add_metric([], s.map_full)
        yield full
        located = CounterMetricFamily(
            "beanwatch_cgroups_located",
            "Cgroups first seen in an event between walks of the tree, placed at once from "
            "their id (covered by their watched ancestors from that event on).")
        located.add_metric([], s.located)
        yield located
        deferred = CounterMetricFamily(
            "beanwatch_cgroups_locate_deferred",
            "Cgroups first seen in an event left to the next walk of the tree instead (over "
            "the rate of LOCATE_RATE a second, or not locatable from their id here).")
        deferred.add_metric([], s.locate_deferred)
        yield deferred
        walks = CounterMetricFamily("beanwatch_tree_walks", "Walks of the whole cgroup tree.")
        walks.add_metric([], s.walks)
        yield walks
        skipped = CounterMetricFamily(
            "beanwatch_cgroups_skipped",
            "Cgroups a walk of the tree could not open or list (not accounted), counted once each.")
        skipped.add_metric([], s.cgroups_skipped)
        yield skipped
        unreadable = GaugeMetricFamily("beanwatch_cgroups_unreadable",
                                       "Cgroups the last walk of the tree could not read.")
        unreadable.add_metric([], len(s.skipped))
        yield unreadable
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


MAX_CONNECTIONS = 8      # scrapes served at once; more are closed at once, not queued
REQUEST_TIMEOUT = 5.0    # seconds a connection may idle in a read or a write


class MetricsServer(ThreadingHTTPServer):
    """GET /metrics and nothing else (404), at most MAX_CONNECTIONS at once, each socket
    operation bounded by REQUEST_TIMEOUT: a client that connects and stays silent, or many
    of them, cost a bounded number of threads for a bounded time."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address, registry, max_connections=MAX_CONNECTIONS,
                 timeout=REQUEST_TIMEOUT):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.slots = threading.BoundedSemaphore(max_connections)
        self.rejected = 0
        handler = type("Handler", (MetricsHandler,), {"timeout": timeout})
        super().__init__(address, handler)
        self.thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.rejected += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def shutdown(self):
        super().shutdown()
        self.server_close()


class MetricsHandler(BaseHTTPRequestHandler):
    server_version = "beanwatch"

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "only /metrics is served here")
            return
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
        try:
            body = generate_latest(self.server.registry)
        except Exception as e:  # noqa: BLE001 - a scrape error is the scraper's 500
            self.send_error(500, f"{type(e).__name__}")
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):   # no line on stderr per scrape
        pass


def serve(session, address: str, extra=None, **limits) -> MetricsServer:
    """Starts the exposition server in a daemon thread; returns the server (to shut down)."""
    host, port = parse_address(address)
    try:
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise MetricsError("--metrics needs the prometheus_client package") from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SessionCollector(session, extra))
    try:
        server = MetricsServer((host, port), registry, **limits)
    except OSError as e:
        raise MetricsError(f"cannot serve metrics on {address}: {e.strerror}") from None
    server.thread.start()
    return server
