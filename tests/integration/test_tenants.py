"""What a tenant with a delegated cgroup subtree, or a service manager, can do to the
watcher: deep cgroups, restarts, churn, event storms, limits changed under it (issue 10)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

MiB = 1 << 20
DIR = os.O_RDONLY | os.O_DIRECTORY


def workload_argv(*steps):
    return [sys.executable, "-m", "observer.app.workload", *steps]


def spawn_at(cgroups, dir_fd: int, argv) -> subprocess.Popen:
    """Starts argv inside the cgroup open as dir_fd (joined through the fd: no path)."""
    def join():
        fd = os.open("cgroup.procs", os.O_WRONLY, dir_fd=dir_fd)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    p = subprocess.Popen(argv, preexec_fn=join, cwd=ROOT, stderr=subprocess.DEVNULL)
    cgroups.children.append(p)
    return p


class DeepChain:
    """depth nested cgroups of 250-character names under top: the absolute path is past
    PATH_MAX and /proc/PID/cgroup of a member is over 4096 bytes. Only fds reach it."""

    def __init__(self, top_path: str, depth: int = 20):
        self.parts = [f"{i:02d}" + "x" * 248 for i in range(depth)]
        self.fds = [os.open(top_path, DIR)]
        for part in self.parts:
            os.mkdir(part, dir_fd=self.fds[-1])
            self.fds.append(os.open(part, DIR, dir_fd=self.fds[-1]))

    @property
    def deepest(self) -> int:
        return self.fds[-1]

    def rel(self) -> str:
        return "/" + "/".join(self.parts)

    def remove(self) -> None:
        """Kill what is inside (from the top of the chain), then rmdir bottom-up by fd."""
        try:
            fd = os.open("cgroup.kill", os.O_WRONLY, dir_fd=self.fds[1])
            os.write(fd, b"1")
            os.close(fd)
        except OSError:
            # no cgroup.kill (before 5.14): SIGKILL each process of the chain through a pidfd
            for dfd in self.fds[1:]:
                try:
                    fd = os.open("cgroup.procs", os.O_RDONLY, dir_fd=dfd)
                    pids = [int(x) for x in os.read(fd, 1 << 16).split()]
                    os.close(fd)
                except OSError:
                    continue
                for pid in pids:
                    try:
                        pfd = os.pidfd_open(pid)
                        signal.pidfd_send_signal(pfd, signal.SIGKILL)
                        os.close(pfd)
                    except OSError:
                        pass
        for i in range(len(self.parts), 0, -1):
            deadline = time.time() + 10
            while True:
                try:
                    os.rmdir(self.parts[i - 1], dir_fd=self.fds[i - 1])
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        for fd in self.fds:
            os.close(fd)


def _has_cgroup_kill() -> bool:
    from observer.app.hostcheck import _scratch_has
    from observer.host.cgroupfs import find_mounts
    mount = find_mounts().cgroup2
    return not mount or _scratch_has(mount, "cgroup.kill")[0] is not False


# Known gap (seen in the Debian 11 guest): without cgroup.kill the kill falls back to pidfds,
# and it checks each pid's cgroup in /proc/PID/cgroup, which 5.10 refuses (ENAMETOOLONG) past
# PATH_MAX: the fallback then refuses to signal (safe, never a wrong kill), so the deepest
# cgroup's toucher is not killed there. To fix: check the pid's membership through the
# cgroup's own cgroup.procs read by fd instead.
@pytest.mark.kernel
@pytest.mark.xfail(condition=not _has_cgroup_kill(), strict=False,
                   reason="5.10: no cgroup.kill and /proc/PID/cgroup past PATH_MAX is refused")
def test_a_chain_of_cgroups_deeper_than_path_max_neither_stops_nor_blinds_the_watcher(
        cgroups, watcher):
    top = cgroups.make("deep")
    chain = DeepChain(cgroups.path(top))
    try:
        deep = top + chain.rel()
        assert len(cgroups.path(deep)) > 4096
        sleeper = spawn_at(cgroups, chain.deepest, ["sleep", "600"])
        time.sleep(0.2)
        try:
            with open(f"/proc/{sleeper.pid}/cgroup", "rb") as f:
                assert len(f.read()) > 4096
        except OSError as e:
            # kernels before 5.x's cgroup_path rework (5.10) refuse the path outright
            assert e.errno == errno.ENAMETOOLONG, e
        # One limit on the top of the chain, one on its deepest cgroup (named past PATH_MAX).
        w = watcher("--limit", f"{top}=1G", "--limit", f"{deep}=96M", "--action", "kill",
                    "--interval", "0.2")
        w.started()
        # still running, the deepest is accounted, and a toucher there is killed by its limit
        hog = spawn_at(cgroups, chain.deepest, workload_argv("touch:512M", "hold"))
        assert hog.wait(timeout=30) == -signal.SIGKILL
        act = w.wait_for(lambda r: r["event"] == "action" and r["cgroup"] == deep,
                         what="kill of the deepest cgroup")
        assert act["ok"] and act["action"] == "kill" and hog.pid in act["pids"]
        assert act["exact_bytes"] < 96 * MiB + 64 * MiB
        assert w.proc.poll() is None, w.stderr
        assert not w.of("error")
        assert w.stop() == 0
    finally:
        chain.remove()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """Share of one core the process used over seconds."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def move(pid: int, path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))


