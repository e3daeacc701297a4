"""Actor and guard against a fake cgroup tree and a recording signaller (no /proc: the kill
fallback reads membership from cgroup.procs only)."""

import errno
import os
import re
import signal
import subprocess

import pytest

import observer.host.cgroupfs as cgroupfs
from observer.host.actions import ActionRefused, Actor, PidfdSignaller, guard
from observer.host.cgroupfs import CgroupFS
from observer.host.procfs import ProcFS
from observer.core.errors import BeanwatchError

OWN, INIT, TARGET = "/user/session", "/init.scope", "/work/job"


def make_tree(root, files):
    """Materialise {relative path: content} under root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


class FakeSignaller:
    """Records what it would do. pidfd = 1000 + pid; pids in `gone` cannot be opened,
    pids in `dies` exit between pidfd_open and send."""

    def __init__(self, gone=(), dies=()):
        self.gone, self.dies = set(gone), set(dies)
        self.opened, self.sent, self.closed = [], [], []

    def pidfd_open(self, pid):
        self.opened.append(pid)
        return None if pid in self.gone else 1000 + pid

    def send(self, pidfd, sig):
        if pidfd - 1000 in self.dies:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        self.sent.append((pidfd - 1000, sig))

    def close(self, pidfd):
        self.closed.append(pidfd - 1000)

    @property
    def killed(self):
        assert all(sig == signal.SIGKILL for _, sig in self.sent)
        return [pid for pid, _ in self.sent]


class ScriptedCgroupFS(CgroupFS):
    """cgroup.procs of TARGET follows a script, one entry per read (the last repeats),
    and every freeze write is logged."""

    def __init__(self, root, script):
        super().__init__(root)
        self.script, self.reads, self.freezes = script, 0, []

    def _procs_at(self, fd, name):
        # the one place cgroup.procs is read during a walk (subtree_procs)
        if name != TARGET:
            return super()._procs_at(fd, name)
        pids = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if isinstance(pids, Exception):
            raise pids
        return pids

    def freeze(self, name, frozen):
        self.freezes.append(frozen)
        return super().freeze(name, frozen)


@pytest.fixture
def tree(tmp_path):
    files = {"cgroup.procs": f"1\n{os.getpid()}\n"}
    for name, procs in [(INIT, "1\n"), (OWN, f"{os.getpid()}\n"), (TARGET, "100\n101\n"),
                        (TARGET + "/child", "102\n"), ("/work/other", "200\n")]:
        files[name[1:] + "/cgroup.procs"] = procs
        files[name[1:] + "/cgroup.freeze"] = "0\n"
        files[name[1:] + "/cgroup.kill"] = ""
    files["user/cgroup.procs"] = ""
    files["work/cgroup.procs"] = ""
    return make_tree(tmp_path / "cg", files)


@pytest.fixture
def proc(tmp_path):
    """A fake /proc: pids 100-199 live in TARGET, pid 102 in its child, 200 elsewhere."""
    root = tmp_path / "proc"
    files = {f"{pid}/cgroup": f"0::{TARGET}\n" for pid in range(100, 200)}
    files["102/cgroup"] = f"0::{TARGET}/child\n"
    files["200/cgroup"] = "0::/work/other\n"
    files["1/cgroup"] = f"0::{INIT}\n"
    files[f"{os.getpid()}/cgroup"] = f"0::{TARGET}\n"  # as if moved there: must still be spared
    make_tree(root, files)
    return ProcFS(str(root))


def actor(cg, *args):
    """actor(cg, signaller) or actor(cg, procfs, signaller)."""
    procfs, signaller = args if len(args) == 2 else (None, args[0])
    a = Actor(cg, own_cgroup=OWN, init_cgroup=INIT, signaller=signaller, procfs=procfs)
    a.ROUND_PAUSE = 0
    return a


def snapshot(root):
    """Content and mtime of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path) as fh:
                out[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


def recreate(path):
    """Put a new directory with the same files in place of path, as `rmdir; mkdir` would.
    The old one is moved aside rather than removed, so the new one cannot reuse its inode."""
    old = path.rename(path.with_name(path.name + ".old"))
    path.mkdir()
    for f in old.iterdir():
        if f.is_file():
            (path / f.name).write_text(f.read_text())


# guard


@pytest.mark.parametrize(
    "name, reason",
    [
        ("/", "root cgroup"),
        (OWN, "holds beanwatch"),
        ("/user", "holds beanwatch"),
        (INIT, "holds init"),
        ("/work/job/", "not a canonical"),
        ("work/job", "not a canonical"),
        ("/work/../user", "not a canonical"),
        ("/work//job", "not a canonical"),
        ("/work/./job", "not a canonical"),
        ("", "not a canonical"),
    ],
)
def test_guard_refuses(tree, name, reason):
    cg = CgroupFS(str(tree))
    with pytest.raises(ActionRefused, match=reason):
        guard(cg, name, cg.cgroup_id("/"), OWN, INIT)


def test_guard_refuses_ancestors_of_init(tmp_path):
    cg = CgroupFS(str(make_tree(tmp_path, {"system.slice/init.scope/cgroup.procs": "1\n"})))
    with pytest.raises(ActionRefused, match="holds init"):
        guard(cg, "/system.slice", cg.cgroup_id("/system.slice"), OWN, "/system.slice/init.scope")


def test_guard_refuses_non_canonical_own_or_init(tree):
    cg = CgroupFS(str(tree))
    with pytest.raises(ActionRefused, match="not a canonical"):
        guard(cg, TARGET, cg.cgroup_id(TARGET), OWN + "/", INIT)
    with pytest.raises(ActionRefused, match="not a canonical"):
        guard(cg, TARGET, cg.cgroup_id(TARGET), OWN, None)


def test_guard_allows_siblings_and_children_of_own(tree):
    cg = CgroupFS(str(tree))
    (tree / "user" / "session" / "sub").mkdir()
    for name in (TARGET, "/user/session/sub", "/work"):
        guard(cg, name, cg.cgroup_id(name), OWN, INIT)


def test_guard_refuses_recreated_and_gone(tree):
    cg = CgroupFS(str(tree))
    old = cg.cgroup_id(TARGET)
    recreate(tree / "work" / "job")
    with pytest.raises(ActionRefused, match="removed and recreated"):
        guard(cg, TARGET, old, OWN, INIT)
    with pytest.raises(ActionRefused, match="gone"):
        guard(cg, "/work/nope", old, OWN, INIT)


# Actor: refusals leave no trace


@pytest.mark.parametrize("action", ["freeze", "thaw", "kill"])
@pytest.mark.parametrize("name", ["/", OWN, "/user", INIT])
def test_forbidden_targets_are_refused_without_trace(tree, action, name):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    before = snapshot(tree)
    with pytest.raises(ActionRefused):
        getattr(actor(cg, sig), action)(name, cg.cgroup_id(name))
    assert snapshot(tree) == before
    assert sig.opened == sig.sent == []


@pytest.mark.parametrize("action", ["freeze", "thaw", "kill"])
def test_recreated_cgroup_is_refused_without_trace(tree, action):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    old = cg.cgroup_id(TARGET)
    recreate(tree / "work" / "job")
    (tree / "work" / "job" / "cgroup.kill").unlink()  # would force the pidfd path
    before = snapshot(tree)
    with pytest.raises(ActionRefused, match="recreated"):
        getattr(actor(cg, sig), action)(TARGET, old)
    assert snapshot(tree) == before
    assert sig.opened == sig.sent == []


# report, freeze, thaw


@pytest.mark.parametrize("name", ["/", TARGET, OWN])
def test_report_writes_nothing_and_signals_nothing(tree, name):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    before = snapshot(tree)
    result = actor(cg, sig).report(name)
    assert snapshot(tree) == before
    assert sig.opened == sig.sent == []
    assert result.ok and result.action == "report" and result.cgroup == name
    assert set(result.pids) == set(cg.subtree_procs(name))


def test_freeze_then_thaw(tree):
    cg = CgroupFS(str(tree))
    a = actor(cg, FakeSignaller())
    result = a.freeze(TARGET, cg.cgroup_id(TARGET))
    assert (result.ok, sorted(result.pids), result.detail) == (True, [100, 101, 102], "frozen")
    assert (tree / "work/job/cgroup.freeze").read_text() == "1"
    assert a.thaw(TARGET, cg.cgroup_id(TARGET)).ok
    assert (tree / "work/job/cgroup.freeze").read_text() == "0"


def test_a_hold_freezes_behind_the_guard_without_reading_cgroup_procs(tree):
    """A hold while usage is measured: the same guard (id compared), cgroup.freeze written,
    and no cgroup.procs read before the write."""
    cg = ScriptedCgroupFS(str(tree), [RuntimeError("cgroup.procs read")])
    a = actor(cg, FakeSignaller())
    assert a.hold(TARGET, cg.cgroup_id(TARGET)) is True
    assert (tree / "work/job/cgroup.freeze").read_text() == "1" and cg.reads == 0
    with pytest.raises(ActionRefused, match="recreated"):
        a.hold(TARGET, cg.cgroup_id(TARGET) + 1)
    with pytest.raises(ActionRefused, match="holds beanwatch"):
        a.hold(OWN, cg.cgroup_id(OWN))


# kill


def test_kill_with_cgroup_kill_writes_it_and_signals_nothing(tree):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert (result.ok, sorted(result.pids)) == (True, [100, 101, 102])
    assert (tree / "work/job/cgroup.kill").read_text() == "1"
    assert (tree / "work/job/cgroup.freeze").read_text() == "0\n"  # untouched
    assert (tree / "work/other/cgroup.kill").read_text() == ""
    assert sig.opened == []


def test_kill_of_cgroup_removed_after_the_guard_is_not_ok(tree, monkeypatch):
    cg = CgroupFS(str(tree))
    monkeypatch.setattr(cg, "kill", lambda name: False)
    result = actor(cg, FakeSignaller()).kill(TARGET, cg.cgroup_id(TARGET))
    assert (result.ok, result.detail) == (False, "gone")


def fallback_tree(tree, script):
    """TARGET without cgroup.kill (Linux < 5.14) and, unless refilled, with an empty child."""
    (tree / "work/job/cgroup.kill").unlink()
    (tree / "work/job/child/cgroup.procs").write_text("")
    return ScriptedCgroupFS(str(tree), script)


def rounds_of(result) -> int:
    return int(re.search(r"in (\d+) rounds", result.detail)[1])


@pytest.mark.parametrize("n", [1, 3, 9])
def test_fallback_catches_forks_in_bounded_rounds(tree, n):
    # Read k shows k + 1 processes, for the first n reads; then no new ones appear.
    script = [list(range(100, 101 + k)) for k in range(n)]
    cg, sig = fallback_tree(tree, script), FakeSignaller()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok, result.detail
    assert result.pids == [100]  # members when the kill began
    assert sorted(sig.killed) == list(range(100, 100 + n))  # each once
    assert sorted(sig.closed) == sorted(sig.opened) == sorted(sig.killed)
    # One read for the result; each round with news reads twice (to find the new PIDs, then
    # again holding their pidfds, to confirm them); one round without news ends it.
    rounds = rounds_of(result)
    assert rounds <= n + 1
    assert cg.reads == 1 + 2 * (rounds - 1) + 1
    assert cg.freezes == [True, False]
    assert (tree / "work/job/cgroup.freeze").read_text() == "0"


def test_fallback_gives_up_after_the_round_limit_and_thaws(tree):
    script = [list(range(100, 101 + k)) for k in range(50)]
    cg, sig = fallback_tree(tree, script), FakeSignaller()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET), rounds=4)
    assert not result.ok and "after 4 rounds" in result.detail
    assert cg.reads == 1 + 4 * 2
    assert len(set(sig.killed)) == len(sig.killed)
    assert sorted(sig.killed) == list(range(100, 100 + len(sig.killed)))
    assert len(sig.killed) >= 4
    assert cg.freezes == [True, False]


