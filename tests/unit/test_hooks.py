"""Operator hooks: real small programs in a temporary directory, run without a shell."""

import os
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.core.errors import BeanwatchError
from observer.host.hooks import (HOOK_PATH, MAX_PIDS_CHARS, OUTPUT_LIMIT, HookError, HookOutcome,
                            HookRunner, check_hook, hook_env)

# The whole environment a hook gets: the documented contract.
ENV_KEYS = ("PATH", "BEANWATCH_EVENT", "BEANWATCH_CGROUP", "BEANWATCH_CGROUP_ID",
            "BEANWATCH_ACTION", "BEANWATCH_LIMIT_BYTES", "BEANWATCH_BARRIER_BYTES",
            "BEANWATCH_EXACT_BYTES", "BEANWATCH_ESTIMATE_BYTES", "BEANWATCH_PIDS", "BEANWATCH_NAME")

ME = os.getuid()   # as root the files are root's; otherwise the test user stands in for root
CID = "3f2a1b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
RECORD = {"event": "exceeded", "cgroup": f"/system.slice/docker-{CID}.scope", "cgroup_id": 4242,
          "action": "kill", "limit_bytes": 1 << 30, "barrier_bytes": None, "exact_bytes": (1 << 30) + 4096,
          "estimate_bytes": 3 << 30, "pids": [311, 312, 4000]}


def hook(directory, body, name="hook", mode=0o755):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return str(path)


def runner(on_exceed=None, on_action=None, timeout=2.0, **kw):
    return HookRunner(on_action, on_exceed, timeout, required_uid=ME, **kw)


# --- the decision ---------------------------------------------------------------------------

def test_exit_0_proceeds(tmp_path):
    out = runner(hook(tmp_path, "exit 0")).before_action(RECORD)
    assert (out.ran, out.vetoed, out.returncode, out.timed_out) == (True, False, 0, False)
    assert out.detail == "on-exceed hook exited 0: proceeding with kill"


def test_exit_1_vetoes_and_says_so(tmp_path):
    out = runner(hook(tmp_path, "echo 'batch job, let it finish'; exit 1")).before_action(RECORD)
    assert (out.ran, out.vetoed, out.returncode) == (True, True, 1)
    assert out.detail == "on-exceed hook exited 1 (batch job, let it finish): vetoed, kill not taken"


@pytest.mark.parametrize("body,shown", [("exit 2", "exited 2"), ("exit 255", "exited 255"),
                                        ("kill -9 $$", "killed by signal 9")])
def test_other_exits_proceed(tmp_path, body, shown):
    out = runner(hook(tmp_path, body)).before_action(RECORD)
    assert out.ran and not out.vetoed
    assert out.detail == f"on-exceed hook {shown}: only exit 1 vetoes, proceeding with kill"


def test_timeout_kills_the_hook_and_proceeds(tmp_path):
    pidfile = tmp_path / "pid"
    path = hook(tmp_path, f"echo $$ > {pidfile}; exec sleep 30")
    start = time.monotonic()
    out = runner(path, timeout=0.2).before_action(RECORD)
    assert time.monotonic() - start < 2
    assert (out.ran, out.vetoed, out.returncode, out.timed_out) == (True, False, None, True)
    assert out.detail == ("on-exceed hook timed out after 0.2s and was killed: "
                          "a broken hook does not stop enforcement, proceeding with kill")
    with pytest.raises(ProcessLookupError):   # killed and reaped, not left running
        os.kill(int(pidfile.read_text()), 0)


def test_a_hook_that_cannot_start_does_not_stop_the_action(tmp_path):
    path = tmp_path / "hook"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    out = runner(str(path)).before_action(RECORD)
    assert (out.ran, out.vetoed, out.timed_out) == (False, False, False)
    assert out.detail.startswith("on-exceed hook could not start: ")
    assert out.detail.endswith("a broken hook does not stop enforcement, proceeding with kill")


def test_a_hook_made_unsafe_after_start_up_is_not_run(tmp_path):
    marker = tmp_path / "ran"
    path = hook(tmp_path, f"touch {marker}; exit 1")
    r = runner(path)
    os.chmod(path, 0o777)
    out = r.before_action(RECORD)
    assert not out.ran and not out.vetoed and not marker.exists()
    assert "writable by group or others" in out.detail and out.detail.endswith("proceeding with kill")


