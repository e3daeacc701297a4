"""The tiers of usage (estimate >= RSS sum >= precise figure) and the bound re-armed on the
precise one, with literals."""

from __future__ import annotations

import pytest

from observer.core.config import Action, Count, Limit
from observer.core.model import Account, LeafCounters, Mode, leaf_bounds
from observer.core.usage import ProcUsage, Usage, needs_precise

MiB = 1 << 20
PAGE = 4096


@pytest.mark.parametrize("rss, limit, barrier, expected", [
    (100 * MiB, 256 * MiB, None, False),
    (256 * MiB, 256 * MiB, None, False),     # at the limit is not over
    (256 * MiB + 1, 256 * MiB, None, True),
    (200 * MiB, 256 * MiB, 192 * MiB, True),  # the barrier is the trigger
    (10**15, None, None, False),              # no limit: never worth the cost
])
def test_the_precise_tier_only_when_the_rss_sum_says_over(rss, limit, barrier, expected):
    lim = Limit(limit, barrier) if limit else None
    assert needs_precise(rss, lim) is expected


def test_usage_figure_is_the_precise_one_where_taken():
    procs = tuple(ProcUsage(p, "/job/a", 160 * MiB, 40 * MiB) for p in (1, 2, 3, 4))
    u = Usage(procs, 5.0, Count.RSS, precise=True)
    assert (u.rss, u.pss, u.figure) == (640 * MiB, 160 * MiB, 160 * MiB)
    cheap = Usage(tuple(ProcUsage(p, "/job", 10 * MiB) for p in (1, 2)), 5.0)
    assert (cheap.rss, cheap.pss, cheap.figure) == (20 * MiB, None, 20 * MiB)


def test_by_cgroup_sums_each_child_subtree_and_leaves_out_the_parent():
    u = Usage((ProcUsage(1, "/job", 5, 5), ProcUsage(2, "/job/a", 10, 10),
               ProcUsage(3, "/job/a/x", 7, 7), ProcUsage(4, "/job/b", 3, 3),
               ProcUsage(5, "/jobless", 100, 100)), precise=True)
    assert u.by_cgroup("/job") == {"/job/a": 17, "/job/b": 3}


def slow_account(limit=256 * MiB):
    acc = Account("/job", 1, Limit(limit, None, Action.KILL))
    acc.on_estimate(2048 * MiB)
    assert acc.mode is Mode.SLOW
    return acc


def test_sharers_under_the_limit_by_pss_are_not_acted_on_and_the_bound_is_rearmed():
    """4 processes sharing 160 MiB: the RSS sum says 640 MiB, PSS 160 MiB against 256 MiB."""
    acc = slow_account()
    effects = acc.on_exact(160 * MiB, 7.0, rss=640 * MiB, pss=160 * MiB)
    assert effects == []
    assert (acc.exact, acc.rss, acc.pss, acc.exact_ts) == (160 * MiB, 640 * MiB, 160 * MiB, 7.0)
    # re-armed relative to the precise figure: limit - PSS of growth, not limit // 8 (the
    # step used once over) and not zero (which would wake Python at every fault)
    assert acc.rss_headroom() == 96 * MiB
    growth = 1000   # pages of resident growth counted so far in each leaf
    counters = {10: LeafCounters(vm=300_000, rss_growth=growth),
                11: LeafCounters(vm=300_000, rss_growth=growth)}
    b = leaf_bounds([acc], {"/job": [10, 11]}, counters, [10, 11], PAGE)
    share = 96 * MiB // PAGE // 2
    assert b[10].rss_high == growth + share and b[11].rss_high == growth + share
    # the same as shifting the RSS-sum baseline by RSS - PSS: limit + (640 - 160) MiB
    assert 640 * MiB + 2 * share * PAGE == 256 * MiB + (640 - 160) * MiB


def test_over_by_the_precise_figure_acts():
    acc = slow_account()
    assert "action" in [e.value for e in acc.on_exact(300 * MiB, 7.0, rss=700 * MiB,
                                                      pss=300 * MiB)]


def test_cheap_tier_alone_records_no_pss():
    acc = slow_account()
    acc.on_exact(100 * MiB, 3.0)
    assert (acc.exact, acc.rss, acc.pss) == (100 * MiB, 100 * MiB, None)


def test_back_to_fast_forgets_the_measurement():
    acc = slow_account()
    acc.on_exact(18 * MiB, 3.0, rss=18 * MiB)
    acc.on_estimate(0, 4.0)
    assert acc.mode is Mode.FAST
    assert (acc.exact, acc.rss, acc.pss, acc.exact_ts) == (None, None, None, None)


@pytest.mark.parametrize("bad", [-1.0, 3601.0, float("nan")])
def test_grace_out_of_range_is_refused(bad):
    from observer.core.config import ConfigError
    with pytest.raises(ConfigError):
        Limit(MiB, grace=bad)