def test_fallback_never_signals_init_or_itself(tree):
    cg, sig = fallback_tree(tree, [[1, os.getpid(), 100]]), FakeSignaller()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok and sig.killed == [100]
    assert 1 not in sig.opened and os.getpid() not in sig.opened


def test_fallback_skips_reused_and_vanished_pids(tree):
    # Read 0 is the result's, read 1 finds the PIDs, read 2 is made holding their pidfds:
    # 200's number now belongs to a process elsewhere (PID reuse), 300 has exited.
    # 103: pidfd_open says gone. 104: exits before the signal.
    everyone = [100, 200, 300, 103, 104]
    cg = fallback_tree(tree, [everyone, everyone, [100, 103, 104]])
    sig = FakeSignaller(gone=[103], dies=[104])
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok and sig.killed == [100]
    assert "to 1 processes" in result.detail
    assert sorted(sig.closed) == [100, 104, 200, 300]  # every pidfd opened is closed


class OrderLog(FakeSignaller):
    """Logs pidfd_open, send and the reads of cgroup.procs of the ScriptedCgroupFS, in order."""

    def __init__(self, cg, **kw):
        super().__init__(**kw)
        self.cg, self.log = cg, []

    def pidfd_open(self, pid):
        self.log.append(("open", pid, self.cg.reads))
        return super().pidfd_open(pid)

    def send(self, pidfd, sig):
        self.log.append(("send", pidfd - 1000, self.cg.reads))
        return super().send(pidfd, sig)


