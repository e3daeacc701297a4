"""CgroupFS and find_mounts against fake cgroup trees and mountinfo text."""

import errno
import inspect
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import observer.host.cgroupfs as cgroupfs
from observer.host.cgroupfs import CgroupFS, Mounts, find_mounts
from observer.core.errors import BeanwatchError

HYBRID = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""

PURE_V2 = """\
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,relatime shared:4 - cgroup2 cgroup2 rw,memory_recursiveprot
"""


def make_tree(root, files):
    """Materialise {relative path: content} under root; a path ending in "/" is a directory."""
    for rel, content in files.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def mountinfo(tmp_path, text):
    path = tmp_path / "mountinfo"
    path.write_text(text)
    return str(path)


@pytest.fixture
def tree(tmp_path):
    root = make_tree(tmp_path / "cg", {
        "cgroup.procs": "1\n2\n",
        "a/cgroup.procs": "10\n11\n",
        "a/cgroup.events": "populated 1\nfrozen 0\n",
        "a/cgroup.freeze": "0\n",
        "a/cgroup.kill": "",
        "a/memory.max": "1073741824\n",
        "a/b/cgroup.procs": "20\n",
        "a/b/memory.max": "max\n",
        "a/b/c/cgroup.procs": "",
        "d/cgroup.procs": "30\n",
    })
    return root


@pytest.fixture
def cg(tree):
    return CgroupFS(str(tree))


# find_mounts


def test_mounts_hybrid(tmp_path):
    assert find_mounts(mountinfo(tmp_path, HYBRID)) == Mounts(
        cgroup2="/sys/fs/cgroup/unified", memory_v1="/sys/fs/cgroup/memory"
    )


def test_mounts_pure_v2(tmp_path):
    assert find_mounts(mountinfo(tmp_path, PURE_V2)) == Mounts("/sys/fs/cgroup", None)


def test_mounts_none(tmp_path):
    assert find_mounts(mountinfo(tmp_path, HYBRID.splitlines()[0] + "\n\ngarbage\n")) == Mounts(
        None, None
    )


def test_mounts_octal_escapes_and_exact_option_match(tmp_path):
    text = (
        r"41 31 0:38 / /mnt/my\040cg\134x rw - cgroup2 none rw" + "\n"
        r"35 31 0:32 / /mnt/v1 rw - cgroup cgroup rw,name=memory,memoryx" + "\n"
    )
    assert find_mounts(mountinfo(tmp_path, text)) == Mounts("/mnt/my cg\\x", None)


def test_mounts_prefer_whole_hierarchy_over_subtree_bind(tmp_path):
    text = (
        "50 31 0:38 /sub /srv/cg rw - cgroup2 cgroup2 rw\n"
        "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    assert find_mounts(mountinfo(tmp_path, text)).cgroup2 == "/sys/fs/cgroup"


def test_mounts_unreadable(tmp_path):
    with pytest.raises(BeanwatchError, match="cannot read"):
        find_mounts(str(tmp_path / "missing"))


def test_mounts_of_this_host_are_found():
    # Read-only cross-check: every Linux host with cgroups has one of the two.
    mounts = find_mounts()
    if mounts.cgroup2 is None and mounts.memory_v1 is None:
        pytest.skip("no cgroup filesystem mounted here")
    if mounts.cgroup2:
        assert CgroupFS(mounts.cgroup2).resolve(mounts.cgroup2) == "/"


# resolve


@pytest.mark.parametrize(
    "spec, name",
    [
        ("a", "/a"),
        ("a/b", "/a/b"),
        ("/a/b", "/a/b"),
        ("a/b/", "/a/b"),
        ("//a//b//", "/a/b"),
        ("./a/./b", "/a/b"),
        ("/", "/"),
        (".", "/"),
    ],
)
def test_resolve_relative(cg, spec, name):
    assert cg.resolve(spec) == name


def test_resolve_absolute_inside_mount(cg, tree):
    assert cg.resolve(f"{tree}/a/b") == "/a/b"
    assert cg.resolve(f"{tree}/a/b/") == "/a/b"
    assert cg.resolve(str(tree)) == "/"
    assert cg.resolve(f"{tree}/") == "/"


def test_resolve_mount_given_with_trailing_slash(tree):
    assert CgroupFS(f"{tree}/").resolve(f"{tree}/a") == "/a"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("a\0b", "NUL or newline"),
        ("a\nb", "NUL or newline"),
        ("../etc", r"'\.\.'"),
        ("a/../../b", r"'\.\.'"),
        ("a/..", r"'\.\.'"),
        ("/..", r"'\.\.'"),
        ("nope", "no cgroup"),
        ("a/cgroup.procs/x", "no cgroup"),
        ("a/cgroup.procs", "not a directory"),
    ],
)
def test_resolve_rejects(cg, spec, message):
    with pytest.raises(BeanwatchError, match=message):
        cg.resolve(spec)


