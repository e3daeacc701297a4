"""Operator hooks: --on-exceed runs before an action and may veto it, --on-action runs after."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import stat
import subprocess

from ..core.errors import BeanwatchError
from ..core.names import display_name, printable

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


def _read_available(fd: int) -> bytes:
    # Non-blocking: a process the hook left behind may hold the pipe open for ever.
    os.set_blocking(fd, False)
    out = b""
    try:
        while len(out) < OUTPUT_LIMIT and (chunk := os.read(fd, OUTPUT_LIMIT - len(out))):
            out += chunk
    except BlockingIOError:
        pass
    return out


class HookRunner:
    """Runs the configured hooks by absolute path, argv [path], data in the environment only.

    Both hooks run synchronously with the same timeout (after_action too: the caller waits at
    most `timeout` seconds, plus the time to kill the hook). Output goes to a pipe read after
    the hook exits, never waited on: a hook leaving a background process holding it does not
    hold up beanwatch, and memory stays bounded (a hook writing more than PIPE_SIZE blocks
    until its timeout).
    """

    def __init__(self, on_action: str | None, on_exceed: str | None, timeout: float = 2.0,
                 run=subprocess.run, *, required_uid: int = 0):
        self.required_uid = required_uid
        self.on_action = check_hook(on_action, required_uid=required_uid) if on_action else None
        self.on_exceed = check_hook(on_exceed, required_uid=required_uid) if on_exceed else None
        self.timeout = timeout
        self._run = run

    def before_action(self, record: dict) -> HookOutcome:
        """Exit 0 proceeds, exit 1 vetoes, anything else proceeds: a broken hook never stops enforcement."""
        out = self._call(self.on_exceed, "exceed", record, "on-exceed")
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

    def after_action(self, record: dict) -> HookOutcome:
        """Runs the on-action hook; its result is only reported."""
        return self._call(self.on_action, "action", record, "on-action")

    def _call(self, path: str | None, event: str, record: dict, which: str) -> HookOutcome:
        if path is None:
            return HookOutcome(False, False, None, False, f"no {which} hook")
        try:
            # Checked again at each run: the file may have been replaced since start-up.
            check_hook(path, required_uid=self.required_uid)
            env = hook_env(event, record if isinstance(record, dict) else {})
        except Exception as e:  # HookError, or a record no one foresaw: never stop the action
            return HookOutcome(False, False, None, False, f"{which} hook not run: {_one_line(e)}")
        r, w = os.pipe()
        try:
            try:
                try:
                    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                except OSError:
                    pass   # above /proc/sys/fs/pipe-max-size: the default 64 KiB will do
                result = self._run([path], env=env, timeout=self.timeout, stdin=subprocess.DEVNULL,
                                   stdout=w, stderr=w, close_fds=True, shell=False)
            except Exception as e:   # judged below, like an exit status
                result = e
            finally:
                os.close(w)
            output = _read_available(r).decode(errors="replace")
        finally:
            os.close(r)
        if isinstance(result, subprocess.TimeoutExpired):
            # subprocess.run has killed it (SIGKILL) and reaped it before raising.
            ran, code, timed_out = True, None, True
            detail = f"{which} hook timed out after {self.timeout:g}s and was killed"
        elif isinstance(result, Exception):   # OSError from execve, mostly
            ran, code, timed_out = False, None, False
            detail = f"{which} hook could not start: {_one_line(result)}"
        else:
            ran, code, timed_out = True, result.returncode, False
            detail = f"{which} hook {_status(code)}"
        if first := output.strip().partition("\n")[0][:200]:
            detail += f" ({printable(first)})"
        return HookOutcome(ran, False, code, timed_out, detail, output)


def _status(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exited {code}"


def _one_line(e: Exception) -> str:
    return printable(str(e) or type(e).__name__)
