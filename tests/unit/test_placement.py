"""A cgroup first seen between two walks: placed from its id alone (core.placement, pure;
CgroupFS.locate on a fake tree; the session's wiring against a fake kernel side)."""

from __future__ import annotations

import errno
import os
import shutil

import pytest

from observer.app.session import Session, Watch
from observer.core.config import Action, Limit
from observer.core.model import Account, Mode
from observer.core.placement import place
from observer.core.ratelimit import Buckets
from observer.host.cgroupfs import CgroupFS, Unlocatable
from observer.host.procfs import PAGE_SIZE
from observer.kernel import wire

from test_session import Host, host  # noqa: F401 - host: the fixture

MiB = 1 << 20


# -- pure ------------------------------------------------------------------------------------
def acc(name, cid):
    return Account(name, cid, Limit(256 * MiB))


CHAIN = [("/", 1), ("/t", 10), ("/t/a", 11), ("/t/a/new", 12)]


def test_the_accounts_of_the_cgroup_and_its_ancestors_cover_it():
    t, a, sib = acc("/t", 10), acc("/t/a", 11), acc("/t/b", 13)
    p = place(CHAIN, {x.name: x for x in (t, a, sib)})
    assert p.covering == (t, a) and p.followed == ()


def test_a_name_only_shared_as_a_prefix_does_not_cover():
    other = acc("/t/a/ne", 99)
    assert place(CHAIN, {other.name: other}).covering == ()


def test_an_account_whose_path_now_leads_elsewhere_follows_it():
    stale, waiting = acc("/t", 7), acc("/t/a/new", 0)   # made again; made at last
    p = place(CHAIN, {x.name: x for x in (stale, waiting)})
    assert p.followed == ((stale, 10), (waiting, 12))
    assert p.covering == (stale, waiting)
    assert stale.cgroup_id == 7   # pure: the caller follows


def test_no_account_nothing_covers():
    assert place(CHAIN, {}) == place([], {"/t": acc("/t", 10)})
    assert place(CHAIN, {}).covering == ()


# -- CgroupFS.locate on a fake tree ------------------------------------------------------------
class LocatingFS(CgroupFS):
    """A fake cgroup mount in a temporary directory where the kernel's open by handle is
    played by a search for the inode (what a kernfs handle is on cgroup2)."""

    gone: set = set()

    def _locate_works(self):
        return True

    def _open_by_id(self, cid):
        for top, dirs, _ in os.walk(self._real):
            for d in [top] + [os.path.join(top, x) for x in dirs]:
                if os.stat(d).st_ino == cid and cid not in self.gone:
                    return os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        raise OSError(errno.ESTALE, "Stale file handle")


def test_locate_gives_the_chain_from_the_root_down(tmp_path):
    (tmp_path / "t" / "a b\tc" / "n").mkdir(parents=True)
    cg = LocatingFS(str(tmp_path))
    cid = cg.cgroup_id("/t/a b\tc/n")
    assert cg.locate(cid) == [("/", cg.cgroup_id("/")), ("/t", cg.cgroup_id("/t")),
                              ("/t/a b\tc", cg.cgroup_id("/t/a b\tc")), ("/t/a b\tc/n", cid)]
    assert cg.locate(cg.cgroup_id("/")) == [("/", cg.cgroup_id("/"))]


def test_locate_says_none_for_a_removed_cgroup(tmp_path):
    (tmp_path / "x").mkdir()
    cg = LocatingFS(str(tmp_path))
    cid = cg.cgroup_id("/x")
    os.rmdir(tmp_path / "x")
    assert cg.locate(cid) is None


def test_a_rename_between_naming_and_reopening_is_unlocatable(tmp_path, monkeypatch):
    (tmp_path / "t" / "n").mkdir(parents=True)
    cg = LocatingFS(str(tmp_path))
    cid = cg.cgroup_id("/t/n")
    real = os.readlink

    def readlink_then_rename(path, *a, **kw):
        out = real(path, *a, **kw)
        os.rename(tmp_path / "t" / "n", tmp_path / "t" / "m")
        (tmp_path / "t" / "n").mkdir()       # another cgroup under the old name
        return out
    monkeypatch.setattr(os, "readlink", readlink_then_rename)
    with pytest.raises(Unlocatable):
        cg.locate(cid)