def test_a_pid_is_signalled_only_after_a_read_made_holding_its_pidfd_lists_it(tree):
    """The guarantee that replaces /proc/PID/cgroup (refused past PATH_MAX on 5.10): between
    a PID's pidfd_open and its signal there is a read of cgroup.procs that lists it."""
    script = [[100, 101], [100, 101], [101, 105], [101, 105, 106], [101, 105, 106]]
    cg = fallback_tree(tree, script)
    sig = OrderLog(cg)
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok, result.detail
    # 100 left between the reads (its number could now be anyone's): not signalled.
    assert sorted(sig.killed) == [101, 105, 106]
    opened = {pid: reads for what, pid, reads in sig.log if what == "open"}
    for what, pid, reads in sig.log:
        if what == "send":
            assert reads > opened[pid]                      # a read came after the open
            assert pid in script[min(reads - 1, len(script) - 1)]   # and it listed the pid


def test_a_failed_reread_signals_nobody_it_could_not_confirm(tree):
    cg = fallback_tree(tree, [[100, 101], [100, 101], OSError(errno.EIO, "Input/output error")])
    sig = FakeSignaller()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert sig.killed == [] and sorted(sig.closed) == sorted(sig.opened) == [100, 101]
    assert not result.ok and "2 could not be signalled" in result.detail
    assert cg.freezes == [True, False]


