"""Prometheus exposition of a session, without a kernel: names, labels, values, HTTP."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from observer.kernel import wire
from observer.core.config import Action, Limit
from observer.output.metrics import MetricsError, SessionCollector, parse_address, serve
from observer.core.model import Account, Mode

MiB = 1 << 20


class FakeProbes:
    callback_errors = 2
    faults_on = True
    vm_hook = "mmap-lock"


class FakeSession:
    def __init__(self):
        a = Account("/job", 10, Limit(256 * MiB, 192 * MiB, Action.KILL))
        a.estimate, a.exact, a.mode, a.failcnt, a.switches, a.checks, a.actions = (
            1024 * MiB, 200 * MiB, Mode.SLOW, 3, 1, 7, 1)
        b = Account("/free", 11, None)
        b.estimate = 5 * MiB
        self.accounts = [a, b]
        self.last_stats = [0] * wire.STAT_MAX
        self.last_stats[wire.STAT_RINGBUF_FULL] = 4
        self.probes = FakeProbes()
        self.loop_errors = 1
        self.events_throttled, self.map_full, self.cgroups_skipped = 1800, 2, 3
        self.records_suppressed = 640
        self.located, self.locate_deferred, self.walks = 75, 12, 9
        self.skipped = {"/tenant/locked": "Permission denied"}


def scrape_text(session) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SessionCollector(session))
    return generate_latest(reg).decode()


def samples(text):
    """{(name, labels without 'name'): value}; every cgroup series must carry a name label."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = dict(s.labels)
            if "cgroup" in labels:
                assert labels.pop("name") is not None
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def test_exposition_names_units_and_values():
    got = samples(scrape_text(FakeSession()))
    job = (("cgroup", "/job"),)
    assert got[("beanwatch_cgroup_estimate_bytes", job)] == 1024 * MiB
    assert got[("beanwatch_cgroup_exact_bytes", job)] == 200 * MiB
    assert got[("beanwatch_cgroup_limit_bytes", job)] == 256 * MiB
    assert got[("beanwatch_cgroup_barrier_bytes", job)] == 192 * MiB
    assert got[("beanwatch_cgroup_slow_mode", job)] == 1
    assert got[("beanwatch_cgroup_failures_total", job)] == 3
    assert got[("beanwatch_cgroup_mode_switches_total", job)] == 1
    assert got[("beanwatch_cgroup_exact_checks_total", job)] == 7
    assert got[("beanwatch_cgroup_actions_total", (("action", "kill"), ("cgroup", "/job")))] == 1
    assert got[("beanwatch_events_lost_total", ())] == 4
    assert got[("beanwatch_errors_total", ())] == 3
    assert got[("beanwatch_fault_probe_attached", ())] == 1
    assert got[("beanwatch_events_throttled_total", ())] == 1800
    assert got[("beanwatch_map_full_total", ())] == 2
    assert got[("beanwatch_records_suppressed_total", ())] == 640
    assert got[("beanwatch_cgroups_skipped_total", ())] == 3
    assert got[("beanwatch_cgroups_unreadable", ())] == 1
    assert got[("beanwatch_cgroups_located_total", ())] == 75
    assert got[("beanwatch_cgroups_locate_deferred_total", ())] == 12
    assert got[("beanwatch_tree_walks_total", ())] == 9
    # a cgroup without a limit has no limit series and no exact one until measured
    free = (("cgroup", "/free"),)
    assert ("beanwatch_cgroup_limit_bytes", free) not in got
    assert ("beanwatch_cgroup_exact_bytes", free) not in got
    assert got[("beanwatch_cgroup_estimate_bytes", free)] == 5 * MiB


def test_hostile_cgroup_names_are_escaped():
    s = FakeSession()
    s.accounts[0].name = '/a"b\nc\\d'
    got = samples(scrape_text(s))
    assert got[("beanwatch_cgroup_estimate_bytes", (("cgroup", '/a"b\nc\\d'),))] == 1024 * MiB


@pytest.mark.parametrize("text", ["host:", "host:99999", "host:-1", "a:b", "", "[::1:9638",
                                  "a b:9638", "x\n:9638"])
def test_bad_addresses(text):
    with pytest.raises(MetricsError):
        parse_address(text)


def test_addresses():
    assert parse_address("127.0.0.1:9638") == ("127.0.0.1", 9638)
    # only a port: loopback; every address only when said
    assert parse_address(":9638") == ("127.0.0.1", 9638)
    assert parse_address("9638") == ("127.0.0.1", 9638)
    assert parse_address("0.0.0.0:9638") == ("0.0.0.0", 9638)
    assert parse_address("[::1]:9638") == ("::1", 9638)