def killed_near(cgroups, w, cg, limit_mib, slack_mib=64):
    p = cgroups.workload(cg, "touch:1G", "hold")
    assert p.wait(timeout=30) == -signal.SIGKILL, f"toucher in {cg} not killed"
    act = w.wait_for(lambda r: r["event"] == "action" and p.pid in r.get("pids", ()),
                     what=f"kill in {cg}")
    assert act["ok"] and act["exact_bytes"] < (limit_mib + slack_mib) * MiB, act
    return act


def test_a_restarted_service_cgroup_is_enforced_again(cgroups, watcher):
    cg = cgroups.make("svc")
    w = watcher("--limit", f"{cg}=256M", "--action", "kill", "--interval", "0.2")
    w.started()
    first = cgroups.workload(cg, "touch:16M", "hold")
    time.sleep(0.5)
    # what systemctl restart does: the processes go, the cgroup goes, a new one comes
    first.kill()
    first.wait()
    from observer.host.scratch import remove_cgroup
    remove_cgroup(cgroups.path(cg))
    os.mkdir(cgroups.path(cg))
    act = killed_near(cgroups, w, cg, 256)
    assert act["cgroup"] == cg
    rec = w.wait_for(lambda r: r["event"] == "recreated" and r["cgroup"] == cg,
                     what="recreated record")
    assert rec["cgroup_id"] == act["cgroup_id"] != rec["previous_id"]
    assert w.stop() == 0


def test_a_configured_cgroup_missing_at_start_is_waited_for(cgroups, watcher):
    cg = cgroups.prefix + "/later"
    w = watcher("--limit", f"{cg}=128M", "--action", "kill", "--interval", "0.2")
    w.wait_for(lambda r: r["event"] == "waiting" and r["cgroup"] == cg, what="waiting record")
    cgroups.make("later")
    killed_near(cgroups, w, cg, 128)
    assert w.wait_for(lambda r: r["event"] == "appeared" and r["cgroup"] == cg)
    assert w.stop() == 0


def test_cgroup_churn_neither_fills_the_maps_nor_spins(cgroups, watcher):
    parent = cgroups.make("churn")
    home = cgroups.make("churn/home")
    # maps sized small on purpose: 3000 cgroups made, entered and removed would fill them
    w = watcher("--limit", f"{parent}=256M", "--action", "kill", "--interval", "0.2",
                "--max-leaves", "1024")
    w.started()
    mover = cgroups.spawn(home, ["sleep", "600"])
    time.sleep(0.2)
    for i in range(3000):
        path = cgroups.path(f"{parent}/c{i}")
        os.mkdir(path)
        move(mover.pid, path)
        move(mover.pid, cgroups.path(home))
        os.rmdir(path)
    time.sleep(1.0)
    cpu = idle_cpu(w.proc.pid)
    assert cpu < 0.15, f"beanwatch used {cpu:.0%} of a core while idle after the churn"
    assert not w.of("map_full") and not w.of("error")
    killed_near(cgroups, w, cgroups.make("churn/after"), 256)
    assert w.stop() == 0


def test_full_maps_are_reported_once_fall_back_to_exact_checks_and_never_spin(
        cgroups, watcher):
    parent = cgroups.make("full")
    home = cgroups.make("full/home")
    w = watcher("--limit", f"{parent}=256M", "--action", "kill", "--interval", "0.2",
                "--max-leaves", "64")
    w.started()
    mover = cgroups.spawn(home, ["sleep", "600"])
    time.sleep(0.2)
    for i in range(150):   # live cgroups, each entered once: more than the maps hold
        move(mover.pid, cgroups.path(cgroups.make(f"full/c{i}")))
    move(mover.pid, cgroups.path(home))
    w.wait_for(lambda r: r["event"] == "map_full", what="map_full record")
    time.sleep(1.0)
    cpu = idle_cpu(w.proc.pid)
    assert cpu < 0.15, f"beanwatch used {cpu:.0%} of a core while idle with full maps"
    assert len(w.of("map_full")) == 1 and not w.of("error")
    # a cgroup with no map entry is measured every interval (0.2 s), not followed per
    # fault: a toucher at ~1 GiB/s passes the limit by one interval's growth and the time
    # a measurement takes (up to ~330 MiB here on a loaded host); it must not reach 1 GiB
    killed_near(cgroups, w, cgroups.make("full/after"), 256, slack_mib=512)
    assert len(w.of("map_full")) == 1
    assert w.stop() == 0
