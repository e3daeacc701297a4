"""Acts on cgroups (report, freeze, thaw, kill), refusing any that holds init or beanwatch."""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass

from .cgroupfs import CgroupFS
from ..core.errors import BeanwatchError


class ActionRefused(BeanwatchError):
    """The action would touch a cgroup beanwatch must never act on."""


def _canonical(name: str) -> bool:
    if name == "/":
        return True
    parts = name.split("/")
    return (
        name.startswith("/")
        and "\0" not in name
        and "\n" not in name
        and all(p not in ("", ".", "..") for p in parts[1:])
    )


def guard(cg: CgroupFS, name: str, expected_id: int, own_cgroup: str, init_cgroup: str) -> None:
    """Raise ActionRefused unless acting on name can reach neither init, beanwatch nor its
    session, and name is still the cgroup that was measured (same id). The message says
    why, not which cgroup: every caller names it already."""
    # Ancestry below is a string comparison: it holds only for canonical names.
    for value in (name, own_cgroup, init_cgroup):
        if not isinstance(value, str) or not _canonical(value):
            raise ActionRefused(f"refused: {value!r} is not a canonical cgroup name")
    # On many hosts every process, the operator's own shell included, sits in the root cgroup.
    if name == "/":
        raise ActionRefused("refused: it is the root cgroup")
    if name in cg.ancestors_or_self(own_cgroup):
        raise ActionRefused(f"refused: it holds beanwatch ({own_cgroup})")
    if name in cg.ancestors_or_self(init_cgroup):
        raise ActionRefused(f"refused: it holds init ({init_cgroup})")
    try:
        found = cg.cgroup_id(name)
    except FileNotFoundError:
        raise ActionRefused("refused: gone") from None
    except OSError as e:
        raise ActionRefused(f"refused: {e.strerror}") from None
    if found != expected_id:
        raise ActionRefused(
            f"refused: removed and recreated (id {expected_id}, now {found})"
        )


@dataclass
class ActionResult:
    action: str
    cgroup: str
    pids: list[int]
    ok: bool
    detail: str


class PidfdSignaller:
    """Signals through pidfds (Linux 5.3): a pidfd names one process, never a reuse of its PID."""

    def pidfd_open(self, pid: int) -> int | None:
        try:
            return os.pidfd_open(pid)
        except AttributeError:
            raise BeanwatchError("pidfd_open is unavailable (needs Linux 5.3+)") from None
        except OSError as e:
            # ESRCH: gone. EINVAL: the number now names a thread, not a process: also gone.
            if e.errno in (errno.ESRCH, errno.EINVAL):
                return None
            raise BeanwatchError(f"pidfd_open({pid}): {e.strerror}") from None

    def send(self, pidfd: int, sig: int) -> None:
        """Raises ProcessLookupError when the process has exited."""
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise
            raise BeanwatchError(f"pidfd_send_signal({sig}): {e.strerror}") from None

    def close(self, pidfd: int) -> None:
        os.close(pidfd)


def _within(path: str, name: str) -> bool:
    return path == name or path.startswith(name + "/")


