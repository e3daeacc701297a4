"""The accounting model: modes and hysteresis, exact checks and decisions, leaf bounds.

The property tests at the end check the soundness argument of leaf_bounds: as long as no
cgroup's counter passes the bound it was given (the kernel side wakes Python only then),
no account can pass the level the bounds were computed for.
"""

from itertools import groupby

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from observer.core.config import Action, Limit
from observer.core.model import (S64_MAX, Account, Effect, LeafBounds, LeafCounters, Mode,
                            leaf_bounds)

PS = 4096
PROPS = settings(database=None, deadline=None, max_examples=300)
SLOW, FAST = Mode.SLOW, Mode.FAST
SW_SLOW, SW_FAST = Effect.SWITCH_SLOW, Effect.SWITCH_FAST
WARN, EXCEED, ACT = Effect.WARN, Effect.EXCEED, Effect.ACT


def account(limit=1000, barrier=None, action=Action.REPORT, h=0.1, name="a", cid=1):
    lim = None if limit is None else Limit(limit, barrier, action, h)
    return Account(name, cid, lim)


# -- on_estimate ------------------------------------------------------------------------
# limit 1000, h 0.1: trigger 1000, low_water 900; with barrier 800: trigger 800, low 720.

@pytest.mark.parametrize("limit, barrier, h, mode, estimate, effects, after", [
    # fast -> slow above the trigger, not at it
    (1000, None, 0.1, FAST, 1001, [SW_SLOW], SLOW),
    (1000, None, 0.1, FAST, 1000, [], FAST),
    (1000, None, 0.1, FAST, 0, [], FAST),
    (1000, None, 0.1, FAST, 10**15, [SW_SLOW], SLOW),
    # slow stays slow from low_water up, whatever the estimate above it
    (1000, None, 0.1, SLOW, 950, [], SLOW),
    (1000, None, 0.1, SLOW, 900, [], SLOW),
    (1000, None, 0.1, SLOW, 1000, [], SLOW),
    (1000, None, 0.1, SLOW, 10**15, [], SLOW),
    # slow -> fast below low_water
    (1000, None, 0.1, SLOW, 899, [SW_FAST], FAST),
    (1000, None, 0.1, SLOW, 0, [SW_FAST], FAST),
    # no hysteresis: low_water is the trigger
    (1000, None, 0.0, SLOW, 999, [SW_FAST], FAST),
    (1000, None, 0.0, SLOW, 1000, [], SLOW),
    # the barrier is the trigger
    (1000, 800, 0.1, FAST, 801, [SW_SLOW], SLOW),
    (1000, 800, 0.1, FAST, 800, [], FAST),
    (1000, 800, 0.1, SLOW, 900, [], SLOW),
    (1000, 800, 0.1, SLOW, 720, [], SLOW),
    (1000, 800, 0.1, SLOW, 719, [SW_FAST], FAST),
    # no limit: nothing, ever
    (None, None, 0.1, FAST, 10**15, [], FAST),
    (None, None, 0.1, FAST, 0, [], FAST),
])
def test_on_estimate(limit, barrier, h, mode, estimate, effects, after):
    acc = account(limit, barrier, h=h)
    acc.mode = mode
    acc.exact = 123
    assert acc.on_estimate(estimate) == effects
    assert acc.mode is after
    assert acc.estimate == estimate
    assert acc.switches == len(effects)
    if effects:
        # stale once the mode changes: measured again after a switch to slow; never
        # shown beside a fresh estimate after a switch to fast
        assert acc.exact is None and acc.exact_ts is None and acc.held is None
    else:
        assert acc.exact == 123 == acc.held   # kept while the mode stays


def test_held_and_maxheld_are_measured_usage_never_the_estimate():
    """As beancounters: held is usage, maxheld the highest usage; the estimate (an upper
    bound of usage) is neither."""
    acc = account(1000)
    acc.on_estimate(500)
    assert (acc.held, acc.maxheld) == (None, None)   # fast, never measured
    acc.on_estimate(2000)
    assert acc.mode is SLOW and acc.held is None     # slow, not yet measured
    acc.on_exact(300, now=0)
    assert (acc.held, acc.maxheld) == (300, 300)     # measured
    acc.on_estimate(3000)
    assert (acc.held, acc.maxheld) == (300, 300)     # the estimate changes neither
    acc.on_exact(257, now=1)
    assert (acc.held, acc.maxheld) == (257, 300)
    acc.on_estimate(100)
    assert acc.mode is FAST and (acc.held, acc.maxheld) == (None, 300)   # not followed now


