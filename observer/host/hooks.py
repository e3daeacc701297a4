"""Operator hooks: --on-exceed runs before an action and may veto it, --on-action runs after."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import signal
import stat
import subprocess
import time

from ..core.errors import BeanwatchError
from ..core.names import display_name, printable
from .actions import PidfdSignaller, kill_members

HOOK_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_LIMIT = 4096           # bytes of the hook's stdout+stderr kept
PIPE_SIZE = 1 << 20           # a hook blocks only once it has written this much
MAX_PIDS_CHARS = 64 * 1024    # the kernel refuses one env string over 128 KiB (MAX_ARG_STRLEN)


class HookError(BeanwatchError):
    """A hook program beanwatch refuses to run as root."""


@dataclasses.dataclass(frozen=True)
class HookOutcome:
    ran: bool
    vetoed: bool
    returncode: int | None
    timed_out: bool
    detail: str          # one line, for the operator
    output: str = ""     # the hook's stdout and stderr, interleaved, at most OUTPUT_LIMIT bytes


def _unsafe(st: os.stat_result, required_uid: int, directory: bool) -> str | None:
    owners = (0, required_uid) if directory else (required_uid,)
    if st.st_uid not in owners:
        return f"is owned by uid {st.st_uid}, not uid {required_uid}"
    # A sticky directory (/tmp) lets no one else rename or remove what is in it.
    if st.st_mode & 0o022 and not (directory and st.st_mode & stat.S_ISVTX):
        return f"is writable by group or others (mode {st.st_mode & 0o7777:04o}); run chmod go-w"
    return None


def check_hook(path: str, *, required_uid: int = 0) -> str:
    """The hook's path, its directory resolved, if only root could have written it; else HookError.

    Like sshd's StrictModes, the directories leading to it are checked too: a hook in a
    directory others can write to can be swapped for another program after this check.
    """
    if not isinstance(path, str) or not os.path.isabs(path):
        raise HookError(f"hook {path!r}: give an absolute path")
    shown = printable(path)
    if "\0" in path:
        raise HookError(f"hook {shown}: path contains NUL")
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise HookError(f"hook {shown}: is a symbolic link; give the program itself")
        if not stat.S_ISREG(st.st_mode):
            raise HookError(f"hook {shown}: is not a regular file")
        if not st.st_mode & 0o111:
            raise HookError(f"hook {shown}: is not executable; run chmod +x")
        if problem := _unsafe(st, required_uid, directory=False):
            raise HookError(f"hook {shown}: {problem}")
        real_dir = os.path.realpath(os.path.dirname(path))
        d = real_dir
        while True:
            if problem := _unsafe(os.stat(d), required_uid, directory=True):
                raise HookError(f"hook {shown}: its directory {printable(d)} {problem}")
            if d == "/":
                break
            d = os.path.dirname(d)
    except OSError as e:
        raise HookError(f"hook {shown}: {e.strerror or e}") from None
    return os.path.join(real_dir, os.path.basename(path))


def _number(value) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


def _text(value) -> str:
    """Exact where the OS can carry it (a cgroup name is what a hook writes to), else escaped."""
    text = value if isinstance(value, str) else "" if value is None else str(value)
    try:
        if b"\0" not in os.fsencode(text):
            return text
    except UnicodeError:
        pass
    return printable(text)


def _pids(value) -> str:
    out, size = [], 0
    for pid in value if isinstance(value, (list, tuple)) else ():
        if _number(pid):
            size += len(str(pid)) + 1
            if size > MAX_PIDS_CHARS:   # the rest are in cgroup.procs, if they still live
                break
            out.append(str(pid))
    return " ".join(out)


def hook_env(event: str, record: dict) -> dict[str, str]:
    """The whole environment a hook gets: nothing inherited, so no secret and no LD_PRELOAD leaks."""
    cgroup = _text(record.get("cgroup"))
    return {
        "PATH": HOOK_PATH, "BEANWATCH_EVENT": event, "BEANWATCH_CGROUP": cgroup,
        "BEANWATCH_CGROUP_ID": _number(record.get("cgroup_id")),
        "BEANWATCH_ACTION": _text(record.get("action")),
        "BEANWATCH_LIMIT_BYTES": _number(record.get("limit_bytes")),
        "BEANWATCH_BARRIER_BYTES": _number(record.get("barrier_bytes")),
        "BEANWATCH_EXACT_BYTES": _number(record.get("exact_bytes")),
        "BEANWATCH_ESTIMATE_BYTES": _number(record.get("estimate_bytes")),
        "BEANWATCH_PIDS": _pids(record.get("pids")),
        "BEANWATCH_NAME": display_name(cgroup),
    }


HOOKS_CGROUP = "beanwatch-hooks"   # under the cgroup2 mount: one child cgroup per hook run
KILL_WAIT = 2.0                    # seconds to wait for a killed hook cgroup to empty


def _read_available(fd: int, limit: int = OUTPUT_LIMIT) -> bytes:
    # Non-blocking: a process the hook left behind may hold the pipe open for ever.
    os.set_blocking(fd, False)
    out = b""
    try:
        while len(out) < limit and (chunk := os.read(fd, limit - len(out))):
            out += chunk
    except BlockingIOError:
        pass
    return out


def write_quietly(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def kill_cgroup(path: str, wait: float = KILL_WAIT) -> bool:
    """SIGKILL to every process of the cgroup at path (its own and its descendants': a
    setsid grandchild has left the process group, not the cgroup), then rmdir. True once
    removed."""
    signal_cgroup(path)
    return remove_cgroup(path, wait)


def signal_cgroup(path: str) -> None:
    """cgroup.kill (5.14) where it exists, else freeze and SIGKILL each member through a
    pidfd, its membership read again from the cgroup's own cgroup.procs (actions.kill_members):
    a PID that exited meanwhile and was given to another process is never signalled."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        write_quietly(os.path.join(path, "cgroup.kill"), "1")
        return
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return   # gone
    frozen = False
    try:
        frozen = _write_at(dfd, "cgroup.freeze", "1")

        def members() -> list[int]:
            try:
                fd = os.open("cgroup.procs", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return []
            try:
                data = b""
                while chunk := os.read(fd, 1 << 16):
                    data += chunk
            except OSError as e:
                if e.errno == errno.ENODEV:   # removed while open
                    return []
                raise
            finally:
                os.close(fd)
            return [int(x) for x in data.split()]
        kill_members(members, PidfdSignaller())
    finally:
        if frozen:
            _write_at(dfd, "cgroup.freeze", "0")
        os.close(dfd)


def _write_at(dfd: int, file: str, value: str) -> bool:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    try:
        os.write(fd, value.encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_cgroup(path: str, wait: float = KILL_WAIT) -> bool:
    """rmdir, retried while the killed processes are torn down; True once gone."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


class Finished:
    """A hook handle that is already done (not run, or run by a synchronous runner)."""

    def __init__(self, outcome: HookOutcome):
        self.outcome = outcome

    def poll(self) -> HookOutcome:
        return self.outcome

    def kill(self) -> HookOutcome:
        return self.outcome


class RunningHook:
    """One hook process beside the loop: poll() is None while it runs and its outcome once it
    has exited or, at its deadline, been killed with every process it started (its process
    group, and its cgroup where it has one). Processes a hook leaves behind end with it."""

    def __init__(self, runner: "HookRunner", which: str, proc, rfd: int, cgroup: str | None,
                 judge=None):
        self.runner, self.which, self.proc, self.rfd, self.cgroup = runner, which, proc, rfd, cgroup
        self.judge = judge
        self.deadline = runner.clock() + runner.timeout
        self.output = b""
        self.outcome: HookOutcome | None = None

    def poll(self) -> HookOutcome | None:
        if self.outcome is not None:
            return self.outcome
        self._drain()
        code = self.proc.poll()
        timed_out = code is None
        if timed_out and self.runner.clock() < self.deadline:
            return None
        self._end_tree()
        if timed_out:
            self.proc.wait()
        if self.cgroup is not None and not remove_cgroup(self.cgroup):
            self.runner.leftover.append(self.cgroup)
        self._drain()
        os.close(self.rfd)
        output = self.output.decode(errors="replace")
        if timed_out:
            detail = f"{self.which} hook timed out after {self.runner.timeout:g}s and was killed"
            out = HookOutcome(True, False, None, True, detail, output)
        else:
            out = HookOutcome(True, False, code, False, f"{self.which} hook {_status(code)}", output)
        out = _with_first_line(out)
        self.outcome = self.judge(out) if self.judge is not None else out
        return self.outcome

    def kill(self) -> HookOutcome:
        """Ends it now (beanwatch is stopping): the same as reaching its deadline."""
        self.deadline = float("-inf")
        return self.poll()

    def _drain(self) -> None:
        if len(self.output) < OUTPUT_LIMIT:
            self.output += _read_available(self.rfd, OUTPUT_LIMIT - len(self.output))

    def _end_tree(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # its own session: pgid == its pid
        except OSError:
            pass   # ESRCH: the group is empty already
        if self.cgroup is not None:
            signal_cgroup(self.cgroup)


class HookRunner:
    """Runs the configured hooks by absolute path, argv [path], data in the environment only.

    start() returns at once with a handle the caller polls (the enforcer, from its loop):
    a hook never holds up enforcement. Each hook runs in its own session (process group) and,
    given the cgroup2 mount, in a cgroup of its own (HOOKS_CGROUP/PID.START.N): at its
    timeout, or once it has exited, that whole cgroup is killed, so no descendant survives,
    not even one that called setsid(). before_action()/after_action() run one and wait.
    Output goes to a pipe read as the hook runs, at most OUTPUT_LIMIT bytes kept.
    """

    def __init__(self, on_action: str | None, on_exceed: str | None, timeout: float = 2.0,
                 *, required_uid: int = 0, popen=subprocess.Popen,
                 cgroup_mount: str | None = None, clock=time.monotonic, on_note=None):
        self.required_uid = required_uid
        self.on_action = check_hook(on_action, required_uid=required_uid) if on_action else None
        self.on_exceed = check_hook(on_exceed, required_uid=required_uid) if on_exceed else None
        self.timeout = timeout
        self._popen = popen
        self.clock = clock
        self.cgroup_parent = os.path.join(cgroup_mount, HOOKS_CGROUP) if cgroup_mount else None
        self.cgroup_note: str | None = None    # why hooks run without a cgroup, once
        self.on_note = on_note                  # called with that one line
        self.leftover: list[str] = []           # hook cgroups that would not empty in time
        self.seq = 0
        from .procfs import ProcFS
        from .state import start_time
        self.tag = f"{os.getpid()}.{start_time(ProcFS(), os.getpid()) or 0}"

    # -- asynchronous ---------------------------------------------------------------------------
    def start_exceed(self, record: dict):
        """The on-exceed hook, started; its handle's outcome is the verdict (vetoed or not)."""
        return self._start(self.on_exceed, "exceeded", record, "on-exceed",
                           judge=lambda out: self.verdict(out, record))

    def start_action(self, record: dict):
        return self._start(self.on_action, "action", record, "on-action")

    def start_barrier(self, record: dict):
        """The on-action hook for a barrier action `hook` (BEANWATCH_EVENT=barrier_action)."""
        return self._start(self.on_action, "barrier_action", record, "on-action")

    def verdict(self, out: HookOutcome, record) -> HookOutcome:
        """Exit 0 proceeds, exit 1 vetoes, anything else proceeds: a broken hook never stops
        enforcement."""
        action = _text(record.get("action") if isinstance(record, dict) else None)
        action = printable(action) or "the action"
        if out.ran and out.returncode == 1:
            detail = f"{out.detail}: vetoed, {action} not taken"
            return dataclasses.replace(out, vetoed=True, detail=detail)
        if out.ran and out.returncode == 0:
            return dataclasses.replace(out, detail=f"{out.detail}: proceeding with {action}")
        if self.on_exceed is None:
            return out
        why = ("only exit 1 vetoes" if out.ran and not out.timed_out
               else "a broken hook does not stop enforcement")
        return dataclasses.replace(out, detail=f"{out.detail}: {why}, proceeding with {action}")

    # -- synchronous ----------------------------------------------------------------------------
    def before_action(self, record: dict) -> HookOutcome:
        return self.wait(self.start_exceed(record))

    def after_action(self, record: dict) -> HookOutcome:
        """Runs the on-action hook; its result is only reported."""
        return self.wait(self.start_action(record))

    @staticmethod
    def wait(handle) -> HookOutcome:
        while (out := handle.poll()) is None:
            time.sleep(0.01)
        return out

    # -- the processes --------------------------------------------------------------------------
    def _start(self, path: str | None, event: str, record: dict, which: str, judge=None):
        judge = judge or (lambda out: out)
        if path is None:
            return Finished(HookOutcome(False, False, None, False, f"no {which} hook"))
        try:
            # Checked again at each run: the file may have been replaced since start-up.
            check_hook(path, required_uid=self.required_uid)
            env = hook_env(event, record if isinstance(record, dict) else {})
        except Exception as e:  # HookError, or a record no one foresaw: never stop the action
            return Finished(judge(HookOutcome(False, False, None, False,
                                              f"{which} hook not run: {_one_line(e)}")))
        r, w = os.pipe()
        cgroup = self._make_cgroup()
        try:
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass   # above /proc/sys/fs/pipe-max-size: the default 64 KiB will do
            join = None
            if cgroup is not None:
                procs = os.path.join(cgroup, "cgroup.procs")

                def join():   # in the child, before exec: every descendant is born inside
                    with open(procs, "w") as f:
                        f.write(str(os.getpid()))
            proc = self._popen([path], env=env, stdin=subprocess.DEVNULL, stdout=w, stderr=w,
                               close_fds=True, shell=False, start_new_session=True,
                               preexec_fn=join)
        except Exception as e:   # OSError from execve, mostly: judged like an exit status
            os.close(r)
            if cgroup is not None:
                kill_cgroup(cgroup)
            return Finished(judge(HookOutcome(False, False, None, False,
                                              f"{which} hook could not start: {_one_line(e)}")))
        finally:
            os.close(w)
        return RunningHook(self, which, proc, r, cgroup, judge)

    def _make_cgroup(self) -> str | None:
        if self.cgroup_parent is None:
            return None
        self.seq += 1
        path = os.path.join(self.cgroup_parent, f"{self.tag}.{self.seq}")
        try:
            os.makedirs(self.cgroup_parent, exist_ok=True)
            os.mkdir(path)
            return path
        except OSError as e:
            if self.cgroup_note is None and self.on_note is not None:
                self.on_note(f"hooks run without a cgroup of their own ({e.strerror}): at "
                             "the timeout only their process group is killed")
            self.cgroup_note = e.strerror or str(e)
            return None

    def close(self) -> None:
        """Removes the hooks' parent cgroup once no hook of any beanwatch is in it."""
        if self.cgroup_parent is not None:
            try:
                os.rmdir(self.cgroup_parent)
            except OSError:
                pass   # absent, or another beanwatch's hook runs there

    def reap_leftovers(self) -> list[str]:
        """Kills and removes hook cgroups of beanwatch processes that are gone (SIGKILLed
        during a hook), and those of ours that would not empty in time. Returns them."""
        if self.cgroup_parent is None:
            return []
        done = reap_hook_cgroups(os.path.dirname(self.cgroup_parent), self.tag, self.leftover)
        self.leftover = [p for p in self.leftover if p not in done]
        return done


def reap_hook_cgroups(cgroup_mount: str, own_tag: str | None = None, own_stuck=()) -> list[str]:
    """Hook cgroups (HOOKS_CGROUP/PID.START.N) whose beanwatch no longer runs (same pid and
    start time), killed and removed; own_stuck: ours to retry. Returns those removed."""
    from .procfs import ProcFS
    from .state import start_time
    parent = os.path.join(cgroup_mount, HOOKS_CGROUP)
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    done, procfs = [], ProcFS()
    for name in names:
        parts = name.split(".")
        path = os.path.join(parent, name)
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or not os.path.isdir(path):
            continue
        tag = f"{parts[0]}.{parts[1]}"
        if tag == own_tag and path not in own_stuck:
            continue   # one of our hooks, running now
        if tag != own_tag and start_time(procfs, int(parts[0])) == int(parts[1]):
            continue   # another live beanwatch's
        if kill_cgroup(path):
            done.append(path)
    return done


def _with_first_line(out: HookOutcome) -> HookOutcome:
    if first := out.output.strip().partition("\n")[0][:200]:
        return dataclasses.replace(out, detail=out.detail + f" ({printable(first)})")
    return out


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited {code}"


def _one_line(e: Exception) -> str:
    return printable(str(e) or type(e).__name__)