class Actor:
    """Carries out actions on cgroups, each behind guard()."""

    ROUND_PAUSE = 0.005  # seconds between kill rounds, to let forks in flight land in cgroup.procs

    def __init__(
        self, cg: CgroupFS, own_cgroup: str, init_cgroup: str, signaller=None,
        use_cgroup_kill: bool = True, procfs=None,
    ):
        self.procfs = procfs   # one chosen process (kill scope process): its cgroup, start time
        self.use_cgroup_kill = use_cgroup_kill   # False: always the pidfd path (tests, old kernels)
        self.cg = cg
        self.own_cgroup = own_cgroup
        self.init_cgroup = init_cgroup
        self.signaller = signaller or PidfdSignaller()

    def guard(self, name: str, expected_id: int) -> None:
        guard(self.cg, name, expected_id, self.own_cgroup, self.init_cgroup)

    def report(self, name: str) -> ActionResult:
        """Lists the members; writes no cgroup file and sends no signal."""
        pids = self.cg.subtree_procs(name)
        return ActionResult("report", name, pids, True, f"{len(pids)} processes")

    def freeze(self, name: str, expected_id: int) -> ActionResult:
        return self._freeze("freeze", name, expected_id, True)

    def hold(self, name: str, expected_id: int) -> bool:
        """freeze() without listing the members: for a hold while usage is measured, where
        nothing is recorded of them and every microsecond before the write is growth."""
        self.guard(name, expected_id)
        return self.cg.freeze(name, True)

    def thaw(self, name: str, expected_id: int) -> ActionResult:
        return self._freeze("thaw", name, expected_id, False)

    def _freeze(self, action: str, name: str, expected_id: int, frozen: bool) -> ActionResult:
        self.guard(name, expected_id)
        pids = self.cg.subtree_procs(name)
        ok = self.cg.freeze(name, frozen)
        detail = ("frozen" if frozen else "thawed") if ok else "gone"
        return ActionResult(action, name, pids, ok, detail)

    def guard_within(self, name: str, limited: str, limited_id: int) -> int:
        """The guard for a victim below the limited cgroup (a child, an oom.group): limited
        is checked as usual (its id included), name must lie inside it, and name itself
        must reach neither init nor beanwatch. Returns name's id, read now."""
        self.guard(limited, limited_id)
        if not _canonical(name) or not _within(name, limited):
            raise ActionRefused(f"refusing to act on {name!r}: not inside {limited}")
        try:
            cid = self.cg.cgroup_id(name)
        except FileNotFoundError:
            raise ActionRefused(f"refusing to act on {name}: gone") from None
        except OSError as e:
            raise ActionRefused(f"refusing to act on {name}: {e.strerror}") from None
        self.guard(name, cid)
        return cid

    def kill_within(self, name: str, limited: str, limited_id: int,
                    sig: int = signal.SIGKILL) -> ActionResult:
        """Kills (or, with another signal, signals every process of) cgroup name, a victim
        at or below the limited cgroup."""
        cid = limited_id if name == limited else self.guard_within(name, limited, limited_id)
        if sig == signal.SIGKILL:
            return self.kill(name, cid)
        self.guard(name, cid)
        pids = self.cg.subtree_procs(name)
        out = kill_members(lambda: self.cg.subtree_procs(name), self.signaller, sig=sig)
        return ActionResult("kill", name, pids, out.ok, out.detail)

    def signal_process(self, limited: str, limited_id: int, pid: int, start_time: int | None,
                       sig: int = signal.SIGKILL) -> ActionResult:
        """Signals one process chosen in the limited cgroup: limited passes the guard, and,
        holding a pidfd, the process must still be inside limited and be the one measured
        (same start time), never init or beanwatch."""
        self.guard(limited, limited_id)
        name = signal.Signals(sig).name
        if pid in (1, os.getpid()):
            raise ActionRefused(f"refusing to signal pid {pid}: init or beanwatch")
        fd = self.signaller.pidfd_open(pid)
        if fd is None:
            return ActionResult("kill", limited, [pid], False, f"pid {pid} gone")
        try:
            where = self.procfs.cgroup2_path(pid)
            if where is None or not _within(where, limited):
                raise ActionRefused(f"refusing to signal pid {pid}: no longer inside {limited}")
            if where in self.cg.ancestors_or_self(self.own_cgroup):
                raise ActionRefused(f"refusing to signal pid {pid}: its cgroup holds beanwatch")
            st = self.procfs.stat(pid)
            if st is None or (start_time is not None and st.start_time != start_time):
                return ActionResult("kill", limited, [pid], False,
                                    f"pid {pid} gone (exited or reused)")
            self.signaller.send(fd, sig)
            return ActionResult("kill", limited, [pid], True, f"{name} via pidfd to pid {pid}")
        except ProcessLookupError:
            return ActionResult("kill", limited, [pid], False, f"pid {pid} gone")
        finally:
            self.signaller.close(fd)

    def alive(self, cgroup: str | None, pid: int | None, start_time: int | None) -> bool:
        """Whether a victim still holds memory: its process (same start time) or any
        process of its cgroup."""
        if pid is not None:
            st = self.procfs.stat(pid)
            return (st is not None and st.state not in ("Z", "X")
                    and (start_time is None or st.start_time == start_time))
        return bool(cgroup and self.cg.subtree_procs(cgroup))

    def candidates(self, limited: str, scope, usage, prefer=(), avoid=()):
        """The facts victim selection needs (host reads): the candidates of scope with
        their sizes (the precise figure) and marks, and the cgroups with memory.oom.group
        on the way from limited to any of them."""
        from ..core.config import KillScope
        from ..core.victims import Candidate, between, config_mark
        out = []
        rel = lambda c: c[len(limited.rstrip("/")) + 1:]  # noqa: E731
        if scope is KillScope.CHILD:
            for child, size in usage.by_cgroup(limited).items():
                mark = config_mark([rel(child)], prefer, avoid) or self.cg.mark(child)
                out.append(Candidate(child, size, mark))
        elif scope is KillScope.PROCESS:
            for p in usage.procs:
                st = self.procfs.stat(p.pid)
                if st is None or p.pid in (1, os.getpid()):
                    continue
                mark = config_mark([st.comm, rel(p.cgroup)], prefer, avoid)
                if mark is None:
                    # oomd's marks are on cgroups: the nearest one below limited
                    for c in reversed(between(limited, p.cgroup)[1:]):
                        if (mark := self.cg.mark(c)) is not None:
                            break
                out.append(Candidate(p.cgroup, p.figure, mark, p.pid, st.comm, st.start_time))
        chains = {c for cand in out for c in between(limited, cand.cgroup)} | {limited}
        groups = {c for c in chains if self.cg.oom_group(c)}
        return out, groups

    def kill(self, name: str, expected_id: int, rounds: int = 10) -> ActionResult:
        self.guard(name, expected_id)
        pids = self.cg.subtree_procs(name)
        if self.use_cgroup_kill and self.cg.has_kill(name):
            # cgroup.kill is atomic: the kernel also kills children forked while it runs.
            ok = self.cg.kill(name)
            return ActionResult("kill", name, pids, ok, "cgroup.kill written" if ok else "gone")
        return self._kill_by_pidfd(name, pids, rounds)

    def signal(self, name: str, expected_id: int, sig: int) -> ActionResult:
        """Sends sig to every process of the cgroup and its descendants, each through a
        pidfd and only while it is still a member (never init, never beanwatch itself)."""
        self.guard(name, expected_id)
        pids = self.cg.subtree_procs(name)
        out = kill_members(lambda: self.cg.subtree_procs(name), self.signaller, sig=sig,
                           pause=self.ROUND_PAUSE)
        signame = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
        detail = f"{signame} to {out.signalled} of {len(pids)} processes"
        if out.unreadable:
            detail += f"; cgroup.procs unreadable ({out.unreadable})"
        if out.failed:
            detail += f"; {len(out.failed)} could not be signalled (first {out.failed[0]})"
        return ActionResult("signal", name, pids, not out.failed and not out.unreadable, detail)

    def throttle(self, name: str, expected_id: int, high: int):
        """Writes memory.high = high unless it is already at or below. Returns the result
        and, when written, (previous value, value the kernel now shows) for the restore."""
        self.guard(name, expected_id)
        pids = self.cg.subtree_procs(name)
        if not self.cg.has_memory_high(name):
            return ActionResult("throttle", name, pids, False,
                                "no memory.high: the memory controller is not enabled for "
                                "this cgroup (cgroup2 with +memory in its parent's "
                                "cgroup.subtree_control)"), None
        previous = self.cg.memory_high(name)
        if previous is None:
            return ActionResult("throttle", name, pids, False, "gone"), None
        if previous != "max" and previous.isdigit() and int(previous) <= high:
            return ActionResult("throttle", name, pids, True,
                                f"memory.high is already {previous}, at or below the barrier: "
                                "left as is"), None
        if not self.cg.set_memory_high(name, str(high)):
            return ActionResult("throttle", name, pids, False, "gone"), None
        written = self.cg.memory_high(name) or str(high)
        return ActionResult("throttle", name, pids, True,
                            f"memory.high {previous} -> {written}"), (previous, written)

    def unthrottle(self, name: str, expected_id: int, previous: str, written: str) -> ActionResult:
        """Puts memory.high back to previous if it still holds what throttle wrote (someone
        who changed it since keeps their value)."""
        self.guard(name, expected_id)
        now = self.cg.memory_high(name)
        if now is None:
            return ActionResult("unthrottle", name, [], False, "gone")
        if now != written:
            return ActionResult("unthrottle", name, [], True,
                                f"memory.high was changed to {now} since it was set to "
                                f"{written}: left as is")
        if not self.cg.set_memory_high(name, previous):
            return ActionResult("unthrottle", name, [], False, "gone")
        return ActionResult("unthrottle", name, [], True, f"memory.high {now} -> {previous}")

    def _kill_by_pidfd(self, name: str, pids: list[int], rounds: int) -> ActionResult:
        # Without cgroup.kill: freeze so that nothing forks, then SIGKILL each member through a
        # pidfd, re-reading cgroup.procs until a round finds no new PID (as systemd does).
        # Frozen tasks still die of fatal signals, and SIGKILL is one. Membership is read from
        # the subtree's own cgroup.procs files (through directory fds), never from
        # /proc/PID/cgroup: 5.10 refuses that file (ENAMETOOLONG) for a cgroup past PATH_MAX.
        frozen = self.cg.has_freeze(name) and self.cg.freeze(name, True)
        try:
            out = kill_members(lambda: self.cg.subtree_procs(name), self.signaller, rounds,
                               self.ROUND_PAUSE)
        finally:
            if frozen:
                # Thaw even on error: a cgroup must never be left frozen behind us.
                self.cg.freeze(name, False)
        return ActionResult("kill", name, pids, out.ok, out.detail)