def test_resolve_rejects_absolute_dotdot_out_of_mount(cg, tree):
    with pytest.raises(BeanwatchError, match=r"'\.\.'"):
        cg.resolve(f"{tree}/../cg/a")


def test_resolve_rejects_symlink_out_of_mount(cg, tree, tmp_path):
    (tmp_path / "outside").mkdir()
    (tree / "a" / "escape").symlink_to(tmp_path / "outside")
    with pytest.raises(BeanwatchError, match="leads outside"):
        cg.resolve("a/escape")


def test_resolve_symlink_inside_mount_gives_real_name(cg, tree):
    (tree / "alias").symlink_to(tree / "a" / "b")
    assert cg.resolve("alias") == "/a/b"


def test_resolve_rejects_another_filesystem():
    # "/" as the mount and /proc below it: a real mount boundary, read-only.
    if os.stat("/").st_dev == os.stat("/proc").st_dev:
        pytest.skip("/proc is not a separate mount here")
    with pytest.raises(BeanwatchError, match="another filesystem"):
        CgroupFS("/").resolve("proc")


def test_missing_mount_is_our_error(tmp_path):
    with pytest.raises(BeanwatchError, match="cannot use cgroup mount"):
        CgroupFS(str(tmp_path / "missing"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.text(alphabet="ab./\0\n\\ c", max_size=12))
def test_resolve_gives_a_real_canonical_name_or_our_error(cg, tree, spec):
    try:
        name = cg.resolve(spec)
    except BeanwatchError as e:
        assert "\n" not in str(e).replace("\\n", "")
        return
    assert name == "/" or (name.startswith("/") and not name.endswith("/"))
    assert ".." not in name.split("/") and "//" not in name
    assert os.path.isdir(cg.path(name))
    assert os.path.realpath(cg.path(name)).startswith(os.path.realpath(tree))


# reading


def test_path_and_id(cg, tree):
    assert cg.path("/") == str(tree)
    assert cg.path("/a/b") == f"{tree}/a/b"
    assert cg.cgroup_id("/a/b") == os.stat(tree / "a" / "b").st_ino


def test_walk(cg, tree):
    (tree / "a" / "link").symlink_to(tree / "d")  # not followed
    ino = lambda rel: os.stat(tree / rel).st_ino  # noqa: E731
    assert cg.walk() == {
        ino(""): "/", ino("a"): "/a", ino("a/b"): "/a/b", ino("a/b/c"): "/a/b/c", ino("d"): "/d",
    }
    assert cg.walk("/a/b") == {ino("a/b"): "/a/b", ino("a/b/c"): "/a/b/c"}


def test_walk_missing_top(cg):
    assert cg.walk("/gone") == {}


def failing_scandir(monkeypatch, tree, rel, err):
    """os.scandir fails with err on the directory tree/rel (listed through its fd)."""
    real_scandir = os.scandir
    target = os.stat(tree / rel).st_ino

    def scandir(fd):
        if os.fstat(fd).st_ino == target:
            raise OSError(err, os.strerror(err))
        return real_scandir(fd)

    monkeypatch.setattr(cgroupfs.os, "scandir", scandir)


@pytest.mark.parametrize("err", [errno.ENOENT, errno.ENODEV])
def test_walk_skips_directories_vanishing_midway(cg, tree, monkeypatch, err):
    failing_scandir(monkeypatch, tree, "a/b", err)
    assert sorted(cg.walk().values()) == ["/", "/a", "/a/b", "/d"]
    assert cg.skipped == {}


@pytest.mark.parametrize("err", [errno.EACCES, errno.EMFILE, errno.ENAMETOOLONG])
def test_walk_passes_over_what_it_cannot_read_and_notes_it(cg, tree, monkeypatch, err):
    failing_scandir(monkeypatch, tree, "a", err)
    assert sorted(cg.walk().values()) == ["/", "/a", "/d"]
    assert cg.skipped == {"/a": os.strerror(err)}
    monkeypatch.undo()
    cg.walk()
    assert cg.skipped == {}


@pytest.mark.parametrize("lazy", [False, True], ids=["listed", "lazily"])
def test_a_big_directory_is_listed_as_the_walk_goes(cg, tree, monkeypatch, lazy):
    """A directory with more than LAZY_LISTING subdirectories (a tenant's thousands) is
    listed during the walk, not in one step: the same cgroups are found, a listing that
    fails is still noted."""
    if lazy:
        monkeypatch.setattr(cgroupfs, "LAZY_LISTING", 3)
    for i in range(10):
        (tree / "d" / f"c{i}").mkdir()
    fd = os.open(tree / "d", os.O_RDONLY)
    try:
        assert inspect.isgenerator(cg._subdirs(fd, "/d", {})) == lazy
    finally:
        os.close(fd)
    found = dict(cg.walk_steps())
    assert sorted(found.values()) == sorted(["/", "/a", "/a/b", "/a/b/c", "/d"]
                                            + [f"/d/c{i}" for i in range(10)])
    failing_scandir(monkeypatch, tree, "d", errno.EACCES)
    assert sorted(cg.walk().values()) == ["/", "/a", "/a/b", "/a/b/c", "/d"]
    assert cg.skipped == {"/d": os.strerror(errno.EACCES)}


def test_walk_of_an_unreadable_mount_is_our_error(tmp_path):
    cg = CgroupFS(str(tmp_path))
    (tmp_path / "x").write_text("")
    cg.root = str(tmp_path / "x")   # not a directory: ENOTDIR
    with pytest.raises(BeanwatchError, match="cannot read cgroup /"):
        cg.walk()


NAME = "n" * 250


def deep_chain(root, depth=20, name=NAME):
    """depth nested directories of long names under root, made through dir fds (the whole
    path is longer than PATH_MAX); returns the canonical name of the deepest."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            part = f"{i:02d}{name[2:]}"
            os.mkdir(part, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            for f, text in (("cgroup.procs", f"{1000 + i}\n"), ("cgroup.kill", ""),
                            ("cgroup.freeze", "0\n"), ("memory.max", f"{(i + 1) << 20}\n")):
                w = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=child)
                os.write(w, text.encode())
                os.close(w)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return "/" + "/".join(f"{i:02d}{name[2:]}" for i in range(depth))


def test_a_chain_deeper_than_path_max_is_walked_read_and_acted_on(cg, tree):
    deep = "/d" + deep_chain(tree / "d")
    assert len(cg.path(deep)) > 4096
    names = cg.walk().values()
    assert deep in names and cg.skipped == {}
    assert sum(n.startswith("/d/") for n in names) == 20
    assert cg.procs(deep) == [1019]
    assert sorted(cg.subtree_procs("/d")) == [30] + list(range(1000, 1020))
    assert cg.memory_limit(deep) == 20 << 20
    assert cg.resolve(deep) == deep
    assert cg.resolve(cg.path(deep)) == deep
    cid = cg.cgroup_id(deep)
    assert cid in cg.walk() and cg.walk()[cid] == deep
    assert cg.has_kill(deep) and cg.has_freeze(deep)
    assert cg.kill(deep) and cg.freeze(deep, True)
    with cg._dir(deep) as fd:
        assert os.read(os.open("cgroup.kill", os.O_RDONLY, dir_fd=fd), 10) == b"1"
    assert cg.procs_by_cgroup("/d")[cid] == [1019]


def test_a_long_path_through_a_symlink_is_refused(cg, tree):
    deep = deep_chain(tree / "a")
    (tree / "link").symlink_to(tree / "a")
    with pytest.raises(BeanwatchError, match="symlink"):
        cg.resolve("/link" + deep)
    assert cg.resolve("/nowhere" + deep, missing_ok=True) == "/nowhere" + deep


def test_resolve_missing_ok_gives_the_lexical_name(cg):
    assert cg.resolve("x/./y", missing_ok=True) == "/x/y"
    with pytest.raises(BeanwatchError, match="no cgroup '/proc'"):
        cg.resolve("/proc", missing_ok=True)   # exists, outside the mount: a mistake
    with pytest.raises(BeanwatchError, match="no cgroup"):
        cg.resolve("x/y")
    with pytest.raises(BeanwatchError, match=r"\.\."):
        cg.resolve("x/../y", missing_ok=True)


def test_count_from_cgroup_stat_or_a_walk(cg, tree):
    assert cg.count() == 5    # no cgroup.stat in the fake: walked
    (tree / "cgroup.stat").write_text("nr_descendants 41\nnr_dying_descendants 2\n")
    assert cg.count() == 44


def test_procs(cg, tree):
    (tree / "d" / "cgroup.procs").write_text("30\n31\n30\n")
    assert cg.procs("/a") == [10, 11]
    assert cg.procs("/a/b/c") == []
    assert cg.procs("/d") == [30, 31]
    assert cg.procs("/gone") == []


def test_procs_enodev_reads_as_empty(cg, monkeypatch):
    def enodev(path, *args, **kwargs):
        raise OSError(errno.ENODEV, "No such device", path)

    monkeypatch.setattr(cgroupfs, "open", enodev, raising=False)
    assert cg.procs("/a") == []
    assert cg.events("/a") == {}


def test_subtree_procs(cg):
    assert sorted(cg.subtree_procs("/a")) == [10, 11, 20]
    assert sorted(cg.subtree_procs("/")) == [1, 2, 10, 11, 20, 30]
    assert cg.subtree_procs("/gone") == []


def test_memory_limit_v2(cg):
    assert cg.memory_limit("/a") == 1 << 30
    assert cg.memory_limit("/a/b") is None  # "max"
    assert cg.memory_limit("/d") is None  # no memory.max, no v1
    assert cg.memory_limit("/gone") is None


def test_memory_limit_v1_fallback(tree, tmp_path):
    v1 = make_tree(tmp_path / "mem", {
        "memory.limit_in_bytes": "9223372036854771712\n",
        "d/memory.limit_in_bytes": "536870912\n",
        "a/b/memory.limit_in_bytes": "4096\n",
    })
    cg = CgroupFS(str(tree), memory_v1=str(v1))
    assert cg.memory_limit("/") is None  # PAGE_COUNTER_MAX: unlimited
    assert cg.memory_limit("/d") == 512 << 20
    assert cg.memory_limit("/a") == 1 << 30  # memory.max wins when present
    assert cg.memory_limit("/a/b") is None  # and "max" there stays unlimited
    assert cg.memory_limit("/a/b/c") is None  # in neither


def test_memory_limit_malformed(cg, tree):
    (tree / "d" / "memory.max").write_text("lots\n")
    with pytest.raises(BeanwatchError, match="malformed memory limit 'lots' of /d"):
        cg.memory_limit("/d")


def test_events(cg):
    assert cg.events("/a") == {"populated": 1, "frozen": 0}
    assert cg.events("/gone") == {}


def test_has_kill_and_freeze(cg):
    assert cg.has_kill("/a") and cg.has_freeze("/a")
    assert not cg.has_kill("/d") and not cg.has_freeze("/d")
    assert not cg.has_kill("/gone")


# writing


def test_freeze_and_thaw_write(cg, tree):
    assert cg.freeze("/a", True) is True
    assert (tree / "a" / "cgroup.freeze").read_text() == "1"
    assert cg.freeze("/a", False) is True
    assert (tree / "a" / "cgroup.freeze").read_text() == "0"


def test_kill_writes(cg, tree):
    assert cg.kill("/a") is True
    assert (tree / "a" / "cgroup.kill").read_text() == "1"


def test_writes_to_a_gone_cgroup_return_false(cg, tree):
    assert cg.kill("/gone") is False
    assert cg.freeze("/gone", True) is False
    assert not (tree / "gone").exists()


def test_write_to_missing_file_in_live_cgroup_is_our_error_and_creates_nothing(cg, tree):
    with pytest.raises(BeanwatchError, match="cgroup.kill"):
        cg.kill("/d")
    assert not (tree / "d" / "cgroup.kill").exists()


def test_write_enodev_returns_false(cg, monkeypatch):
    def enodev(path, flags, *args, **kwargs):
        raise OSError(errno.ENODEV, "No such device", path)

    monkeypatch.setattr(cgroupfs.os, "open", enodev)
    assert cg.freeze("/a", True) is False


def test_write_other_errors_are_our_error(cg, tree):
    (tree / "d" / "cgroup.freeze").mkdir()
    with pytest.raises(BeanwatchError, match="cannot write '1' to .*cgroup.freeze"):
        cg.freeze("/d", True)


@pytest.mark.parametrize(
    "name, chain",
    [("/", ["/"]), ("/a", ["/a", "/"]), ("/a/b/c", ["/a/b/c", "/a/b", "/a", "/"])],
)
def test_ancestors_or_self(name, chain):
    assert CgroupFS.ancestors_or_self(name) == chain