def test_no_hook_configured():
    r = runner()
    assert r.before_action(RECORD) == HookOutcome(False, False, None, False, "no on-exceed hook")
    assert r.after_action(RECORD) == HookOutcome(False, False, None, False, "no on-action hook")


def test_after_action_only_reports(tmp_path):
    out_file = tmp_path / "event"
    r = runner(on_action=hook(tmp_path, f'echo "$BEANWATCH_EVENT" > {out_file}; exit 1'))
    out = r.after_action({**RECORD, "event": "action", "ok": True})
    assert (out.ran, out.vetoed, out.returncode) == (True, False, 1)
    assert out.detail == "on-action hook exited 1"
    assert out_file.read_text() == "action\n"


# --- what the hook gets -----------------------------------------------------------------------

def environ_of_hook(tmp_path, record, event="exceed"):
    # /proc/$$/environ is what execve handed the hook; `env` would add the shell's own PWD.
    dump = tmp_path / "environ"
    r = runner(hook(tmp_path, f"cat /proc/$$/environ > {dump}"))
    out = r.before_action(record) if event == "exceed" else runner(
        on_action=hook(tmp_path, f"cat /proc/$$/environ > {dump}", name="after")).after_action(record)
    assert out.ran and out.returncode == 0, out.detail
    return dict(item.split("=", 1) for item in dump.read_bytes().decode().split("\0") if item)


def test_environment_is_exactly_the_documented_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    env = environ_of_hook(tmp_path, RECORD)
    assert env == {
        "PATH": HOOK_PATH, "BEANWATCH_EVENT": "exceeded",
        "BEANWATCH_CGROUP": f"/system.slice/docker-{CID}.scope", "BEANWATCH_CGROUP_ID": "4242",
        "BEANWATCH_ACTION": "kill", "BEANWATCH_LIMIT_BYTES": str(1 << 30), "BEANWATCH_BARRIER_BYTES": "",
        "BEANWATCH_EXACT_BYTES": str((1 << 30) + 4096), "BEANWATCH_ESTIMATE_BYTES": str(3 << 30),
        "BEANWATCH_PIDS": "311 312 4000", "BEANWATCH_NAME": f"docker {CID[:12]}",
    }


def test_after_action_environment_and_missing_fields(tmp_path):
    env = environ_of_hook(tmp_path, {"cgroup": "/beanwatch-1/hog", "action": "freeze"}, event="action")
    assert set(env) == set(ENV_KEYS)
    assert env["BEANWATCH_EVENT"] == "action" and env["BEANWATCH_NAME"] == "/beanwatch-1/hog"
    for key in ("BEANWATCH_CGROUP_ID", "BEANWATCH_LIMIT_BYTES", "BEANWATCH_BARRIER_BYTES",
                "BEANWATCH_EXACT_BYTES", "BEANWATCH_ESTIMATE_BYTES", "BEANWATCH_PIDS"):
        assert env[key] == ""


def test_no_shell_interpretation_of_names(tmp_path):
    touched, also = tmp_path / "touched", tmp_path / "also"
    name = f"/evil$(touch {touched});touch {also}`touch {also}`\n|&>x"
    seen, argc = tmp_path / "seen", tmp_path / "argc"
    r = runner(hook(tmp_path, f'printf %s "$BEANWATCH_CGROUP" > {seen}; echo $# > {argc}'))
    out = r.before_action({**RECORD, "cgroup": name, "action": "kill; rm -rf /"})
    assert out.ran and out.returncode == 0
    assert not touched.exists() and not also.exists()
    assert seen.read_text() == name          # handed over exactly, newline included
    assert argc.read_text() == "0\n"         # argv is [path] alone
    assert "\n" not in out.detail


def test_values_the_os_cannot_carry_are_escaped():
    env = hook_env("exceed", {"cgroup": "/a\0b", "action": "\ud800", "pids": [1, "2", True, 3.0, 4],
                              "limit_bytes": True, "exact_bytes": 1.5})
    assert env["BEANWATCH_CGROUP"] == "/a\\x00b" and env["BEANWATCH_ACTION"] == "\\xd800"
    assert env["BEANWATCH_PIDS"] == "1 4"
    assert env["BEANWATCH_LIMIT_BYTES"] == env["BEANWATCH_EXACT_BYTES"] == ""