def test_a_one_shot_counts_the_failure():
    over = Account.measured_once("/a", 1, Limit(1000, None, Action.REPORT), 5000, 1500)
    assert (over.held, over.maxheld, over.failcnt, over.checks, over.over_limit) == (1500, 1500, 1, 1, True)
    assert over.switches == 0 and over.actions == 0
    warn = Account.measured_once("/a", 1, Limit(1000, 800, Action.REPORT), 900, 900)
    assert (warn.failcnt, warn.over_limit) == (1, False)
    under = Account.measured_once("/a", 1, Limit(1000, 800, Action.REPORT), 5000, 700)
    assert (under.failcnt, under.over_limit, under.mode) == (0, False, SLOW)
    free = Account.measured_once("/a", 1, None, 5000, 700)
    assert (free.failcnt, free.over_limit, free.held) == (0, False, 700)


def test_back_in_fast_mode_a_new_crossing_is_acted_on_at_once():
    """A kill's processes gone, the estimate falls under the low water (fast mode): that is
    back under. A process started again at once and over the limit at its first check is
    killed then, not when retry_after has passed since the last kill."""
    acc = account(limit=1000, action=Action.KILL)
    assert acc.on_estimate(5000, 0.0) == [Effect.SWITCH_SLOW]
    assert acc.on_exact(1500, 0.1) == [Effect.EXCEED, Effect.ACT]
    assert acc.on_estimate(0, 0.2) == [Effect.SWITCH_FAST]
    assert acc.acted_at is None
    assert acc.on_estimate(5000, 0.3) == [Effect.SWITCH_SLOW]
    assert acc.on_exact(1500, 0.4) == [Effect.EXCEED, Effect.ACT]   # not gated until 1.1
    # still over after that kill (a process the kill missed): retried after retry_after only
    assert acc.on_exact(1500, 0.5) == [Effect.EXCEED]


# -- on_exact ---------------------------------------------------------------------------
# Each step: (now, exact, expected effects). retry_after is 1.0 unless given.

SCENARIOS = {
    "report, barrier then limit, re-armed under the limit": (
        dict(limit=1000, barrier=800, action=Action.REPORT), 1.0, [
            (0, 700, []), (1, 800, []), (2, 801, [WARN]), (3, 1000, [WARN]),
            (4, 1001, [EXCEED, ACT]), (5, 2000, [EXCEED]), (500, 2000, [EXCEED]),
            (501, 1000, [WARN]), (502, 1001, [EXCEED, ACT]),
        ]),
    "freeze acts once until back under the limit": (
        dict(limit=1000, action=Action.FREEZE), 1.0, [
            (0, 1001, [EXCEED, ACT]), (10, 5000, [EXCEED]), (10**6, 1001, [EXCEED]),
            (10**6 + 1, 1000, []), (10**6 + 2, 1001, [EXCEED, ACT]),
        ]),
    "kill retried only after retry_after": (
        dict(limit=1000, action=Action.KILL), 1.0, [
            (0, 1001, [EXCEED, ACT]), (0.5, 1001, [EXCEED]), (0.999, 5000, [EXCEED]),
            (1.0, 1001, [EXCEED, ACT]), (1.5, 1001, [EXCEED]), (2.0, 1001, [EXCEED, ACT]),
            (2.1, 999, []), (2.2, 1001, [EXCEED, ACT]),
        ]),
    "kill with a longer retry_after": (
        dict(limit=1000, action=Action.KILL), 5.0, [
            (0, 2000, [EXCEED, ACT]), (4.9, 2000, [EXCEED]), (5.0, 2000, [EXCEED, ACT]),
        ]),
    "no limit: only counted": (
        dict(limit=None), 1.0, [(0, 10**15, []), (1, 0, [])]),
}


