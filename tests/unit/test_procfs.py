"""ProcFS against fake /proc trees."""

import os

import pytest

from observer.core.errors import BeanwatchError
from observer.host.procfs import PAGE_SIZE, ProcFS, ProcStat, ProcStatus


def make_tree(root, files):
    """Materialise {relative path: str or bytes} under root."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def status_text(name="bash", state="S (sleeping)", pid=42, ppid=1, threads=1, vm=True):
    lines = [
        f"Name:\t{name}", "Umask:\t0022", f"State:\t{state}", f"Tgid:\t{pid}", "Ngid:\t0",
        f"Pid:\t{pid}", f"PPid:\t{ppid}", "TracerPid:\t0", "Uid:\t0\t0\t0\t0",
    ]
    if vm:
        lines += ["VmPeak:\t   9000 kB", "VmSize:\t    8000 kB", "VmRSS:\t    3000 kB"]
    lines += [f"Threads:\t{threads}", "SigQ:\t0/96364"]
    return "\n".join(lines) + "\n"


def stat_bytes(comm: bytes, pid=42, state=b"S", ppid=1, start=777):
    # 52 fields in all; comm is field 2, state 3, ppid 4, starttime 22.
    after = [state, str(ppid).encode()] + [b"0"] * 17 + [str(start).encode()] + [b"0"] * 30
    return str(pid).encode() + b" (" + comm + b") " + b" ".join(after) + b"\n"


@pytest.fixture
def proc(tmp_path):
    return ProcFS(str(tmp_path))


def test_pids_lists_numeric_entries_only(tmp_path, proc):
    for name in ["1", "42", "7", "self", "sys", "²", "12a"]:
        (tmp_path / name).mkdir()
    (tmp_path / "meminfo").write_text("")
    assert proc.pids() == [1, 7, 42]


def test_status_user_process(tmp_path, proc):
    make_tree(tmp_path, {"42/status": status_text(threads=3)})
    assert proc.status(42) == ProcStatus(
        pid=42, name="bash", state="S", tgid=42, ppid=1, threads=3,
        vm_size=8000 * 1024, vm_rss=3000 * 1024,
    )


def test_status_kernel_thread_has_no_vm_lines(tmp_path, proc):
    make_tree(tmp_path, {"2/status": status_text(name="kthreadd", pid=2, ppid=0, vm=False)})
    st = proc.status(2)
    assert (st.name, st.vm_size, st.vm_rss) == ("kthreadd", 0, 0)


def test_status_name_keeps_spaces_tabs_and_colons(tmp_path, proc):
    make_tree(tmp_path, {"42/status": status_text(name=" a:\tb \\n")})
    assert proc.status(42).name == " a:\tb \\n"


def test_status_gone(proc):
    assert proc.status(999) is None


def test_status_malformed_is_our_error(tmp_path, proc):
    make_tree(tmp_path, {"42/status": "Name:\tx\nState:\tS\n"})
    with pytest.raises(BeanwatchError, match="malformed"):
        proc.status(42)


@pytest.mark.parametrize("exc", [FileNotFoundError, ProcessLookupError])
def test_vanishing_process_reads_as_gone(proc, monkeypatch, exc):
    # ESRCH comes from reading a file of a process that exited after its directory was opened.
    def vanish(pid, name):
        raise exc(2, "gone")

    monkeypatch.setattr(proc, "_read", vanish)
    assert proc.status(1) is None
    assert proc.stat(1) is None
    assert proc.statm(1) is None
    assert proc.cgroup2_path(1) is None
    assert proc.is_zombie(1) is False


@pytest.mark.parametrize(
    "exc", [PermissionError(13, "Permission denied", "/proc/1/stat"), OSError(5, "I/O error")]
)
def test_other_os_errors_are_our_error(proc, monkeypatch, exc):
    def broken(pid, name):
        raise exc

    monkeypatch.setattr(proc, "_read", broken)
    with pytest.raises(BeanwatchError, match=f"cannot read .*1.*: {exc.strerror}"):
        proc.stat(1)


def test_a_file_it_may_not_read_is_unreadable_not_any_error(proc, monkeypatch):
    """EACCES (smaps_rollup of a process whose capabilities beanwatch's do not cover):
    Unreadable, which the precise tier handles; an I/O error stays a plain BeanwatchError."""
    from observer.core.errors import Unreadable

    def denied(pid, name):
        raise PermissionError(13, "Permission denied", f"/proc/{pid}/{name}")

    monkeypatch.setattr(proc, "_read", denied)
    with pytest.raises(Unreadable, match="cannot read /proc/7/smaps_rollup: Permission denied"):
        proc.smaps_rollup(7)

    def broken(pid, name):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(proc, "_read", broken)
    with pytest.raises(BeanwatchError) as e:
        proc.smaps_rollup(7)
    assert not isinstance(e.value, Unreadable)


def test_statm_in_bytes(tmp_path, proc):
    make_tree(tmp_path, {"42/statm": "765 399 370 5 0 123 0\n"})
    assert proc.statm(42) == (765 * PAGE_SIZE, 399 * PAGE_SIZE)


@pytest.mark.parametrize(
    "text, path",
    [
        ("0::/\n", "/"),
        ("0::/a/b\n", "/a/b"),
        ("9:name=systemd:/\n4:memory:/x/y\n1:cpu:/\n0::/u.slice/s.scope\n", "/u.slice/s.scope"),
        ("0::/a/dead (deleted)\n", "/a/dead (deleted)"),
        # Names may hold newlines; the kernel prints them raw on the last line.
        ("4:memory:/\n0::/a/x\ny\n", "/a/x\ny"),
        ("4:memory:/x\n1:cpu:/\n", None),
        ("", None),
    ],
)
def test_cgroup2_path(tmp_path, proc, text, path):
    make_tree(tmp_path, {"42/cgroup": text})
    assert proc.cgroup2_path(42) == path


def test_cgroup2_path_gone(proc):
    assert proc.cgroup2_path(42) is None


@pytest.mark.parametrize(
    "comm, expected",
    [
        (b"bash", "bash"),
        (b"foo) Z ", "foo) Z "),
        (b"()()())))(((", "()()())))((("),
        (b"a\nb) S 1 2\n", "a\nb) S 1 2\n"),
        (b"", ""),
        (b" ", " "),
        ("caf\u00e9".encode()[:-1], "caf\ufffd"),  # UTF-8 cut mid-character
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
def test_stat_hostile_comm(tmp_path, proc, comm, expected):
    make_tree(tmp_path, {"42/stat": stat_bytes(comm)})
    assert proc.stat(42) == ProcStat(pid=42, comm=expected, state="S", ppid=1, start_time=777)


@pytest.mark.parametrize("data", [b"", b"42 bash S 1", b"42 (bash) S", b"x (bash) S 1\n"])
def test_stat_malformed_is_our_error(tmp_path, proc, data):
    make_tree(tmp_path, {"42/stat": data})
    with pytest.raises(BeanwatchError, match="malformed"):
        proc.stat(42)


@pytest.mark.parametrize(
    "state, threads, zombie",
    [
        ("Z (zombie)", 1, True),
        # An exited leader whose other threads run on: the process still holds memory.
        ("Z (zombie)", 2, False),
        ("S (sleeping)", 1, False),
        ("R (running)", 4, False),
    ],
)
def test_is_zombie(tmp_path, proc, state, threads, zombie):
    make_tree(tmp_path, {"42/status": status_text(state=state, threads=threads, vm=not zombie)})
    assert proc.is_zombie(42) is zombie


def test_is_zombie_gone(proc):
    assert proc.is_zombie(42) is False


def test_real_proc_self_when_available():
    # Cross-check against the live /proc: our own process.
    proc = ProcFS()
    pid = os.getpid()
    st, stat = proc.status(pid), proc.stat(pid)
    assert st.pid == st.tgid == stat.pid == pid
    assert stat.ppid == st.ppid == os.getppid()
    assert st.vm_rss > 0 and proc.statm(pid)[1] > 0
    assert pid in proc.pids()


def test_cgroup2_path_longer_than_a_page(tmp_path, proc):
    deep = "/" + "/".join(f"{i:02d}" + "x" * 248 for i in range(20))
    text = "12:memory:" + deep + "\n1:name=systemd:/x\n0::" + deep + "\n"
    assert len(text) > 2 * 4096
    make_tree(tmp_path, {"42/cgroup": text})
    assert proc.cgroup2_path(42) == deep


def test_cgroup2_path_past_path_max_refused_by_the_kernel_is_unknown(proc, monkeypatch):
    import errno

    def too_long(pid, name):
        raise OSError(errno.ENAMETOOLONG, "File name too long")
    monkeypatch.setattr(proc, "_read", too_long)
    assert proc.cgroup2_path(42) is None