def test_a_huge_pid_list_is_cut_to_what_execve_takes(tmp_path):
    pids = list(range(100000, 130000))
    assert len(hook_env("exceed", {"pids": pids})["BEANWATCH_PIDS"]) <= MAX_PIDS_CHARS
    out = runner(hook(tmp_path, "exit 1")).before_action({**RECORD, "pids": pids})
    assert out.ran and out.vetoed


def test_output_is_kept_short_and_the_detail_is_one_line(tmp_path):
    path = hook(tmp_path, "echo 'first line'; head -c 200000 /dev/zero | tr '\\0' x; echo oops >&2")
    out = runner(path).before_action(RECORD)
    assert out.returncode == 0 and not out.timed_out
    assert out.output.startswith("first line\nxxx") and len(out.output.encode()) <= OUTPUT_LIMIT
    assert out.detail == "on-exceed hook exited 0 (first line): proceeding with kill"


def test_a_background_process_holding_the_output_does_not_hold_up_beanwatch(tmp_path):
    # subprocess.run(capture_output=True) would wait for the pipe's end and report a timeout.
    bgpid = tmp_path / "bgpid"
    path = hook(tmp_path, f"sleep 30 & echo $! > {bgpid}; echo started; exit 1")
    try:
        start = time.monotonic()
        out = runner(path, timeout=5).before_action(RECORD)
        assert time.monotonic() - start < 2
        assert (out.vetoed, out.timed_out, out.output) == (True, False, "started\n")
    finally:
        if bgpid.exists():
            try:
                os.kill(int(bgpid.read_text()), 9)
            except ProcessLookupError:
                pass


class FakeProc:
    def __init__(self, code):
        self.pid, self.returncode = 2**22 + 7, code   # above pid_max: killpg finds no group

    def poll(self):
        return self.returncode

    def wait(self):
        return self.returncode


def test_popen_is_called_like_execv_without_a_shell_in_a_session_of_its_own(tmp_path):
    calls = []

    def fake_popen(argv, **kw):
        calls.append((argv, kw))
        return FakeProc(1)

    path = hook(tmp_path, "exit 0")
    out = runner(path, timeout=0.5, popen=fake_popen).before_action(RECORD)
    assert out.vetoed
    [(argv, kw)] = calls
    assert argv == [path]
    assert kw["shell"] is False and kw["close_fds"] is True and kw["stdin"] is subprocess.DEVNULL
    assert kw["start_new_session"] is True      # its own process group, killed as one
    assert set(kw["env"]) == set(ENV_KEYS)


@pytest.mark.parametrize("error", [RuntimeError("boom"), subprocess.SubprocessError(), ValueError("x\ny")])
def test_any_failure_to_start_proceeds(tmp_path, error):
    def failing_popen(argv, **kw):
        raise error

    out = runner(hook(tmp_path, "exit 1"), popen=failing_popen).before_action(RECORD)
    assert not out.ran and not out.vetoed and "\n" not in out.detail
    assert out.detail.endswith("proceeding with kill")


def test_start_returns_at_once_and_the_timeout_kills_the_whole_group(tmp_path):
    """A hook that sleeps, with a child that also sleeps in its process group: start() does
    not wait; at the deadline both are killed."""
    pids = tmp_path / "pids"
    path = hook(tmp_path, f"sleep 30 & echo $$ $! > {pids}; wait")
    r = runner(path, timeout=0.5)
    t0 = time.monotonic()
    handle = r.start_exceed(RECORD)
    assert time.monotonic() - t0 < 0.3 and handle.poll() is None
    while (out := handle.poll()) is None:
        time.sleep(0.02)
    assert 0.4 < time.monotonic() - t0 < 3
    assert out.timed_out and not out.vetoed
    for pid in map(int, pids.read_text().split()):
        assert not running(pid), pid


