"""`beanwatch trace`'s Python side: kinds named from the event, records built from it, and
resident growth per interval diffed from the session's checks (rss)."""

from dataclasses import dataclass, field

from observer.app.trace import (Grown, Measured, RssIntervals, Tracer, growth_kind, rss_growth,
                                signed64)
from observer.core.config import Limit
from observer.core.model import Account, Mode
from observer.core.sizes import PAGE_SIZE
from observer.core.usage import ProcUsage, Usage
from observer.kernel import wire
from observer.output import render


def test_kinds():
    assert growth_kind(wire.EV_GROW_EXEC, 0, "x86_64") == "exec"
    assert growth_kind(wire.EV_GROW_FORK, 9, "x86_64") == "fork"
    assert growth_kind(wire.EV_GROW, wire.GROW_NO_SYSCALL, "x86_64") == "stack"
    assert [growth_kind(wire.EV_GROW, nr, "x86_64") for nr in (9, 12, 25, 30, 59)] == \
        ["mmap", "brk", "mremap", "shm", "exec"]
    assert growth_kind(wire.EV_GROW, 0, "x86_64") == "mapping"        # read(): not a mapping call
    assert growth_kind(wire.EV_GROW, wire.GROW_UNKNOWN, "x86_64") == "mapping"
    assert growth_kind(wire.EV_GROW, 9, "aarch64") == "mapping"       # other numbers: not named
    assert growth_kind(wire.EV_GROW, wire.GROW_NO_SYSCALL, "aarch64") == "stack"


@dataclass
class Status:
    name: str


@dataclass
class FakeProcfs:
    comms: dict

    def status(self, pid):
        return Status(self.comms[pid]) if pid in self.comms else None


@dataclass
class Acc:
    name: str


@dataclass
class FakeSession:
    tree: dict
    seed: dict
    covered_by: dict
    procfs: FakeProcfs
    refreshed: int = 0
    accounts: list = field(default_factory=list)
    unknown: set = field(default_factory=set)
    located: dict = field(default_factory=dict)   # what place_unknown can place by id
    due_in: float = 0.0

    def refresh_tree(self):
        self.refreshed += 1
        self.tree[99] = "/late"

    def place_unknown(self):
        ids, self.unknown = self.unknown, set()
        self.tree.update({cid: self.located[cid] for cid in ids if cid in self.located})

    def tree_due_in(self):
        return self.due_in


def test_records_carry_exact_bytes_and_the_estimate_with_the_seed():
    s = FakeSession({7: "/job"}, {7: 100}, {7: [Acc("/job")], 8: [Acc("/other")]},
                    FakeProcfs({42: "hog"}))
    out = []
    t = Tracer(s, out.append, min_pages=16, names=frozenset({"/job"}), clock=lambda: 1000.0,
               monotonic_ns=lambda: 5_000_000_000)
    t.on_growth(wire.Event(wire.EV_GROW, 42, 7, 16, 1000, 4_000_000_000, 9))
    t.on_growth(wire.Event(wire.EV_GROW, 42, 7, 15, 1000, 4_000_000_000, 9))     # below: dropped
    t.on_growth(wire.Event(wire.EV_GROW_FORK, 43, 8, 64, 5, 4_000_000_000, 0))    # not traced
    t.flush()
    assert len(out) == 1
    rec = out[0]
    assert rec["event"] == "grow" and rec["cgroup"] == "/job" and rec["ts"] == 999.0
    assert (rec["pid"], rec["comm"], rec["kind"]) == (42, "hog", "mmap")
    assert rec["bytes"] == 16 * PAGE_SIZE and rec["estimate_bytes"] == 1100 * PAGE_SIZE
    line = render.trace_line(rec)
    assert line.split()[1:] == ["/job", "-", "42", "hog", "mmap", str(16 * PAGE_SIZE),
                                render.format_size(1100 * PAGE_SIZE)]
    assert render.trace_header().split() == list(render.TRACE_COLUMNS)


def test_every_cgroup_and_one_made_since():
    s = FakeSession({}, {}, {}, FakeProcfs({}))
    out = []
    t = Tracer(s, out.append, min_pages=1)
    t.on_growth(wire.Event(wire.EV_GROW, 5, 99, 1, (1 << 64) - 3, 0, -1))
    t.flush()
    assert s.refreshed == 1
    assert out[0]["cgroup"] == "/late" and out[0]["comm"] is None and out[0]["kind"] == "stack"
    assert out[0]["estimate_bytes"] == 0          # a negative kernel count shows as 0
    assert signed64((1 << 64) - 3) == -3 and signed64(5) == 5