def test_locate_is_refused_where_handles_do_not_open_cgroups(tmp_path):
    # a plain directory is no kernfs: the probe (the mount's root by its id) fails once
    (tmp_path / "x").mkdir()
    cg = CgroupFS(str(tmp_path))
    with pytest.raises(Unlocatable):
        cg.locate(cg.cgroup_id("/x"))
    assert cg._by_id is False


# -- the session ------------------------------------------------------------------------------
class LocatingHost(Host):
    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        self.cg = LocatingFS(str(self.cgroot))

    def session(self, watches, **kw):
        # walks asked for by events never come due: only placing can cover a new cgroup
        kw.setdefault("tree_gap", 1e9)
        s = super().session(watches, **kw)
        self.walks = lambda: s.walks
        return s


@pytest.fixture
def lhost(tmp_path):
    return LocatingHost(tmp_path)


def new_leaf(cid, ts=5 * 10**9):
    return wire.Event(wire.EV_NEW_LEAF, 0, cid, 0, 0, ts)


def test_a_cgroup_made_after_the_walk_is_covered_from_its_first_event(lhost):
    """A tenant makes /t/new under the watched /t and maps 900 MiB there at once: counted in
    /t's estimate, bounded, and measured from that event, with no walk of the tree."""
    t = lhost.cgroup("/t")
    lhost.process(100, "/t", 50 * MiB, 10 * MiB)
    s = lhost.session([Watch("/t", t, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    walks = s.walks
    new = lhost.cgroup("/t/new")
    lhost.process(200, "/t/new", 900 * MiB, 300 * MiB)
    lhost.probes.vm[new] = 900 * MiB // PAGE_SIZE
    s.on_event(new_leaf(new))
    s.handle_pending()
    assert s.walks == walks and not s.tree_wanted
    assert s.tree[new] == "/t/new" and new in s.leaves_of["/t"]
    assert s.covering(new) == [s.accounts[0]] and new in s.rearm and s.dirty
    s.reconcile()
    assert s.accounts[0].estimate == 950 * MiB
    assert ("kill", "/t") in lhost.log and s.located == 1


def test_a_cgroup_outside_every_watched_one_is_placed_once_and_covered_by_none(lhost):
    t = lhost.cgroup("/t")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    s.start()
    other = lhost.cgroup("/elsewhere/x")
    s.on_event(new_leaf(other))
    s.handle_pending()
    assert s.tree[other] == "/elsewhere/x" and not s.covering(other)
    s.on_event(wire.Event(wire.EV_MOVED, 1, other, 0, t, 6 * 10**9))
    s.handle_pending()
    assert s.located == 1   # in the tree now: not located again


def test_a_removed_cgroup_is_not_placed_and_asks_for_no_walk(lhost):
    t = lhost.cgroup("/t")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    s.start()
    gone = lhost.cgroup("/t/gone")
    shutil.rmtree(lhost.cgroot / "t" / "gone")
    s.on_event(new_leaf(gone))
    s.handle_pending()
    assert gone not in s.tree and not s.tree_wanted and s.located == 0


def test_past_the_budget_new_cgroups_wait_for_the_rate_limited_walk(lhost):
    t = lhost.cgroup("/t")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    s.start()
    s.locate_budget = Buckets(1.0, 3.0)
    ids = [lhost.cgroup(f"/t/c{i}") for i in range(10)]
    for cid in ids:
        s.on_event(new_leaf(cid))
    s.handle_pending()
    assert s.located == 3 and s.locate_deferred == 7 and s.tree_wanted
    assert sum(c in s.tree for c in ids) == 3
    s.tree_gap = 0.0
    s.maybe_refresh()          # the walk takes the rest, and they are reconciled at once
    assert all(c in s.tree and s.covering(c) for c in ids) and s.dirty
    assert set(ids) <= s.rearm


def test_a_walk_that_finds_a_new_cgroup_reconciles_at_once(host):
    """Where cgroups cannot be placed from their id (the fake mount here), the walk asked
    for by the event covers the new cgroup, and the next round (not the next tick) counts
    and bounds it."""
    t = host.cgroup("/t")
    s = host.session([Watch("/t", t, Limit(256 * MiB))], tree_gap=1e9)
    s.start()
    new = host.cgroup("/t/new")
    s.on_event(new_leaf(new))
    s.handle_pending()            # not placed (no handles here): the walk is asked for
    assert s.tree_wanted and not s.covering(new) and s.locate_deferred == 1
    s.dirty = False
    s.reconcile()                 # the round goes on before the walk's gap is over
    assert not s.dirty and new not in s.rearm
    s.tree_gap = 0.0
    s.maybe_refresh()
    assert s.covering(new) and s.dirty and new in s.rearm
    s.reconcile()
    assert new in host.probes.bounds


def test_a_watched_cgroup_made_again_is_followed_from_its_first_event(lhost):
    svc = lhost.cgroup("/svc")
    s = lhost.session([Watch("/svc", svc, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    shutil.rmtree(lhost.cgroot / "svc")
    lhost.cgroup("/other")          # so that the new directory cannot take the old inode
    new = lhost.cgroup("/svc")
    s.on_event(new_leaf(new))
    s.handle_pending()
    rec = lhost.events("recreated", "/svc")
    assert len(rec) == 1 and rec[0]["previous_id"] == svc and rec[0]["cgroup_id"] == new
    assert s.accounts[0].cgroup_id == new and s.leaves_of["/svc"] == [new]
    assert s.walks == 1
    s.refresh_tree()
    assert len(lhost.events("recreated")) == 1 and s.leaves_of["/svc"] == [new]


def test_a_watched_cgroup_waited_for_appears_from_its_first_event(lhost):
    s = lhost.session([Watch("/later", 0, Limit(256 * MiB))])
    s.start()
    cid = lhost.cgroup("/later/job")
    parent = lhost.cg.cgroup_id("/later")
    s.on_event(new_leaf(cid))
    s.handle_pending()
    assert lhost.events("appeared", "/later") and s.accounts[0].cgroup_id == parent
    assert s.covering(cid) == [s.accounts[0]]


def test_under_a_slow_account_a_new_cgroup_is_followed_before_it_is_measured(lhost):
    """/t is slow (a big reservation): a toucher in a new child made resident pages before
    its cgroup was known. Its bounds (slow, following faults) are written before /proc is
    read, and the account is measured at once, its pages included."""
    t = lhost.cgroup("/t/inn")
    top = lhost.cg.cgroup_id("/t")
    lhost.process(100, "/t/inn", 2048 * MiB, 32 * MiB)
    s = lhost.session([Watch("/t", top, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    assert s.accounts[0].mode is Mode.SLOW
    lhost.log.clear()
    new = lhost.cgroup("/t/new")
    lhost.process(200, "/t/new", 600 * MiB, 200 * MiB)
    s.on_event(new_leaf(new))
    s.handle_pending()
    s.reconcile()
    order = lhost.log
    first_bound = order.index(("bounds", new, True))
    assert first_bound < order.index(("statm", 200))
    check = lhost.events("check", "/t")[-1]
    assert check["exact_bytes"] == 232 * MiB
    assert t in s.leaves_of["/t"]


def test_lost_wake_ups_ask_for_a_walk(lhost):
    """A lost wake-up may have been a new cgroup's only EV_NEW_LEAF: a walk (rate-limited by
    its gap) is asked for, so it is not left uncovered until the periodic one."""
    t = lhost.cgroup("/t")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    s.start()
    assert not s.tree_wanted
    lhost.probes.stat[wire.STAT_RINGBUF_FULL] += 3
    s.check_losses()
    assert s.tree_wanted
