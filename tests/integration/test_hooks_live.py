"""Hooks beside the loop, with a real `watch`, real cgroups and real hook programs: a slow
hook on one cgroup delays no kill on another; a hook's whole tree dies at its timeout; the
hold taken for a hook is in the ledger, so a SIGKILLed beanwatch's next start thaws it."""

from __future__ import annotations

import json
import os
import signal
import time

from conftest import no_programs_left

from observer.host.cgroupfs import find_mounts
from observer.host.hooks import HOOKS_CGROUP

MiB = 1 << 20
STATE = "/run/beanwatch"


def hook(tmp_path, name, body):
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    os.chmod(tmp_path, 0o755)   # the hook's directory must not be writable by others
    return str(path)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def hook_cgroups_of(pid: int) -> list[str]:
    parent = os.path.join(find_mounts().cgroup2, HOOKS_CGROUP)
    try:
        return [n for n in os.listdir(parent) if n.startswith(f"{pid}.")]
    except FileNotFoundError:
        return []


def wait_until(pred, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.02)


def test_a_slow_hook_on_one_cgroup_does_not_delay_a_kill_on_another(cgroups, watcher, tmp_path):
    a, b = cgroups.make("slow-a"), cgroups.make("fast-b")
    mark = tmp_path / "a-asked"
    exceed = hook(tmp_path, "exceed.sh",
                  f'case "$BEANWATCH_CGROUP" in\n  */slow-a) touch {mark}; sleep 6;;\nesac\nexit 0')
    w = watcher("--limit", f"{a}=48M", "--limit", f"{b}=48M", "--action", "kill",
                "--interval", "0.2", "--on-exceed", exceed, "--hook-timeout", "20")
    w.started()
    pa = cgroups.workload(a, "touch:96M", "hold")
    wait_until(mark.exists, 20, "on-exceed hook for A")
    asked_a = time.time()
    pb = cgroups.workload(b, "touch:96M", "hold")
    kill_b = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == b, what="kill of B")
    assert kill_b["ok"] and kill_b["action"] == "kill"
    assert pb.wait(timeout=5) == -signal.SIGKILL
    assert time.time() - asked_a < 4, "B waited for A's hook"
    assert not w.of("action", a), "A acted before its hook answered"
    assert cgroups.events(a)["frozen"] == 1          # held while its hook decides
    kill_a = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == a, timeout=20,
                        what="kill of A after its hook")
    assert kill_a["ok"] and "exited 0" in kill_a["hook"]
    assert kill_a["ts"] - kill_b["ts"] > 2
    assert pa.wait(timeout=5) == -signal.SIGKILL
    assert cgroups.events(a)["frozen"] == 0
    assert w.stop() == 0
    assert hook_cgroups_of(w.proc.pid) == []
    assert not os.path.exists(os.path.join(find_mounts().cgroup2, HOOKS_CGROUP)), \
        "the hooks' parent cgroup was left behind"


def test_a_hook_that_leaves_a_setsid_grandchild_is_killed_whole_at_timeout(cgroups, watcher,
                                                                           tmp_path):
    cg = cgroups.make("grandchild")
    pidfile = tmp_path / "grandchild.pid"
    # setsid -f forks: the grandchild is in a new session and process group, its parent
    # gone; only the hook's cgroup still holds it.
    exceed = hook(tmp_path, "exceed.sh",
                  f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 300'\nexec sleep 300")
    grandchild = None
    try:
        w = watcher("--limit", f"{cg}=48M", "--action", "kill", "--interval", "0.2",
                    "--on-exceed", exceed, "--hook-timeout", "1")
        w.started()
        p = cgroups.workload(cg, "touch:96M", "hold")
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 20, "grandchild")
        grandchild = int(pidfile.read_text())
        assert running(grandchild)
        act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg,
                         what="kill after the timeout")
        assert "timed out after 1s and was killed" in act["hook"] and act["ok"]
        assert p.wait(timeout=5) == -signal.SIGKILL
        wait_until(lambda: not running(grandchild), 5, "end of the setsid grandchild")
        wait_until(lambda: hook_cgroups_of(w.proc.pid) == [], 5, "removal of the hook's cgroup")
        assert w.stop() == 0
    finally:
        if grandchild is not None and running(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_a_sigkilled_beanwatch_during_a_hook_held_freeze_is_thawed_by_the_next(cgroups, watcher,
                                                                               tmp_path):
    cg = cgroups.make("held")
    hookpid = tmp_path / "hook.pid"
    exceed = hook(tmp_path, "exceed.sh", f"echo $$ > {hookpid}\nexec sleep 60")
    w = watcher("--limit", f"{cg}=48M", "--action", "kill", "--interval", "0.2",
                "--on-exceed", exceed, "--hook-timeout", "50")
    w.started()
    p = cgroups.workload(cg, "touch:96M", "hold")
    wait_until(lambda: hookpid.exists() and hookpid.read_text().strip(), 20, "on-exceed hook")
    wait_until(lambda: cgroups.events(cg)["frozen"] == 1, 5, "the hold")
    ledger = os.path.join(STATE, f"frozen.{w.proc.pid}.json")
    wait_until(lambda: os.path.exists(ledger), 5, "ledger entry for the hold")
    entries = json.load(open(ledger))["frozen"]
    assert [e["cgroup"] for e in entries] == [cg]
    hook_process = int(hookpid.read_text())
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    assert no_programs_left()
    assert cgroups.events(cg)["frozen"] == 1            # nobody could thaw it
    assert running(hook_process)                        # nor end its hook
    w2 = watcher("--limit", f"{cg}=1G", "--interval", "0.2")
    thaw = w2.wait_for(lambda r: r["event"] == "thaw" and r["cgroup"] == cg, what="thaw record")
    assert thaw["ok"]
    assert cgroups.events(cg)["frozen"] == 0
    assert not os.path.exists(ledger)
    wait_until(lambda: not running(hook_process), 5, "end of the dead beanwatch's hook")
    assert hook_cgroups_of(w.proc.pid) == []
    assert p.poll() is None
    assert w2.stop() == 0