def test_a_cgroup_made_since_is_placed_by_id_and_the_walk_waits_for_its_gap():
    s = FakeSession({}, {}, {}, FakeProcfs({}), located={98: "/fresh"}, due_in=5.0)
    out = []
    t = Tracer(s, out.append, min_pages=1)
    t.on_growth(wire.Event(wire.EV_GROW, 5, 98, 1, 1, 0, -1))
    t.flush()
    assert out[0]["cgroup"] == "/fresh" and s.refreshed == 0     # placed: no walk
    for _ in range(3):                  # not placeable, the walk not due: no walk per event
        t.on_growth(wire.Event(wire.EV_GROW, 5, 99, 1, 1, 0, -1))
        t.flush()
    assert s.refreshed == 0 and out[-1]["cgroup"] is None and out[-1]["cgroup_id"] == 99
    assert "id:99" in render.trace_line(out[-1])
    s.due_in = 0.0
    t.on_growth(wire.Event(wire.EV_GROW, 5, 99, 1, 1, 0, -1))
    t.flush()
    assert s.refreshed == 1 and out[-1]["cgroup"] == "/late"


# -- rss growth per interval in slow mode ----------------------------------------------------

MiB = 1 << 20


def test_rss_growth_threshold_new_gone_and_shrunk():
    before = {1: 10 * MiB, 2: 5 * MiB, 3: 8 * MiB, 4: 1 * MiB}
    after = {1: 11 * MiB, 2: 5 * MiB + MiB - 4096, 3: 2 * MiB, 5: 3 * MiB, 6: MiB - 4096}
    # 1: exactly the threshold; 2: one page short; 3: shrank; 4: gone; 5: new (from 0);
    # 6: new but below
    assert rss_growth(before, after, MiB) == [Grown(5, 3 * MiB, 3 * MiB), Grown(1, 11 * MiB, MiB)]
    assert rss_growth({}, {}, MiB) == []
    assert rss_growth(before, before, 1) == []


def m(ts, rss, cid=7, exact=None, limit=64 * MiB, estimate=256 * MiB):
    return Measured(cid, ts, rss, exact if exact is not None else sum(rss.values()), limit,
                    estimate)


def test_intervals_count_from_the_first_check_of_a_slow_period():
    r = RssIntervals(MiB)
    r.measured("/job", m(0.5, {1: 4 * MiB}))          # the check at the switch: the baseline
    r.measured("/job", m(0.8, {1: 6 * MiB}))          # one between ticks (the growth bound)
    r.measured("/job", m(1.0, {1: 20 * MiB, 2: 2 * MiB}))
    [(name, base, now, grown)] = r.tick({"/job": 7})
    assert (name, base.ts, now.ts) == ("/job", 0.5, 1.0)
    assert grown == [Grown(1, 20 * MiB, 16 * MiB), Grown(2, 2 * MiB, 2 * MiB)]
    # the next interval counts from the last one's check
    r.measured("/job", m(2.0, {1: 20 * MiB + 4096, 2: 4 * MiB}))
    [(_, base, now, grown)] = r.tick({"/job": 7})
    assert (base.ts, now.ts, grown) == (1.0, 2.0, [Grown(2, 4 * MiB, 2 * MiB)])
    # no check since the last tick: nothing, and the baseline stays
    assert r.tick({"/job": 7}) == []
    r.measured("/job", m(4.0, {1: 22 * MiB}))
    assert r.tick({"/job": 7})[0][3] == [Grown(1, 22 * MiB, 2 * MiB - 4096)]


def test_fast_mode_gives_nothing_and_a_new_slow_period_a_new_baseline():
    r = RssIntervals(MiB)
    r.measured("/job", m(0.5, {1: 4 * MiB}))
    r.measured("/job", m(1.0, {1: 8 * MiB}))
    assert r.tick({}) == []                           # fast at the tick: forgotten
    assert r.base == {} and r.latest == {}
    r.measured("/job", m(5.0, {1: 40 * MiB}))         # slow again: grew meanwhile, untold
    assert r.tick({"/job": 7}) == []
    r.measured("/job", m(6.0, {1: 41 * MiB}))
    assert r.tick({"/job": 7})[0][3] == [Grown(1, 41 * MiB, MiB)]


