"""Token buckets per source."""

import pytest

from observer.core.ratelimit import Buckets


def test_a_burst_then_the_rate():
    b = Buckets(rate=10, burst=5)
    assert [b.take("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert b.take("b", 0.0)            # another source has its own bucket
    assert not b.take("a", 0.05)       # half a token
    assert b.take("a", 0.1)            # one token after 0.1 s at 10/s
    assert not b.take("a", 0.1)
    assert [b.take("a", 100.0) for _ in range(6)] == [True] * 5 + [False]   # capped at burst


def test_time_going_backwards_adds_nothing():
    b = Buckets(rate=1, burst=1)
    assert b.take("a", 10.0) and not b.take("a", 5.0) and not b.take("a", 10.5)


def test_keep_only_drops_the_rest():
    b = Buckets(rate=1, burst=1)
    for k in range(100):
        b.take(k, 0.0)
    b.keep_only({1, 2})
    assert len(b) == 2 and b.take(3, 0.0) and not b.take(1, 0.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (1, 0.5)])
def test_bad_parameters(rate, burst):
    with pytest.raises(ValueError):
        Buckets(rate, burst)


def test_take_n_grants_what_n_takes_one_by_one_would():
    one, many = Buckets(rate=10, burst=5), Buckets(rate=10, burst=5)
    for now, n in ((0.0, 3), (0.0, 4), (0.05, 1), (0.1, 2), (100.0, 9), (100.0, 0)):
        assert many.take_n("a", now, n) == sum(one.take("a", now) for _ in range(n))
    assert many.take_n("b", 0.0, 7) == 5          # another source: its own burst
