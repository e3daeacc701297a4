"""sd_notify: messages received by real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from observer.host.sdnotify import Notifier, socket_address, watchdog_usec


def parse(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    yield path, server
    server.close()


def test_socket_address_forms():
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract/name") == b"\0abstract/name"
    for unsupported in (None, "", "@", "relative/path", "vsock:2:1234"):
        assert socket_address(unsupported) is None


def test_unset_is_a_noop():
    env = {}
    n = Notifier.from_environ(env)
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.feed() is False
    assert n.watchdog_interval is None
    assert (n.sent, n.dropped) == (0, 0)


def test_lifecycle_messages_reach_a_path_socket(listener):
    path, server = listener
    env = {"NOTIFY_SOCKET": path}
    n = Notifier.from_environ(env)
    assert env == {}  # children (hooks) must not inherit the socket
    assert n.ready(status="watching 3 cgroup(s)")
    assert parse(server.recv(4096)) == {"READY": "1", "STATUS": "watching 3 cgroup(s)"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    msg = parse(server.recv(4096))
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert n.stopping()
    assert parse(server.recv(4096)) == {"STOPPING": "1"}
    assert n.status("two\nlines")
    assert parse(server.recv(4096)) == {"STATUS": "two lines"}
    assert n.sent == 4


def test_abstract_namespace_address():
    name = f"bw-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(2)
    try:
        n = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert parse(server.recv(4096)) == {"READY": "1"}
    finally:
        server.close()


def test_no_listener_drops_without_raising(tmp_path):
    n = Notifier(str(tmp_path / "absent.sock"))
    assert n.ready() is False
    assert n.dropped == 1


def test_a_full_socket_never_blocks(listener):
    path, server = listener
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)   # the kernel's minimum
    n = Notifier(path)
    start = time.monotonic()
    results = [n.status("x" * 512) for _ in range(2000)]
    assert time.monotonic() - start < 5
    assert results[0] is True
    assert False in results            # the queue filled up ...
    assert n.dropped == results.count(False) and n.sent == results.count(True)
    while True:                        # ... and what was queued is intact
        try:
            server.settimeout(0)
            assert parse(server.recv(4096)) == {"STATUS": "x" * 512}
        except BlockingIOError:
            break


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30000000),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 30000000),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),    # meant for another process
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_usec(env, expected):
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    assert watchdog_usec(env, os.getpid()) == expected


def test_watchdog_is_fed_at_half_the_timeout(listener):
    path, server = listener
    now = [100.0]
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier(socket_address(env["NOTIFY_SOCKET"]), watchdog_usec(env, os.getpid()),
                 clock=lambda: now[0])
    assert n.watchdog_interval == 2.0
    pings = []
    for _ in range(51):                 # a loop turning every 0.2 s for 10 s
        pings.append(n.feed())
        now[0] += 0.2
    assert pings.count(True) == 5 + 1   # at 0, then every 2 s
    assert pings[0] is True and pings[1] is False
    for _ in range(6):
        assert parse(server.recv(4096)) == {"WATCHDOG": "1"}


def test_watchdog_off_without_timeout(listener):
    path, server = listener
    n = Notifier(path, None)
    assert n.watchdog_interval is None
    assert n.feed() is False
    assert n.extend_watchdog(60_000_000) is False


def test_extend_watchdog(listener):
    path, server = listener
    n = Notifier(path, 30_000_000)
    assert n.extend_watchdog(10_000_000) is False       # never shorter
    assert n.extend_watchdog(150_000_000) is True
    assert parse(server.recv(4096)) == {"WATCHDOG_USEC": "150000000"}
    assert n.watchdog_interval == 75.0