@dataclass
class KillOutcome:
    signalled: int
    rounds: int
    settled: bool
    failed: list[str]
    unreadable: str | None = None   # why cgroup.procs could not be read, if it could not
    sig: int = signal.SIGKILL

    @property
    def ok(self) -> bool:
        return self.settled and not self.failed and not self.unreadable

    @property
    def detail(self) -> str:
        out = (f"{signal.Signals(self.sig).name} via pidfd to {self.signalled} processes "
               f"in {self.rounds} rounds")
        if self.unreadable:
            out += f"; cgroup.procs unreadable ({self.unreadable})"
        elif not self.settled:
            out += f"; new processes still appearing after {self.rounds} rounds"
        if self.failed:
            out += f"; {len(self.failed)} could not be signalled (first {self.failed[0]})"
        return out


def kill_members(members, signaller, rounds: int = 10, pause: float = 0.005,
                 batch: int = 256, sig: int = signal.SIGKILL) -> KillOutcome:
    """SIGKILL every process that members() lists (the PIDs of a cgroup's cgroup.procs
    files), each PID tried once, in rounds until a read brings no new PID.

    No process outside the cgroup is signalled: a PID read from cgroup.procs may have exited
    and its number gone to an unrelated process before it is acted on. So a pidfd is opened
    first; then members() is read again; only a pidfd whose PID that second read still lists
    is signalled. If the pidfd's process was alive at the second read, the PID it holds is
    its own, so it was a member; if it had exited, pidfd_send_signal fails with ESRCH and
    the newcomer with its number is not touched. Never PID 1 nor beanwatch itself.
    One PID that cannot be opened or signalled is noted in failed; the others go on."""
    seen: set[int] = set()
    signalled = done = 0
    settled = False
    failed: list[str] = []
    while done < rounds and not settled:
        done += 1
        try:
            new = [p for p in members() if p not in seen]
        except Exception as e:  # noqa: BLE001 - reported in the outcome
            return KillOutcome(signalled, done, False, failed, str(e), sig=sig)
        seen.update(new)
        for i in range(0, len(new), batch):
            signalled += _kill_batch(new[i:i + batch], members, signaller, failed, sig)
        settled = not new
        if new:
            time.sleep(pause)
    return KillOutcome(signalled, done, settled, failed, sig=sig)


def _kill_batch(pids: list[int], members, signaller, failed: list[str],
                sig: int = signal.SIGKILL) -> int:
    fds: dict[int, int] = {}
    try:
        for pid in pids:
            if pid in (1, os.getpid()):
                continue
            try:
                fd = signaller.pidfd_open(pid)
            except Exception as e:  # noqa: BLE001 - reported in the outcome
                failed.append(f"{pid}: {e}")
                continue
            if fd is not None:
                fds[pid] = fd
        if not fds:
            return 0
        # Holding every pidfd, read the membership again.
        try:
            still = set(members())
        except Exception as e:  # noqa: BLE001 - nothing is signalled without the re-read
            failed.extend(f"{pid}: membership unconfirmed: {e}" for pid in fds)
            return 0
        count = 0
        for pid, fd in fds.items():
            if pid not in still:
                continue   # gone, moved out, or its number reused elsewhere
            try:
                signaller.send(fd, sig)
                count += 1
            except ProcessLookupError:
                pass       # exited after the re-read: the pidfd says so, nobody else is hit
            except Exception as e:  # noqa: BLE001 - reported in the outcome
                failed.append(f"{pid}: {e}")
        return count
    finally:
        for fd in fds.values():
            signaller.close(fd)