def test_a_recreated_cgroup_starts_over():
    r = RssIntervals(MiB)
    r.measured("/job", m(0.5, {1: 4 * MiB}))
    r.measured("/job", m(1.0, {9: 50 * MiB}, cid=8))  # removed and made again: new baseline
    assert r.tick({"/job": 8}) == []
    r.measured("/job", m(2.0, {9: 52 * MiB}, cid=8))
    assert r.tick({"/job": 8})[0][3] == [Grown(9, 52 * MiB, 2 * MiB)]
    r.measured("/job", m(3.0, {9: 60 * MiB}, cid=8))
    assert r.tick({"/job": 7}) == []                  # the account now names another id


def slow_account(name="/job", cid=7, limit=64 * MiB):
    acc = Account(name, cid, Limit(limit))
    acc.on_estimate(256 * MiB)
    assert acc.mode is Mode.SLOW
    return acc


def test_tracer_tells_rss_of_slow_traced_accounts_from_the_sessions_checks():
    job, other, quiet = slow_account(), slow_account("/other", 8), Account("/quiet", 9, None)
    s = FakeSession({7: "/job", 8: "/other", 9: "/quiet"}, {},
                    {7: [job], 8: [other], 9: [quiet]}, FakeProcfs({42: "hog", 43: "idle"}),
                    accounts=[job, other, quiet])
    out = []
    t = Tracer(s, out.append, min_pages=1, names=frozenset({"/job", "/quiet"}), rss_min=MiB)

    def check(acc, ts, rss):
        acc.on_exact(sum(rss.values()), ts)
        t.on_measured(acc, Usage(tuple(ProcUsage(p, acc.name, r) for p, r in rss.items()), ts))
    check(job, 10.0, {42: 8 * MiB, 43: 2 * MiB})
    check(other, 10.0, {50: MiB})                      # not traced (--cgroup)
    t.tick()
    assert out == []                                   # the baselines only
    check(job, 11.0, {42: 24 * MiB, 43: 2 * MiB + 4096})
    check(other, 11.0, {50: 90 * MiB})
    t.tick()
    assert [r["event"] for r in out] == ["rss"]
    rec = out[0]
    assert rec["ts"] == 11.0 and rec["cgroup"] == "/job" and rec["cgroup_id"] == 7
    assert (rec["pid"], rec["comm"], rec["rss_bytes"], rec["growth_bytes"]) == \
        (42, "hog", 24 * MiB, 16 * MiB)
    assert (rec["interval_s"], rec["exact_bytes"], rec["limit_bytes"], rec["estimate_bytes"]) \
        == (1.0, 26 * MiB + 4096, 64 * MiB, 256 * MiB)
    line = render.trace_line(rec)
    assert line.split()[1:8] == ["/job", "-", "42", "hog", "rss", str(16 * MiB), "256M"]
    assert line.endswith("  over 1.00s, rss now 24M; cgroup 26.0M of 64M"), line
    # back to fast (below the limit less the hysteresis): its later checks say nothing
    job.on_estimate(MiB)
    assert job.mode is Mode.FAST
    t.on_measured(job, Usage((ProcUsage(42, "/job", 80 * MiB),), 12.0))
    t.tick()
    assert len(out) == 1


def test_tracer_passes_on_mode_switches_and_limit_changes_of_traced_cgroups_only():
    job = slow_account()
    s = FakeSession({7: "/job", 8: "/other"}, {}, {7: [job], 8: [Acc("/other")]}, FakeProcfs({}))
    out = []
    t = Tracer(s, out.append, min_pages=1, names=frozenset({"/job"}))
    from observer.core.records import account_record, record
    rec = account_record("mode", job, 5.0, previous="fast")
    t.on_record(rec)
    t.on_record(dict(rec, cgroup="/other", cgroup_id=8))
    t.on_record(account_record("check", job, 5.0))
    t.on_record(record("exceeded", 5.0, "/job", cgroup_id=7))
    job.limit, job.mode = None, Mode.FAST      # memory.max went to max: fast, no mode record
    changed = account_record("limit", job, 6.0, previous_limit_bytes=64 * MiB,
                             detail="memory.max changed")
    t.on_record(changed)
    assert out == [rec, changed]
    assert render.trace_line(changed).split()[5:] == \
        ["limit", "-", "256M", "memory.max", "64M", "->", "max,", "fast", "mode"]
    line = render.trace_line(dict(rec, suppressed=3))
    assert line.split()[1:8] == ["/job", "-", "-", "-", "mode", "-", "256M"]
    assert line.endswith("fast -> slow, limit 64M (3 more not shown)")