def test_plain_http_scrape():
    server = serve(FakeSession(), "127.0.0.1:0")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            body = r.read().decode()
        assert 'beanwatch_cgroup_estimate_bytes{cgroup="/job",name="/job"} 1.073741824e+09' in body
    finally:
        server.shutdown()


def test_friendly_names_are_a_label():
    s = FakeSession()
    s.accounts[0].name = "/system.slice/nginx.service"
    text = scrape_text(s)
    assert 'cgroup="/system.slice/nginx.service",name="nginx.service"' in text


def test_journal_drops_are_exported():
    from observer.app.runtime import output_counters
    from observer.output.journal import JournalSink
    journal = JournalSink("/nonexistent/journal.sock")
    journal({"event": "action", "ts": 1.0, "cgroup": "/a", "pids": [1]})
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SessionCollector(FakeSession(), lambda: output_counters(journal)))
    got = samples(generate_latest(reg).decode())
    assert got[("beanwatch_journal_dropped_total", ())] == 1
    assert got[("beanwatch_journal_truncated_total", ())] == 0


def get(server, path="/metrics", timeout=5):
    return urllib.request.urlopen(f"http://{server.address}{path}", timeout=timeout)


def test_a_name_that_is_not_utf8_does_not_fail_the_scrape():
    """A cgroup made with mkdir(b"/job\\xff") reaches Python as a surrogate escape; the
    exposition is UTF-8: the byte is written \\xff, and every other series still comes."""
    s = FakeSession()
    s.accounts[0].name = os.fsdecode(b"/job\xff\xfe")
    server = serve(s, "127.0.0.1:0")
    try:
        with get(server) as r:
            assert r.status == 200
            body = r.read().decode()
    finally:
        server.shutdown()
    got = samples(body)
    assert got[("beanwatch_cgroup_estimate_bytes", (("cgroup", "/job\\xff\\xfe"),))] == 1024 * MiB
    assert got[("beanwatch_cgroup_estimate_bytes", (("cgroup", "/free"),))] == 5 * MiB


def test_only_the_metrics_path_is_served():
    server = serve(FakeSession(), "127.0.0.1:0")
    try:
        for path in ("/", "/favicon.ico", "/metricsx", "/../metrics"):
            with pytest.raises(urllib.error.HTTPError) as e:
                get(server, path)
            assert e.value.code == 404, path
        with get(server, "/metrics?name[]=x") as r:
            assert r.status == 200
    finally:
        server.shutdown()


def test_a_port_alone_binds_loopback():
    server = serve(FakeSession(), "0")
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert server.address.startswith("127.0.0.1:")
    finally:
        server.shutdown()


def test_silent_connections_are_limited_and_timed_out():
    """60 clients connect and say nothing: at most 4 threads serve them at any time, the
    others are closed at once, the silent ones are dropped after the timeout, every one
    ends, and a scrape then works."""
    before = threading.active_count()
    server = serve(FakeSession(), "127.0.0.1:0", max_connections=4, timeout=0.5)
    host, port = server.server_address[:2]
    idle = []
    try:
        for _ in range(60):
            idle.append(socket.create_connection((host, port), timeout=5))
        deadline = time.time() + 15
        for c in idle:                # the server ends each one: end of file
            c.setblocking(False)
            while True:
                assert threading.active_count() - before <= 1 + 4
                try:
                    assert c.recv(100) == b""
                    break
                except BlockingIOError:
                    assert time.time() < deadline, "a silent client was kept"
                    time.sleep(0.01)
        assert server.rejected > 0
        with get(server, timeout=2) as r:
            assert r.status == 200
    finally:
        for c in idle:
            c.close()
        server.shutdown()


def test_vm_limits_are_exported():
    from observer.app.vmlimits import VmWatch
    from observer.core.config import VmLimit
    from observer.core.sizes import PAGE_SIZE

    class Vm:
        watches = [VmWatch("/job", VmLimit(512 * MiB), 10, total=1000, refused=4, over_barrier=2)]

        def __bool__(self):
            return True
    s = FakeSession()
    assert ("beanwatch_cgroup_vm_refusals_total", (("cgroup", "/job"),)) not in samples(scrape_text(s))
    s.vm = Vm()
    got = samples(scrape_text(s))
    job = (("cgroup", "/job"),)
    assert got[("beanwatch_cgroup_vm_limit_bytes", job)] == 512 * MiB
    assert got[("beanwatch_cgroup_vm_mapped_bytes", job)] == 1000 * PAGE_SIZE
    assert got[("beanwatch_cgroup_vm_refusals_total", job)] == 4
    assert got[("beanwatch_cgroup_vm_over_barrier_total", job)] == 2
