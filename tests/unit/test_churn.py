"""A tenant churning cgroups (made, entered, left and removed by the thousand a second): what
the session does per event and per round, against the fake kernel side of test_session."""

from __future__ import annotations

import shutil
import time

from observer.app import session as session_mod
from observer.app.session import Session, Watch
from observer.core.config import Action, Limit
from observer.core.model import LeafBounds
from observer.kernel import wire

from test_placement import LocatingHost, lhost, new_leaf  # noqa: F401 - lhost: the fixture
from test_session import FakeProbes

MiB = 1 << 20


def moved(cid, old, ts=5 * 10**9):
    return wire.Event(wire.EV_MOVED, 1, cid, 0, old, ts)


def watched(lhost):
    t = lhost.cgroup("/t")
    home = lhost.cgroup("/home")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB, None, Action.KILL))])
    s.start()
    s.dirty = False
    return s, t, home


def test_events_of_a_cgroup_no_account_covers_make_no_round(lhost):
    s, t, home = watched(lhost)
    for i in range(5):
        s.on_event(moved(home, 0, ts=(5 + i) * 10**9))
    s.handle_pending()
    assert not s.dirty and home not in s.rearm and s.events_seen == 5


def test_a_process_leaving_a_covered_cgroup_for_an_uncovered_one_reconciles_it(lhost):
    s, t, home = watched(lhost)
    s.on_event(moved(home, t))
    s.handle_pending()
    assert s.dirty and t in s.rearm and home not in s.rearm


def test_a_cgroup_gone_before_its_first_event_is_handled_costs_no_round(lhost):
    """The churner's cycle: mkdir, a process in and out, rmdir, all before the loop's
    round: nothing to place, nothing to reconcile, no walk."""
    s, t, home = watched(lhost)
    gone = lhost.cgroup("/t/c0")
    shutil.rmtree(lhost.cgroot / "t" / "c0")
    s.on_event(new_leaf(gone))
    s.on_event(moved(gone, home))
    s.on_event(moved(home, gone))
    s.handle_pending()
    assert not s.dirty and gone not in s.tree and not s.tree_wanted and s.located == 0


def test_a_cgroup_that_survives_is_covered_at_once_however_many_events_it_sent(lhost):
    s, t, home = watched(lhost)
    new = lhost.cgroup("/t/stays")
    lhost.process(200, "/t/stays", 900 * MiB, 300 * MiB)
    lhost.probes.vm[new] = 900 * MiB // 4096
    s.on_event(new_leaf(new))
    s.on_event(moved(new, home))
    s.on_event(moved(home, new))
    s.on_event(moved(new, home))
    s.handle_pending()
    assert s.located == 1 and s.covering(new) == [s.accounts[0]] and s.dirty
    s.reconcile()
    assert new in lhost.probes.bounds and ("kill", "/t") in lhost.log


def test_a_rounds_events_of_one_cgroup_take_the_rate_limit_once_each(lhost):
    s, t, home = watched(lhost)
    burst = int(s.buckets.burst)
    for i in range(burst + 7):
        s.on_event(moved(t, home, ts=5 * 10**9))
    s.handle_pending()
    assert s.events_throttled == 7 and t in s.resync and s.dirty


class DeadProbes(FakeProbes):
    """apply_bounds of the kernel side: no entry for a removed cgroup's id."""

    def __init__(self, log):
        super().__init__(log)
        self.dead: set[int] = set()
        self.read: list = []

    def set_bounds(self, cid, b):
        if cid in self.dead:
            return wire.BOUNDS_GONE
        return super().set_bounds(cid, b)

    def counters_of(self, cids):
        self.read.append(set(cids))
        return {c: (self.vm.get(c, 0), self.growth.get(c, 0)) for c in cids
                if c in self.vm or c in self.growth}

    def counters(self):
        self.read.append("all")
        return super().counters()


def dead_session(lhost):
    t = lhost.cgroup("/t")
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    lhost.probes = s.probes = DeadProbes(lhost.log)
    s.start()
    return s, t


def test_a_placed_cgroup_found_removed_at_its_bounds_write_is_dropped_at_once(lhost):
    """Placed alive, removed before the round's bounds write: out of the tree and the
    account's cover without a walk, so the others' shares are not spread over the dead."""
    s, t = dead_session(lhost)
    alive, dying = lhost.cgroup("/t/alive"), lhost.cgroup("/t/dying")
    s.on_event(new_leaf(alive))
    s.on_event(new_leaf(dying))
    s.handle_pending()
    assert set(s.leaves_of["/t"]) == {t, alive, dying}
    lhost.probes.dead.add(dying)
    s.reconcile()
    assert s.leaves_of["/t"] == [t, alive] and dying not in s.tree
    assert dying not in s.covered_by and dying not in s.written and s.dropped == 1
    assert alive in lhost.probes.bounds and dying not in lhost.probes.bounds
    walks = s.walks
    s.reconcile()
    assert s.walks == walks


