"""The operator's world: a real Prometheus scraping beanwatch, and `top` driven in tmux."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import no_programs_left

MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout=5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def test_plain_scrape_and_a_real_prometheus(cgroups, watcher, tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not installed (scripts/setup-host.sh installs it)")
    cg = cgroups.make("scraped")
    port = free_port()
    w = watcher("--limit", f"{cg}=256M", "--interval", "0.2", "--metrics", f"127.0.0.1:{port}")
    w.started()
    p = cgroups.workload(cg, "reserve:512M", "touch:16M", "hold")
    w.wait_for(lambda r: r["event"] == "check" and r["cgroup"] == cg
               and r["estimate_bytes"] > 512 * MiB, what="slow-mode check of the reservation")
    body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert f'beanwatch_cgroup_limit_bytes{{cgroup="{cg}",name="{cg}"}} 2.68435456e+08' in body
    assert f'beanwatch_cgroup_slow_mode{{cgroup="{cg}",name="{cg}"}} 1.0' in body
    assert "beanwatch_events_lost_total 0.0" in body

    prom_port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global:\n  scrape_interval: 1s\n"
                    "scrape_configs:\n  - job_name: beanwatch\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{port}']\n")
    prom = subprocess.Popen([prometheus, f"--config.file={conf}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote(f'beanwatch_cgroup_slow_mode{{cgroup="{cg}"}}')
        deadline = time.time() + 40
        result = []
        while time.time() < deadline and not result:
            try:
                reply = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}"))
                result = reply["data"]["result"]
            except OSError:
                pass
            time.sleep(0.5)
        assert result, "Prometheus never got the series"
        assert result[0]["metric"]["job"] == "beanwatch" and result[0]["value"][1] == "1"
        up = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?query=up"))
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
    assert p.poll() is None
    assert w.stop() == 0


def tmux(*args) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def test_top_in_tmux(cgroups, tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup-host.sh installs it)")
    near = cgroups.make("near")
    far = cgroups.make("far")
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable))
    session = f"bwtop{os.getpid()}"
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30",
         f"{exe} top --interval 0.3 --limit {near}=200M --limit {far}=4G; "
         f"echo EXIT=$?; sleep 30")
    try:
        pn = cgroups.workload(near, "touch:64M", "hold")
        pf = cgroups.workload(far, "touch:64M", "hold")

        def screen():
            return tmux("capture-pane", "-p", "-t", session)

        deadline = time.time() + 40
        text = screen()
        while time.time() < deadline and not ("near" in text and "far" in text
                                              and "sort: closeness" in text):
            time.sleep(0.3)
            text = screen()
        assert "sort: closeness" in text, text
        rows = [line for line in text.splitlines() if "/near" in line or "/far" in line]
        assert "/near" in rows[0] and "/far" in rows[1], text   # closest to its limit first
        tmux("send-keys", "-t", session, "n")
        time.sleep(1.0)
        text = screen()
        assert "sort: name" in text
        rows = [line for line in text.splitlines() if "/near" in line or "/far" in line]
        assert "/far" in rows[0], text
        tmux("send-keys", "-t", session, "q")
        deadline = time.time() + 15
        while time.time() < deadline and "EXIT=" not in screen():
            time.sleep(0.2)
        assert "EXIT=0" in screen()
        assert no_programs_left()
        assert pn.poll() is None and pf.poll() is None   # top never acts
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_top_drill_down_in_tmux(cgroups):
    """Enter on a cgroup lists its processes; repeated exact checks of a slow cgroup are
    one events line with a count; use% is a bar."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/setup-host.sh installs it)")
    slow = cgroups.make("slow")
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable))
    session = f"bwdrill{os.getpid()}"
    # 128 MiB reserved and 32 MiB touched by a Python process: its mappings pass 100M (slow
    # mode, an exact check every interval) while its resident memory stays under it
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30",
         f"{exe} top --interval 0.3 --limit {slow}=100M; echo EXIT=$?; sleep 30")
    try:
        p = cgroups.workload(slow, "reserve:128M", "touch:32M", "hold")

        def screen():
            return tmux("capture-pane", "-p", "-t", session)

        def wait(pred, what, timeout=40):
            deadline = time.time() + timeout
            text = screen()
            while time.time() < deadline and not pred(text):
                time.sleep(0.3)
                text = screen()
            assert pred(text), f"{what}:\n{text}"
            return text

        text = wait(lambda t: re.search(r"x\d+ checks, latest: ", t) and "/slow" in t,
                    "collapsed checks")
        row = next(line for line in text.splitlines() if "/slow" in line and " slow " in line)
        assert re.search(r"#+\.* \d+", row), row                 # the use% bar
        checks = [line for line in text.splitlines() if "exact check" in line]
        assert len(checks) == 1, text                             # one line, with its count
        tmux("send-keys", "-t", session, "Enter")
        text = wait(lambda t: "rss/s" in t, "process list")
        rows = [line.split() for line in text.splitlines()]
        mine = [r for r in rows if r and r[0] == str(p.pid)]
        assert mine and mine[0][1].startswith("python"), text
        vmsize = mine[0][2]
        assert vmsize != "-" and mine[0][3] != "-", text
        wait(lambda t: any(line.split()[:1] == [str(p.pid)] and line.split()[-1].endswith("/s")
                           for line in t.splitlines()), "growth per second")
        tmux("send-keys", "-t", session, "Escape")
        wait(lambda t: "sort: closeness" in t, "back to the cgroups")
        tmux("send-keys", "-t", session, "q")
        wait(lambda t: "EXIT=" in t, "exit", timeout=15)
        assert "EXIT=0" in screen()
        assert no_programs_left()
        assert p.poll() is None   # top never acts
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_hooks_veto_then_report_on_action(cgroups, watcher, tmp_path):
    cg = cgroups.make("hooked")
    seen = tmp_path / "seen"
    exceed = tmp_path / "exceed.sh"
    exceed.write_text(f"#!/bin/sh\nenv > {seen}\nexit 1\n")
    exceed.chmod(0o755)
    w = watcher("--limit", f"{cg}=48M", "--action", "kill", "--interval", "0.2",
                "--on-exceed", str(exceed))
    w.started()
    p = cgroups.workload(cg, "touch:96M", "hold")
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="vetoed action")
    assert act["vetoed"] and not act["ok"]
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert env["BEANWATCH_CGROUP"] == cg and env["BEANWATCH_ACTION"] == "kill"
    assert str(p.pid) in env["BEANWATCH_PIDS"].split()
    assert int(env["BEANWATCH_EXACT_BYTES"]) > 48 * MiB
    assert not any(k for k in env if k not in ("PATH", "PWD", "SHLVL", "_")
                   and not k.startswith("BEANWATCH_")), env
    time.sleep(0.5)
    assert p.poll() is None, "vetoed, yet killed"
    assert cgroups.events(cg)["frozen"] == 0, "left frozen after the veto"
    assert w.stop() == 0
