"""Failure modes a root tool that can kill must guard against, on the real kernel."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import no_programs_left

MiB = 1 << 20


def beanwatch(*args):
    exe = shutil.which("beanwatch", path=os.path.dirname(sys.executable)) or "beanwatch"
    return [exe, *args]


def run(*args, timeout=60, **kw):
    return subprocess.run(beanwatch(*args), capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.parametrize("args, fragment", [
    (["--limit", "/=1G", "--action", "kill"], "root cgroup"),
    (["--limit", "/=1G", "--action", "freeze"], "root cgroup"),
    (["--limit", "../../etc=1G"], ".."),
    (["--limit", "/sys/fs/cgroup/../../etc=1G"], ""),
    # (a cgroup that does not exist yet is waited for: test_tenants.py)
    (["--limit", "/proc=1G"], ""),
])
def test_bad_targets_exit_2_with_nothing_attached(args, fragment):
    res = run("watch", *args, "--duration", "1")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert no_programs_left()


def test_without_root_it_refuses_before_attaching():
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing")
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          *beanwatch("watch", "--duration", "1")],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode == 1
    assert res.stdout == "" and "must run as root" in res.stderr
    assert no_programs_left()


def test_report_mode_writes_no_cgroup_file_and_sends_no_signal(cgroups, tmp_path):
    """strace the whole session: no write to cgroup.kill/freeze/procs, no kill syscall."""
    if not shutil.which("strace"):
        pytest.skip("strace missing")
    cg = cgroups.make("reported")
    trace = tmp_path / "trace"
    w = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), "-e",
                          "trace=openat,open,kill,tkill,tgkill,pidfd_send_signal,rt_sigqueueinfo",
                          *beanwatch("watch", "--json", "--limit", f"{cg}=32M", "--action",
                                     "report", "--interval", "0.2", "--duration", "8")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(4)  # strace slows the compile down
    p = cgroups.workload(cg, "touch:96M", "hold")
    out, _ = w.communicate(timeout=90)
    assert w.returncode == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert any(r["event"] == "action" and r["action"] == "report" for r in records), records[-3:]
    assert p.poll() is None, "report mode killed the workload"
    text = trace.read_text()
    writes = [line for line in text.splitlines()
              if re.search(r"cgroup\.(kill|freeze|procs)", line)
              and re.search(r"O_WRONLY|O_RDWR", line)]
    signals = [line for line in text.splitlines()
               if re.match(r"\d+\s+(kill|tkill|tgkill|pidfd_send_signal|rt_sigqueueinfo)\(", line)]
    assert writes == [] and signals == [], (writes[:3], signals[:3])


@pytest.mark.kernel
def test_kill_fallback_ends_a_fork_storm(cgroups, watcher):
    """Without cgroup.kill (forced): freeze, SIGKILL through pidfds in rounds, thaw."""
    if not shutil.which("stress-ng"):
        pytest.skip("stress-ng missing")
    cg = cgroups.make("storm")
    w = watcher("--limit", f"{cg}=64M", "--action", "kill", "--interval", "0.2",
                "--kill-via", "signals")
    w.started()
    storm = cgroups.spawn(cg, ["stress-ng", "--fork", "8", "--oomable", "--timeout", "30",
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    hog = cgroups.workload(cg, "touch:128M", "hold")
    act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="kill record",
                     timeout=30)
    assert "pidfd" in act["detail"], act
    deadline = time.time() + 10
    while cgroups.events(cg)["populated"] and time.time() < deadline:
        time.sleep(0.05)
    assert cgroups.events(cg)["populated"] == 0, "the fork storm outlived the kill"
    assert cgroups.events(cg)["frozen"] == 0
    assert hog.wait(timeout=5) == -signal.SIGKILL
    storm.wait(timeout=5)
    assert w.stop() == 0


def test_sigkilled_beanwatch_leaves_no_program_and_the_next_thaws(cgroups, watcher):
    cg = cgroups.make("frozen")
    w = watcher("--limit", f"{cg}=32M", "--action", "freeze", "--interval", "0.2")
    w.started()
    p = cgroups.workload(cg, "touch:96M", "hold")
    w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == cg, what="freeze record")
    assert w.stop(signal.SIGKILL) == -signal.SIGKILL
    assert no_programs_left(), "programs survived their process"
    assert cgroups.events(cg)["frozen"] == 1   # nobody could thaw it
    w2 = watcher("--limit", f"{cg}=1G", "--interval", "0.2")
    thaw = w2.wait_for(lambda r: r["event"] == "thaw" and r["cgroup"] == cg, what="thaw record")
    assert thaw["ok"]
    assert cgroups.events(cg)["frozen"] == 0
    # the restart seeded the frozen workload from /proc
    snap = w2.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
                       and r["estimate_bytes"] >= 96 * MiB, what="seeded estimate")
    assert p.poll() is None
    assert w2.stop() == 0


def test_sighup_reloads_the_config_and_a_bad_one_is_kept_out(cgroups, watcher, tmp_path):
    cg = cgroups.make("reloaded")
    conf = tmp_path / "beanwatch.toml"
    conf.write_text(f'[cgroup."{cg}"]\nlimit = "1G"\n')
    os.chmod(conf, 0o600)
    w = watcher("--config", str(conf), "--interval", "0.2")
    w.started()
    p = cgroups.workload(cg, "reserve:512M", "hold")
    w.wait_for(lambda r: r["event"] == "snapshot" and r["cgroup"] == cg
               and r["estimate_bytes"] > 512 * MiB, what="estimate")
    conf.write_text(f'[cgroup."{cg}"]\nlimit = "256M"\n')
    os.kill(w.proc.pid, signal.SIGHUP)
    w.wait_for(lambda r: r["event"] == "reload" and r["ok"], what="reload record")
    w.wait_for(lambda r: r["event"] == "mode" and r["cgroup"] == cg and r["mode"] == "slow",
               what="slow mode under the new limit")
    conf.write_text(f'[cgroup."{cg}"]\nlimit = "256M"\nbarrier = "1G"\n')
    os.kill(w.proc.pid, signal.SIGHUP)
    bad = w.wait_for(lambda r: r["event"] == "reload" and not r["ok"], what="refused reload")
    assert "barrier" in bad["detail"]
    time.sleep(0.5)
    assert w.of("snapshot", cg)[-1]["limit_bytes"] == 256 * MiB
    assert w.of("snapshot", cg)[-1]["switches"] >= 1
    assert p.poll() is None
    assert w.stop() == 0


def test_an_mmap_flood_loses_nothing_and_stays_sound(cgroups, watcher):
    """Nothing is sent per mmap: a one-page ring buffer survives stress-ng --mmap 16."""
    if not shutil.which("stress-ng"):
        pytest.skip("stress-ng missing")
    cg = cgroups.make("flood")
    w = watcher("--limit", f"{cg}=64G", "--interval", "0.2", "--ringbuf-pages", "1")
    w.started()
    verify = subprocess.Popen(beanwatch("verify", "--cgroup", cg, "--json", "--interval", "0.2",
                                        "--duration", "8"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p = cgroups.spawn(cg, ["stress-ng", "--mmap", "16", "--mmap-bytes", "4M", "--oomable",
                           "--timeout", "5", "--quiet"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.wait(timeout=60) == 0
    out, err = verify.communicate(timeout=60)
    assert verify.returncode == 0, err
    assert not [json.loads(x) for x in out.splitlines() if '"violation"' in x]
    assert not w.of("lost")
    assert w.stop() == 0


def memory_cgroup_for(pid: int, tag: str, headroom: int):
    """A memory cgroup holding pid with `headroom` bytes above what it is charged now.
    cgroup2's memory controller where the host has it, else cgroup1's. Returns a cleanup."""
    from observer.host.cgroupfs import find_mounts
    m = find_mounts()
    v2_root = m.cgroup2
    v2_ctl = os.path.join(v2_root, "cgroup.controllers") if v2_root else None
    if v2_ctl and os.path.exists(v2_ctl) and "memory" in open(v2_ctl).read().split():
        path = os.path.join(v2_root, tag)
        os.mkdir(path)
        limit_file, procs = "memory.max", "cgroup.procs"
    elif m.memory_v1:
        path = os.path.join(m.memory_v1, tag)
        os.mkdir(path)
        limit_file, procs = "memory.limit_in_bytes", "cgroup.procs"
    else:
        pytest.skip("no memory controller on this host")
    with open(os.path.join(path, procs), "w") as f:
        f.write(str(pid))
    usage_file = "memory.current" if limit_file == "memory.max" else "memory.usage_in_bytes"
    with open(os.path.join(path, usage_file)) as f:
        usage = int(f.read())
    with open(os.path.join(path, limit_file), "w") as f:
        f.write(str(usage + headroom))

    from observer.host.scratch import remove_cgroup
    return path, lambda: remove_cgroup(path)


def test_it_keeps_acting_with_its_own_memory_cgroup_at_its_limit(cgroups, watcher):
    """beanwatch's own memory cgroup gets 24 MiB above what it holds; a hog elsewhere passes
    its limit: beanwatch must stay alive (its pages are locked, its footprint bounded) and
    kill the hog."""
    hog_cg = cgroups.make("hog")
    w = watcher("--limit", f"{hog_cg}=96M", "--action", "kill", "--interval", "0.2")
    w.started()
    path, cleanup = memory_cgroup_for(w.proc.pid, f"beanwatch-test-self-{os.getpid()}", 24 * MiB)
    try:
        for round_ in range(3):
            hog = cgroups.workload(hog_cg, "touch:256M", "hold")
            assert hog.wait(timeout=30) == -signal.SIGKILL, f"round {round_}: hog not killed"
            time.sleep(0.5)
        assert w.proc.poll() is None, "beanwatch died under its own memory limit"
        assert len([r for r in w.of("action", hog_cg) if r["ok"]]) == 3
    finally:
        code = w.stop()
        cleanup()
    assert code == 0