def test_a_reconcile_reads_the_counters_of_the_covered_cgroups_alone(lhost):
    s, t = dead_session(lhost)
    other = lhost.cgroup("/elsewhere")
    s.refresh_tree()
    lhost.probes.vm.update({t: 10, other: 20})
    lhost.probes.read.clear()
    s.reconcile()
    assert lhost.probes.read and all(r == {t} for r in lhost.probes.read)


def test_past_the_by_key_bound_the_whole_map_is_read(lhost, monkeypatch):
    monkeypatch.setattr(session_mod, "COUNTERS_BY_KEY_MIN", 1)
    s, t = dead_session(lhost)
    for i in range(3):
        lhost.cgroup(f"/t/c{i}")
    s.refresh_tree()
    lhost.probes.read.clear()
    s.reconcile()
    assert "all" in lhost.probes.read and s.map_entries == 0


class Busy(FakeProbes):
    """An event at every poll, as from a tenant churning without pause."""

    def __init__(self, log, session_ref, cid):
        super().__init__(log)
        self.session_ref, self.cid, self.polls = session_ref, cid, 0

    def poll(self, timeout_ms):
        self.polls += 1
        self.session_ref[0].on_event(moved(self.cid, 0))


def test_while_events_keep_coming_a_round_starts_at_most_every_round_min(lhost):
    t, home = lhost.cgroup("/t"), lhost.cgroup("/home")
    ref = []
    s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
    s.probes = lhost.probes = Busy(lhost.log, ref, home)
    ref.append(s)
    s.clock = time.time
    s.start()
    seconds = 0.1
    s.run(seconds, lambda: False)
    # time.sleep sleeps at least as long as asked: a bound that cannot fail by chance
    assert lhost.probes.polls <= seconds / session_mod.ROUND_MIN + 2, lhost.probes.polls
    assert s.events_seen == lhost.probes.polls


def test_an_idle_loop_is_not_paced(lhost):
    s, t, home = watched(lhost)
    s.busy, s.round_at = False, time.monotonic()
    assert s.pace(0.2) == 0.2          # no event last round: the next one is waited for
    s.busy, s.round_at = True, time.monotonic()
    assert s.pace(0.2) < 0.2           # busy: part of the wait was spent pacing


def test_events_about_a_covered_cgroup_are_never_paced(lhost, monkeypatch):
    """A crossing or a move in a watched cgroup every round: each round starts at once."""
    slept = []
    monkeypatch.setattr(session_mod.time, "sleep", slept.append)
    for cid_of, paced in ((lambda t, home: t, False), (lambda t, home: home, True)):
        t, home = lhost.cgroup("/t"), lhost.cgroup("/home")
        ref = []
        s = lhost.session([Watch("/t", t, Limit(256 * MiB))])
        s.probes = lhost.probes = Busy(lhost.log, ref, cid_of(t, home))
        ref.append(s)
        s.clock = time.time
        s.start()
        slept.clear()
        s.run(5.0, lambda: lhost.probes.polls >= 20)
        assert bool(slept) is paced and lhost.probes.polls >= 20


def test_a_cgroup_placed_during_a_walk_and_missed_by_it_stays_in_the_tree(lhost, monkeypatch):
    """Made after the sliced walk passed its parent, a cgroup is placed from its first event
    (a round between slices) under the account covering it; the walk does not find it, and
    the tree it installs keeps it, still covered (its pages stay in the estimate)."""
    monkeypatch.setattr(session_mod, "WALK_SLICE", 0.0)
    monkeypatch.setattr(session_mod, "WALK_SLICE_MIN", 1)   # a slice: 16 cgroups
    s, t, home = watched(lhost)
    for i in range(100):
        lhost.cgroup(f"/u/c{i}")
    s.begin_walk()
    assert s.walker is not None and t in s.walk_found   # /t is behind it already
    late = lhost.cgroup("/t/late")
    s.on_event(new_leaf(late))
    s.handle_pending()
    assert s.located == 1 and late in s.tree and late in s.leaves_of["/t"]
    while s.walker is not None:
        s.maybe_refresh()
    assert late in s.tree and late in s.leaves_of["/t"] and s.covering(late) == [s.accounts[0]]
