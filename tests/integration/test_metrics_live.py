"""Metrics of a real `watch` over real cgroups, one of them named with bytes that are not
UTF-8 (any tenant with a delegated subtree can make one)."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cgroup_name_that_is_not_utf8_is_scraped_escaped(cgroups, watcher):
    odd = os.path.join(cgroups.path(cgroups.prefix).encode(), b"bad\xff\xfename")
    os.mkdir(odd)
    port = free_port()
    w = watcher("--metrics", str(port), "--interval", "0.2")   # every cgroup, report only
    w.started()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        body = r.read().decode("utf-8")
    assert f'cgroup="{cgroups.prefix}/bad\\\\xff\\\\xfename"' in body
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert e.value.code == 404
    assert w.proc.poll() is None
    assert w.stop() == 0