def running(pid: int, wait: float = 2.0) -> bool:
    """Alive and not a zombie (an orphan waits for init to reap it), after up to `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state == "Z":
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.02)


# --- start-up checks ------------------------------------------------------------------------

def test_hook_error_is_a_beanwatch_error():
    assert issubclass(HookError, BeanwatchError)


def test_check_hook_accepts_a_safe_program(tmp_path):
    path = hook(tmp_path, "exit 0")
    assert check_hook(path, required_uid=ME) == path


def test_check_hook_resolves_the_directory(tmp_path):
    (tmp_path / "real").mkdir()
    path = hook(tmp_path / "real", "exit 0")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert check_hook(str(tmp_path / "link" / "hook"), required_uid=ME) == path


def test_check_hook_accepts_a_sticky_directory(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    path = hook(shared, "exit 0")
    assert check_hook(path, required_uid=ME) == path


def refusal_cases(tmp_path):
    good = hook(tmp_path, "exit 0", name="good")
    (tmp_path / "dir").mkdir()
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    os.symlink(good, tmp_path / "link")
    return {
        "relative": ("bin/hook", "give an absolute path"),
        "dot-relative": ("./hook", "give an absolute path"),
        "empty": ("", "give an absolute path"),
        "not a string": (b"/bin/true", "give an absolute path"),
        "nul": (good + "\0x", "path contains NUL"),
        "missing": (str(tmp_path / "missing"), "No such file or directory"),
        "directory": (str(tmp_path / "dir"), "is not a regular file"),
        "fifo": (_fifo(tmp_path / "fifo"), "is not a regular file"),
        "not executable": (hook(tmp_path, "exit 0", name="plain", mode=0o644), "is not executable"),
        "world-writable": (hook(tmp_path, "exit 0", name="w777", mode=0o777), "writable by group or others"),
        "group-writable": (hook(tmp_path, "exit 0", name="w775", mode=0o775), "writable by group or others"),
        "symlink": (str(tmp_path / "link"), "is a symbolic link"),
        "open directory": (hook(tmp_path / "open", "exit 0"), "its directory"),
        "under a file": (good + "/x", "Not a directory"),
    }


def _fifo(path):
    os.mkfifo(path)
    return str(path)


@pytest.mark.parametrize("case", ["relative", "dot-relative", "empty", "not a string", "nul", "missing",
                                  "directory", "fifo", "not executable", "world-writable",
                                  "group-writable", "symlink", "open directory", "under a file"])
def test_check_hook_refuses(tmp_path, case):
    path, reason = refusal_cases(tmp_path)[case]
    with pytest.raises(HookError) as err:
        check_hook(path, required_uid=ME)
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_check_hook_refuses_another_owner(tmp_path):
    path = hook(tmp_path, "exit 0")
    with pytest.raises(HookError, match=f"is owned by uid {ME}, not uid {ME + 1}"):
        check_hook(path, required_uid=ME + 1)


def test_runner_checks_at_start_up(tmp_path):
    with pytest.raises(HookError, match="give an absolute path"):
        HookRunner("hooks/after", None)
    with pytest.raises(HookError, match="is not executable"):
        runner(on_exceed=hook(tmp_path, "exit 0", mode=0o600))


# --- properties -------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=40)
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                      lambda inner: st.lists(inner, max_size=5) | st.dictionaries(ANY_TEXT, inner, max_size=3),
                      max_leaves=10)
KEYS = st.sampled_from(["cgroup", "action", "limit_bytes", "barrier_bytes", "exact_bytes", "estimate_bytes",
                        "pids", "cgroup_id", "event"]) | ANY_TEXT
PROPS = settings(database=None, deadline=None, max_examples=150)


@pytest.fixture(scope="module")
def veto_runner(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hooks")
    return runner(hook(directory, "exit 1"), on_action=hook(directory, "exit 0", name="after"))


@PROPS
@given(record=st.dictionaries(KEYS, VALUES, max_size=10))
def test_before_action_never_raises(veto_runner, record):
    r = veto_runner
    out = r.before_action(record)
    assert out.ran and out.vetoed and out.returncode == 1, out.detail   # data cannot undo a veto
    assert "\n" not in out.detail
    after = r.after_action(record)
    assert after.ran and not after.vetoed and "\n" not in after.detail


def test_signal_cgroup_without_cgroup_kill_signals_listed_members_through_pidfds(tmp_path):
    """Before 5.14 (no cgroup.kill) signal_cgroup reads cgroup.procs through the directory's
    fd and kills through pidfds; a number no longer listed at the confirming read is spared.
    A plain directory stands in for the cgroup: cgroup.procs lists our child, no kill file."""
    from observer.host.hooks import signal_cgroup
    listed = subprocess.Popen(["sleep", "30"])
    spared = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / "cgroup.procs").write_text(f"{listed.pid}\n")
        signal_cgroup(str(tmp_path))
        assert listed.wait(timeout=10) < 0
        assert spared.poll() is None
        assert not (tmp_path / "cgroup.freeze").exists()   # never created, only written
    finally:
        for p in (listed, spared):
            if p.poll() is None:
                p.kill()
            p.wait()
