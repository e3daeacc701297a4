"""The daemon's lifecycle with a real `watch`: signals from the first moment, and what
systemd would receive on $NOTIFY_SOCKET (READY, RELOADING, WATCHDOG, STOPPING)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import threading
import time

from conftest import our_programs

IN_OPEN = 0x20


class OpenWatch:
    """inotify on one file: returns as soon as any process opens it."""

    def __init__(self, path: str):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        assert self.libc.inotify_add_watch(self.fd, path.encode(), IN_OPEN) >= 0

    def wait(self) -> None:
        data = os.read(self.fd, 4096)          # blocks until the first open
        (_wd, mask, _cookie, _len) = struct.unpack_from("iIII", data)
        assert mask & IN_OPEN

    def close(self):
        os.close(self.fd)


def sig_caught(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_a_sighup_the_moment_watch_reads_its_config_is_handled(cgroups, watcher, tmp_path):
    """The handler is in place before the config is read, the host opened, the probes
    compiled: a SIGHUP sent as the config file is opened (a reload racing the start) is a
    reload, not the end of the daemon (systemd counts death by SIGHUP as clean: no restart)."""
    cg = cgroups.make("early-hup")
    conf = tmp_path / "beanwatch.toml"
    conf.write_text(f'[cgroup."{cg}"]\nlimit = "1G"\n')
    os.chmod(conf, 0o600)
    opened = OpenWatch(str(conf))
    try:
        w = watcher("--config", str(conf), "--interval", "0.2")
        opened.wait()
        os.kill(w.proc.pid, signal.SIGHUP)
    finally:
        opened.close()
    w.wait_for(lambda r: r["event"] == "start", what="start record", timeout=30)
    w.wait_for(lambda r: r["event"] == "reload" and r["ok"], what="reload record")
    assert w.proc.poll() is None, f"died of the early SIGHUP: {w.proc.returncode}"
    assert w.stop() == 0


def test_a_sighup_before_the_probes_are_attached_without_config(cgroups, watcher):
    """Without --config: the SIGHUP sent as soon as the handler is installed (before the
    probes compile, ~1 s) is answered with the one-line message, and the daemon runs on."""
    cg = cgroups.make("early-hup-noconf")
    w = watcher("--limit", f"{cg}=1G", "--interval", "0.2")
    deadline = time.time() + 20
    while not sig_caught(w.proc.pid, signal.SIGHUP):
        assert time.time() < deadline and w.proc.poll() is None, w.proc.poll()
        time.sleep(0.001)
    before_attach = not any(r["event"] == "start" for r in w.records)
    os.kill(w.proc.pid, signal.SIGHUP)
    w.started()
    deadline = time.time() + 10
    while "SIGHUP: no --config to reload" not in w.stderr_so_far():
        assert time.time() < deadline, w.stderr_so_far()
        time.sleep(0.05)
    assert w.proc.poll() is None
    assert before_attach, "the handler came only after the probes were attached"
    assert w.stop() == 0


class NotifyListener:
    """A bound datagram socket standing in for systemd; messages kept with their arrival
    time and whether beanwatch's programs were loaded when READY arrived."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict, bool]] = []
        self.done = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            msg = dict(line.split("=", 1) for line in data.decode().split("\n"))
            loaded = bool(our_programs()) if "READY" in msg else False
            self.messages.append((time.monotonic(), msg, loaded))

    def wait_for(self, pred, timeout=30.0, what="message"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for i, (_, msg, _) in enumerate(list(self.messages)):
                if pred(msg):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {what} within {timeout}s: {self.messages}")

    def states(self) -> list[str]:
        keys = ("READY", "RELOADING", "STOPPING")
        return [next(k for k in keys if k in m) for _, m, _ in self.messages
                if any(k in m for k in keys)]

    def close(self):
        self.done = True
        self.thread.join(timeout=2)
        self.sock.close()


def test_sd_notify_ready_watchdog_reload_stopping(cgroups, watcher, tmp_path, monkeypatch):
    cg = cgroups.make("notified")
    conf = tmp_path / "beanwatch.toml"
    conf.write_text(f'[cgroup."{cg}"]\nlimit = "1G"\n')
    os.chmod(conf, 0o600)
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")     # pings every 0.5 s
    try:
        w = watcher("--config", str(conf), "--interval", "0.2")
        ready = listener.wait_for(lambda m: "READY" in m, what="READY=1")
        t_ready, msg, loaded = listener.messages[ready]
        assert loaded, "READY=1 before the probes were attached"
        assert msg["STATUS"].startswith("watching 1 cgroup(s)"), msg
        assert any(r["event"] == "start" for r in w.records)
        time.sleep(2.2)
        pings = [t for t, m, _ in listener.messages if "WATCHDOG" in m]
        assert 4 <= len(pings) <= 7, pings
        assert all(0.3 <= b - a <= 0.9 for a, b in zip(pings, pings[1:])), pings

        os.kill(w.proc.pid, signal.SIGHUP)
        w.wait_for(lambda r: r["event"] == "reload" and r["ok"], what="reload record")
        reloading = listener.wait_for(lambda m: "RELOADING" in m, what="RELOADING=1")
        arrived, msg, _ = listener.messages[reloading]
        assert abs(int(msg["MONOTONIC_USEC"]) / 1e6 - arrived) < 2   # CLOCK_MONOTONIC both
        deadline = time.time() + 10
        while listener.states() != ["READY", "RELOADING", "READY"]:
            assert time.time() < deadline, listener.messages
            time.sleep(0.02)

        assert w.stop() == 0
        listener.wait_for(lambda m: "STOPPING" in m, what="STOPPING=1")
        assert listener.states() == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        listener.close()