@pytest.mark.parametrize("kwargs, retry_after, steps", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_on_exact(kwargs, retry_after, steps):
    acc = account(**kwargs)
    acc.mode = SLOW     # where exact checks happen; held is then the exact count
    for i, (now, exact, effects) in enumerate(steps):
        assert acc.on_exact(exact, now, retry_after=retry_after) == effects, f"step {i}"
        assert acc.exact == exact
        assert (acc.acted_at == now) if ACT in effects else True
        if acc.limit is not None and exact <= acc.limit.limit:
            assert acc.acted_at is None
    counted = [e for _, _, effects in steps for e in effects]
    assert acc.checks == len(steps)
    assert acc.actions == counted.count(ACT)
    assert acc.failcnt == counted.count(EXCEED) + counted.count(WARN)
    assert acc.maxheld == max(exact for _, exact, _ in steps)


@pytest.mark.parametrize("limit, barrier, exact, headroom", [
    (None, None, 5, S64_MAX),
    (1000, None, None, S64_MAX),
    (1000, None, 0, 1000),
    (1000, None, 600, 400),
    (1000, None, 1000, 0),
    (1000, 800, 600, 200),          # up to the barrier, so a WARN is not missed
    (1000, 800, 800, 0),
    (1000, 800, 900, 100),          # past the barrier: up to the limit
    (1000, None, 1001, 125),        # over: a step of limit // 8
    (7, None, 100, 1),              # ... at least one byte
])
def test_rss_headroom(limit, barrier, exact, headroom):
    acc = account(limit, barrier)
    acc.exact = exact
    assert acc.rss_headroom() == headroom


# -- holds_at_crossing ------------------------------------------------------------------

def checked(limit=1000 * PS, barrier=None, action=Action.KILL, rss=600 * PS, pss=None,
            base=None):
    """A slow account after a check: its figure, and the growth counters it counts from."""
    acc = account(limit, barrier, action)
    acc.mode = SLOW
    acc.exact, acc.rss, acc.pss = (rss if pss is None else pss), rss, pss
    acc.rss_base = {1: 100, 2: 50} if base is None else base
    return acc


@pytest.mark.parametrize("kw, growth, holds", [
    ({}, {1: 100 + 400, 2: 50}, False),                 # exactly the headroom: not past it
    ({}, {1: 100 + 401, 2: 50}, True),                  # past it by one page
    ({}, {1: 100 + 201, 2: 50 + 200}, True),            # summed over the cgroups covered
    ({}, {1: 100 + 300, 2: 50 - 100}, False),           # one grew past its share, one shrank
    ({"action": Action.FREEZE}, {1: 1000}, True),
    ({"action": Action.REPORT}, {1: 1000}, False),      # nothing to freeze or kill for
    ({"rss": 900 * PS, "pss": 500 * PS}, {1: 100 + 501}, False),   # well under by PSS
    ({"rss": 900 * PS, "pss": 880 * PS}, {1: 100 + 121}, True),    # near by PSS
    ({"barrier": 800 * PS}, {1: 100 + 201}, True),      # past the barrier: PSS read anyway
    ({"barrier": 800 * PS}, {1: 100 + 200}, False),
    ({"base": {1: 100}}, {1: 100 + 401, 3: 999}, True),  # a cgroup taken in since: from its own
])
def test_holds_at_crossing(kw, growth, holds):
    assert checked(**kw).holds_at_crossing(growth, PS) is holds


def test_holds_at_crossing_only_after_a_check_in_slow_mode():
    acc = checked()
    past = {1: 100 + 1000}
    assert acc.holds_at_crossing(past, PS)
    acc.mode = FAST
    assert not acc.holds_at_crossing(past, PS)
    acc = checked()
    acc.forget_exact()
    assert not acc.holds_at_crossing(past, PS)
    assert not Account("a", 1, None).holds_at_crossing(past, PS)


# -- leaf_bounds, examples ----------------------------------------------------------------

def test_leaf_bounds_without_accounts_are_open():
    out = leaf_bounds([], {}, {}, [1, 2], PS)
    assert out == {1: LeafBounds(), 2: LeafBounds()}
    assert LeafBounds() == LeafBounds(S64_MAX, -S64_MAX, S64_MAX, False, 0)


def test_leaf_bounds_fast_spreads_headroom():
    acc = account(100 * PS)
    counters = {1: LeafCounters(vm=10, seed=5), 2: LeafCounters(vm=20)}
    acc.on_estimate(35 * PS)
    out = leaf_bounds([acc], {"a": [1, 2]}, counters, [1, 2, 3], PS)
    # headroom 100 - 35 = 65 pages, 32 each on top of the current counter
    assert out[1] == LeafBounds(vm_high=42)
    assert out[2] == LeafBounds(vm_high=52)
    assert out[3] == LeafBounds()


def test_slow_growth_bound_counts_from_the_measurement_not_from_the_write():
    """The headroom a measurement leaves is counted from the growth counters read before
    it (rss_base): rewritten later with grown counters, the bound stays where it was."""
    acc = account(100 * PS)
    acc.on_estimate(200 * PS)
    acc.on_exact(60 * PS, now=0)               # 40 pages left
    acc.rss_base = {1: 7, 2: 3}
    later = {1: LeafCounters(vm=100, rss_growth=30), 2: LeafCounters(vm=100, rss_growth=3)}
    out = leaf_bounds([acc], {"a": [1, 2]}, later, [1, 2], PS)
    assert (out[1].rss_high, out[2].rss_high) == (7 + 20, 3 + 20)
    acc.on_estimate(0)                          # back to fast: forgotten with exact
    assert acc.rss_base is None


def test_leaf_bounds_fast_above_trigger_has_no_headroom():
    acc = account(10 * PS)
    counters = {1: LeafCounters(vm=30), 2: LeafCounters(vm=-4, seed=9)}
    out = leaf_bounds([acc], {"a": [1, 2]}, counters, [1, 2], PS)
    assert out[1].vm_high == 30 and out[2].vm_high == -4


def test_leaf_bounds_slow():
    acc = account(100 * PS, h=0.1)          # low_water 90 pages
    acc.on_estimate(200 * PS)
    acc.on_exact(50 * PS, now=0)            # rss headroom 50 pages
    acc.gen = 7
    counters = {1: LeafCounters(vm=100, seed=5, rss_growth=3), 2: LeafCounters(vm=30, rss_growth=-2)}
    out = leaf_bounds([acc], {"a": [1, 2]}, counters, [1, 2], PS)
    # estimate 135 pages, excess over low_water 45, 22 each; rss 25 each
    assert out[1] == LeafBounds(vm_low=78, rss_high=28, slow=True, gen=7)
    assert out[2] == LeafBounds(vm_low=8, rss_high=23, slow=True, gen=7)


def test_leaf_bounds_slow_before_the_first_exact_check():
    acc = account(100 * PS)
    acc.on_estimate(200 * PS)
    assert acc.exact is None
    out = leaf_bounds([acc], {"a": [1, 2]}, {1: LeafCounters(vm=200)}, [1, 2], PS)
    assert out[1].rss_high == S64_MAX // PS // 2
    # estimate 200 pages, low_water 90: excess 110, 55 each
    assert out[2].vm_low == -55 and out[2].slow


def test_leaf_bounds_skips_unlimited_and_empty_accounts():
    free, empty = account(None, name="free"), account(100, name="empty")
    out = leaf_bounds([free, empty], {"free": [1]}, {1: LeafCounters(vm=5)}, [1], PS)
    assert out == {1: LeafBounds()}


def test_leaf_bounds_covered_leaf_outside_all_leaves_still_bounded():
    acc = account(10 * PS)
    out = leaf_bounds([acc], {"a": [9]}, {}, [], PS)
    assert out == {9: LeafBounds(vm_high=10)}


def test_leaf_bounds_overlap_takes_the_tightest():
    parent, child = account(100 * PS, name="p"), account(20 * PS, name="c")
    sibling = account(10 * PS, name="s")
    sibling.on_estimate(50 * PS)
    sibling.gen = 3
    counters = {1: LeafCounters(vm=10), 2: LeafCounters(vm=5), 3: LeafCounters(vm=50)}
    out = leaf_bounds([parent, child, sibling], {"p": [1, 2, 3], "c": [1], "s": [3]},
                      counters, [1, 2, 3], PS)
    # parent: 100 - 65 = 35 pages, 11 each; child: 20 - 10 = 10 pages on leaf 1
    assert out[1].vm_high == 20
    assert out[2].vm_high == 16
    # leaf 3: the parent's vm_high and the slow sibling's vm_low
    assert out[3].vm_high == 61 and out[3].slow and out[3].gen == 3
    assert out[3].vm_low == 50 - (50 - 9)


# -- leaf_bounds, soundness ----------------------------------------------------------------

WIDE = 10**9   # later counters are drawn within this distance of the current ones


def draw_counters(draw, leaves):
    counters = {}
    for leaf in leaves:
        seed = draw(st.integers(0, 10**6))
        est = draw(st.integers(0, 10**6))
        counters[leaf] = LeafCounters(vm=est - seed, seed=seed,
                                      rss_growth=draw(st.integers(-10**3, 10**6)))
    return counters


def draw_within(draw, lo, hi, now, push):
    """A later counter value in [lo, hi]: at or next to the end that `push` names (all
    cgroups pushing the same way is the worst case), or anywhere."""
    lo, hi = max(lo, now - WIDE), min(hi, now + WIDE)
    assert lo <= hi
    if push == "up":
        return max(hi - draw(st.integers(0, 2)), lo)
    if push == "down":
        return min(lo + draw(st.integers(0, 2)), hi)
    return draw(st.integers(lo, hi))


pushes = st.sampled_from(["up", "down", "any"])


page_sizes = st.sampled_from([1, 3, 4096, 16384, 65536])


def estimate_pages(counters, leaves, vm=None):
    vm = vm or {}
    return sum(vm.get(l, counters[l].vm) + counters[l].seed for l in leaves)


@PROPS
@given(st.data())
def test_fast_bounds_keep_the_estimate_under_the_trigger(data):
    draw = data.draw
    ps = draw(page_sizes)
    leaves = list(range(1, draw(st.integers(1, 6)) + 1))
    counters = draw_counters(draw, leaves)
    est = estimate_pages(counters, leaves)
    trigger = draw(st.integers(max(est * ps, 1), est * ps + 10**7))
    barrier = draw(st.booleans())
    limit = trigger + draw(st.integers(0, 10**7)) if barrier else trigger
    acc = account(limit, trigger if barrier else None, h=draw(st.floats(0, 0.9)))
    assert acc.on_estimate(est * ps) == [] and acc.mode is FAST

    bounds = leaf_bounds([acc], {"a": leaves}, counters, leaves, ps)

    headroom = trigger // ps - est
    for leaf in leaves:
        assert bounds[leaf].vm_high >= counters[leaf].vm          # no wake at once
        assert not bounds[leaf].slow
    assert sum(bounds[l].vm_high - counters[l].vm for l in leaves) > headroom - len(leaves)
    # Any later counters that wake nobody (vm <= vm_high everywhere):
    push = draw(pushes)
    later = {l: draw_within(draw, -S64_MAX, bounds[l].vm_high, counters[l].vm, push) for l in leaves}
    est2 = estimate_pages(counters, leaves, later)
    assert est2 <= trigger // ps
    assert acc.on_estimate(est2 * ps) == []                       # no switch was missed


@PROPS
@given(st.data())
def test_slow_bounds_keep_the_estimate_over_low_water(data):
    draw = data.draw
    ps = draw(page_sizes)
    leaves = list(range(1, draw(st.integers(1, 6)) + 1))
    counters = draw_counters(draw, leaves)
    est = estimate_pages(counters, leaves)
    trigger = draw(st.integers(1, 2 * est * ps + 10))
    acc = account(trigger, h=draw(st.floats(0, 0.9)))
    low = acc.limit.low_water
    assume(low <= est * ps)
    acc.on_estimate(trigger + 1)
    assert acc.on_estimate(est * ps) == [] and acc.mode is SLOW

    bounds = leaf_bounds([acc], {"a": leaves}, counters, leaves, ps)

    for leaf in leaves:
        assert bounds[leaf].vm_low <= counters[leaf].vm           # no wake at once
        assert bounds[leaf].slow
    # Any later counters that wake nobody (vm >= vm_low everywhere):
    push = draw(pushes)
    later = {l: draw_within(draw, bounds[l].vm_low, S64_MAX, counters[l].vm, push) for l in leaves}
    est2 = estimate_pages(counters, leaves, later)
    # Exact statement: in whole pages, low_water // ps. In bytes the estimate may end up
    # less than a page under low_water unseen: a return to fast mode late, never early.
    assert est2 >= low // ps
    assert est2 * ps > low - ps


@PROPS
@given(st.data())
def test_slow_bounds_keep_resident_growth_under_the_next_level(data):
    draw = data.draw
    ps = draw(page_sizes)
    leaves = list(range(1, draw(st.integers(1, 6)) + 1))
    counters = draw_counters(draw, leaves)
    limit = draw(st.integers(1, 10**7))
    barrier = draw(st.one_of(st.none(), st.integers(1, limit)))
    acc = account(limit, barrier)
    acc.on_estimate(limit + 1)
    exact = draw(st.integers(0, limit + 10**6))
    acc.on_exact(exact, now=0)

    bounds = leaf_bounds([acc], {"a": leaves}, counters, leaves, ps)

    for leaf in leaves:
        assert bounds[leaf].rss_high >= counters[leaf].rss_growth
    push = draw(pushes)
    later = {l: draw_within(draw, -S64_MAX, bounds[l].rss_high, counters[l].rss_growth, push)
             for l in leaves}
    growth = sum(later[l] - counters[l].rss_growth for l in leaves) * ps
    if exact <= limit:
        level = barrier if barrier is not None and exact <= barrier else limit
        assert exact + growth <= level      # no barrier or limit crossing goes unseen
    else:
        assert growth <= max(limit // 8, 1)


@st.composite
def overlapping_accounts(draw):
    """1 to 3 accounts over subsets of 5 cgroups, each fast under its trigger or slow
    over its low water (the states the session keeps them in)."""
    ps = draw(page_sizes)
    pool = [1, 2, 3, 4, 5]
    counters = draw_counters(draw, pool)
    accounts, leaves_of = [], {}
    for i in range(draw(st.integers(1, 3))):
        leaves = sorted(draw(st.sets(st.sampled_from(pool), min_size=1)))
        est = estimate_pages(counters, leaves) * ps
        if draw(st.booleans()):
            acc = account(draw(st.integers(max(est, 1), est + 10**7)), name=f"a{i}",
                          h=draw(st.floats(0, 0.9)))
            acc.on_estimate(est)
            assert acc.mode is FAST
        else:
            limit = draw(st.integers(1, est + 10))
            acc = account(limit, name=f"a{i}", h=draw(st.floats(0, 0.9)))
            assume(acc.limit.low_water <= est)
            acc.on_estimate(limit + 1)
            acc.on_estimate(est)
            acc.on_exact(draw(st.integers(0, limit)), now=0)
            acc.gen = draw(st.integers(0, 5))
            assert acc.mode is SLOW
        accounts.append(acc)
        leaves_of[acc.name] = leaves
    return ps, pool, counters, accounts, leaves_of


@PROPS
@given(overlapping_accounts(), st.data())
def test_overlapping_accounts_each_keep_their_level(scenario, data):
    ps, pool, counters, accounts, leaves_of = scenario
    bounds = leaf_bounds(accounts, leaves_of, counters, pool, ps)
    later_vm, later_rss = {}, {}
    vm_push, rss_push = data.draw(pushes), data.draw(pushes)
    for l in pool:
        b, c = bounds[l], counters[l]
        later_vm[l] = draw_within(data.draw, b.vm_low, b.vm_high, c.vm, vm_push)
        later_rss[l] = draw_within(data.draw, -S64_MAX, b.rss_high, c.rss_growth, rss_push)
    for acc in accounts:
        leaves = leaves_of[acc.name]
        est2 = estimate_pages(counters, leaves, later_vm)
        if acc.mode is FAST:
            assert est2 <= acc.limit.trigger // ps
        else:
            assert all(bounds[l].slow and bounds[l].gen >= acc.gen for l in leaves)
            assert est2 >= acc.limit.low_water // ps
            growth = sum(later_rss[l] - counters[l].rss_growth for l in leaves) * ps
            assert acc.exact + growth <= acc.limit.limit


# -- hysteresis bounds switches -------------------------------------------------------------

def schmitt_runs(estimates, trigger, low_water):
    """Zones of the sequence, band values dropped, repeats merged; starts below (fast)."""
    zones = ["below"] + ["above" if x > trigger else "below" for x in estimates
                         if x > trigger or x < low_water]
    return [z for z, _ in groupby(zones)]


def test_switches_for_a_known_sequence():
    acc = account(1000, h=0.1)
    effects = [acc.on_estimate(x) for x in [1001, 899, 1001, 950, 1000, 900, 2000, 0, 1000]]
    assert effects == [[SW_SLOW], [SW_FAST], [SW_SLOW], [], [], [], [], [SW_FAST], []]
    assert acc.switches == 4


@PROPS
@given(st.integers(1, 10**6), st.floats(0, 0.9), st.booleans(), st.data())
def test_switches_follow_the_crossings(limit, h, with_barrier, data):
    acc = account(limit, limit // 2 + 1 if with_barrier else None, h=h)
    T, L = acc.limit.trigger, acc.limit.low_water
    estimates = data.draw(st.lists(st.one_of(
        st.integers(0, 2 * limit), st.sampled_from([L - 1, L, T, T + 1]).filter(lambda x: x >= 0))))
    effects, maxheld = [], 0
    for x in estimates:
        effects += acc.on_estimate(x)
        assert (acc.maxheld or 0) >= maxheld and (acc.maxheld or 0) >= (acc.held or 0)
        maxheld = acc.maxheld or 0
    runs = schmitt_runs(estimates, T, L)
    assert acc.switches == len(effects) == len(runs) - 1
    assert effects == [SW_SLOW, SW_FAST] * (len(effects) // 2) + [SW_SLOW] * (len(effects) % 2)
    assert acc.mode is (SLOW if runs[-1] == "above" else FAST)
    # A bound in terms of the input only: each return to slow mode needs the estimate to
    # go from under low_water to over the trigger. (1 + 2 * crossings is one short: a
    # sequence that starts over the trigger and drops under low_water switches twice
    # with no such crossing.)
    crossings, last = 0, None
    for x in estimates:
        zone = "above" if x > T else "below" if x < L else None
        crossings += zone == "above" and last == "below"
        last = zone or last
    assert acc.switches <= 2 + 2 * crossings


@PROPS
@given(st.integers(10, 10**6), st.floats(0.01, 0.9), st.booleans(), st.data())
def test_no_switch_inside_the_band(limit, h, back_to_fast, data):
    acc = account(limit, h=h)
    T, L = acc.limit.trigger, acc.limit.low_water
    assume(L < T)
    acc.on_estimate(T + 1)
    if back_to_fast:
        acc.on_estimate(L - 1)
    mode, switches = acc.mode, acc.switches
    for x in data.draw(st.lists(st.integers(L, T), min_size=1, max_size=50)):
        assert acc.on_estimate(x) == []
    assert (acc.mode, acc.switches) == (mode, switches)


def test_constant_estimate_does_not_flip_modes_with_huge_trigger():
    acc = account(2**60 + 200, h=0.0)
    assert acc.on_estimate(2**60 + 201) == [SW_SLOW]
    assert acc.on_estimate(2**60 + 201) == []


def test_a_cgroup_flapping_thousands_of_times_neither_overflows_nor_grows_without_bound():
    """The storm test saw 'OverflowError: int too large to convert to float' at 51,500
    moves/s: 2 ** (switches in the window // 2) past 2 ** 1024."""
    acc = Account("/flap", 1, Limit(100, None, Action.REPORT, 0.1, adaptive=True))
    now = 1000.0
    for i in range(5000):
        acc.on_estimate(200 if i % 2 == 0 else 10, now + i * 1e-5)
    assert acc.hysteresis(now + 0.1) == 0.5
    assert len(acc.recent_switches) <= 32