def test_fallback_kills_members_of_child_cgroups(tree):
    cg, sig = fallback_tree(tree, [[100]]), FakeSignaller()
    (tree / "work/job/child/cgroup.procs").write_text("102\n")
    actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert sorted(sig.killed) == [100, 102]  # 102 sits in /work/job/child


@pytest.mark.parametrize("err", [errno.ENOENT, errno.ENODEV])
def test_procs_unreadable_means_nothing_to_kill(tree, monkeypatch, err):
    (tree / "work/job/cgroup.kill").unlink()
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    real_open = open

    def failing_open(path, *args, **kwargs):
        if str(path).endswith("cgroup.procs"):
            raise OSError(err, os.strerror(err), path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(cgroupfs, "open", failing_open, raising=False)
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok and result.pids == [] and sig.opened == []
    assert (tree / "work/job/cgroup.freeze").read_text() == "0"


def test_fallback_thaws_when_signalling_fails(tree):
    cg = fallback_tree(tree, [[100, 101]])

    class Broken(FakeSignaller):
        def send(self, pidfd, sig):
            raise BeanwatchError("pidfd_send_signal(9): Operation not permitted")

    result = actor(cg, Broken()).kill(TARGET, cg.cgroup_id(TARGET))
    assert not result.ok and "2 could not be signalled" in result.detail
    assert "not permitted" in result.detail
    assert cg.freezes == [True, False]
    assert (tree / "work/job/cgroup.freeze").read_text() == "0"


def test_fallback_without_freezer_still_kills(tree):
    cg, sig = fallback_tree(tree, [[100]]), FakeSignaller()
    (tree / "work/job/cgroup.freeze").unlink()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert result.ok and sig.killed == [100] and cg.freezes == []


# The default signaller, on our own child process only.


def test_pidfd_signaller_treats_missing_pid_as_gone():
    with open("/proc/sys/kernel/pid_max") as f:
        beyond = int(f.read()) + 1
    assert PidfdSignaller().pidfd_open(beyond) is None


def test_pidfd_signaller_kills_own_child():
    child = subprocess.Popen(["sleep", "30"])
    s = PidfdSignaller()
    fd = s.pidfd_open(child.pid)
    try:
        s.send(fd, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        with pytest.raises(ProcessLookupError):
            s.send(fd, signal.SIGKILL)  # reaped: the pidfd still names it, and says so
    finally:
        s.close(fd)
        if child.poll() is None:
            child.kill()


def test_fallback_goes_on_past_a_pidfd_error(tree):
    class Broken(FakeSignaller):
        def pidfd_open(self, pid):
            if pid == 100:
                raise BeanwatchError("pidfd_open(100): Operation not permitted")
            return super().pidfd_open(pid)
    cg, sig = fallback_tree(tree, [[100, 101]]), Broken()
    result = actor(cg, sig).kill(TARGET, cg.cgroup_id(TARGET))
    assert sig.killed == [101] and not result.ok


# victims below the limited cgroup: children and single processes (issue 11)


def with_stat(proc_root, pid, start=777, comm=b"hog", state=b"S"):
    after = [state, b"1"] + [b"0"] * 17 + [str(start).encode()] + [b"0"] * 30
    (proc_root / str(pid) / "stat").write_bytes(
        str(pid).encode() + b" (" + comm + b") " + b" ".join(after) + b"\n")


def test_a_child_victim_is_guarded_and_must_lie_inside_the_limited_cgroup(tree, proc):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    a = actor(cg, proc, sig)
    tid = cg.cgroup_id(TARGET)
    res = a.kill_within(TARGET + "/child", TARGET, tid)
    assert res.ok and (tree / "work/job/child/cgroup.kill").read_text() == "1"
    assert (tree / "work/job/cgroup.kill").read_text() == ""    # the parent untouched
    for outside in ("/work/other", OWN, "/", "/work", INIT, "/work/jobless"):
        with pytest.raises(ActionRefused):
            a.kill_within(outside, TARGET, tid)
    with pytest.raises(ActionRefused, match="recreated"):
        a.kill_within(TARGET + "/child", TARGET, tid + 1)      # the limited cgroup changed
    assert (tree / "work/other/cgroup.kill").read_text() == ""


def test_a_sigterm_to_a_child_goes_through_pidfds(tree, proc):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    res = actor(cg, proc, sig).kill_within(TARGET + "/child", TARGET, cg.cgroup_id(TARGET),
                                           signal.SIGTERM)
    assert res.ok and sig.sent == [(102, signal.SIGTERM)]
    assert "SIGTERM" in res.detail


def test_a_process_victim_is_rechecked_through_its_pidfd(tree, proc, tmp_path):
    cg, sig = CgroupFS(str(tree)), FakeSignaller()
    a = actor(cg, proc, sig)
    tid = cg.cgroup_id(TARGET)
    root = tmp_path / "proc"
    for pid in (100, 102, 200):
        with_stat(root, pid, start=777)
    assert a.signal_process(TARGET, tid, 102, 777).ok           # in a child: inside
    assert a.signal_process(TARGET, tid, 100, 777, signal.SIGTERM).ok
    assert sig.sent == [(102, signal.SIGKILL), (100, signal.SIGTERM)]
    # reused: same pid, another start time -> not signalled
    res = a.signal_process(TARGET, tid, 100, 778)
    assert not res.ok and "reused" in res.detail
    # moved out of the limited cgroup (or a pid elsewhere): refused
    with pytest.raises(ActionRefused, match="no longer inside"):
        a.signal_process(TARGET, tid, 200, 777)
    for pid in (1, os.getpid()):
        with pytest.raises(ActionRefused):
            a.signal_process(TARGET, tid, pid, None)
    with pytest.raises(ActionRefused):
        a.signal_process("/", cg.cgroup_id("/"), 100, 777)       # never under the root
    assert len(sig.sent) == 2 and sorted(sig.closed) == [100, 100, 102, 200]


def test_candidates_read_sizes_marks_and_oom_groups(tree, proc, tmp_path):
    from observer.core.config import KillScope
    from observer.core.usage import ProcUsage, Usage
    cg = CgroupFS(str(tree))
    (tree / "work/job/other").mkdir()
    (tree / "work/job/other/cgroup.procs").write_text("103\n")
    (tree / "work/job/child/memory.oom.group").write_text("1\n")
    usage = Usage((ProcUsage(100, TARGET, 50, 50), ProcUsage(102, TARGET + "/child", 30, 30),
                   ProcUsage(103, TARGET + "/other", 80, 80)), precise=True)
    a = actor(cg, proc, FakeSignaller())
    cands, groups = a.candidates(TARGET, KillScope.CHILD, usage, avoid=("other",))
    assert sorted((c.cgroup, c.size, c.mark) for c in cands) == [
        (TARGET + "/child", 30, None), (TARGET + "/other", 80, "avoid")]
    assert groups == {TARGET + "/child"}
    root = tmp_path / "proc"
    for pid in (100, 102, 103):
        with_stat(root, pid, start=pid, comm=b"w%d" % pid)
    cands, _ = a.candidates(TARGET, KillScope.PROCESS, usage, prefer=("w100",))
    assert sorted((c.pid, c.size, c.mark, c.start_time) for c in cands) == [
        (100, 50, "prefer", 100), (102, 30, None, 102), (103, 80, None, 103)]
