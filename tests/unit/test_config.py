"""--limit parsing and Limit validation."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from observer.core.config import DEFAULT_HYSTERESIS, Action, ConfigError, Limit, LimitSpec, parse_limit_spec
from observer.core.errors import BeanwatchError
from observer.core.sizes import MAX_SIZE, SizeError

M, G = 1 << 20, 1 << 30
KELVIN = "\u212a"
PROPS = settings(database=None, deadline=None, max_examples=300)


def test_config_error_is_the_tools_own_error():
    assert issubclass(ConfigError, BeanwatchError)


@pytest.mark.parametrize("text, expected", [
    ("a/b=512M", LimitSpec("a/b", 512 * M, None)),
    ("a=b=1G", LimitSpec("a=b", G, None)),            # the last '=' splits
    ("x=1G:512M", LimitSpec("x", G, 512 * M)),
    ("x=1G:1G", LimitSpec("x", G, G)),                # barrier equal to the limit
    ("/sys/fs/cgroup/job=4194304", LimitSpec("/sys/fs/cgroup/job", 4 * M, None)),
    ("a:b=1G", LimitSpec("a:b", G, None)),            # a ':' in the cgroup is not a barrier
    ("x=1M", LimitSpec("x", M, None)),                # the smallest limit
])
def test_parse_limit_spec_accepts(text, expected):
    assert parse_limit_spec(text) == expected


@pytest.mark.parametrize("text, error", [
    ("x=512M:1G", ConfigError),     # barrier above limit
    ("=1G", ConfigError),           # no cgroup
    ("nolimit", ConfigError),       # no '='
    ("", ConfigError),
    ("x=0", ConfigError),
    ("x=0:0", ConfigError),
    ("x=1G:0", ConfigError),
    ("x=1", ConfigError),           # 1 byte: under the 1M minimum
    ("x=1048575", ConfigError),
    ("x=1G:64", ConfigError),       # a barrier too
    ("x=", SizeError),
    ("x=1G:", SizeError),
    ("x=1G:512M:1", SizeError),
    ("x=nosize", SizeError),
    ("x=-1G", SizeError),
    ("x=max", SizeError),
    ("x=1024E", SizeError),
    ("x=1" + KELVIN, SizeError),
])
def test_parse_limit_spec_rejects(text, error):
    with pytest.raises(error):
        parse_limit_spec(text)


@PROPS
@given(st.one_of(
    st.text(max_size=40),
    st.text(alphabet="ab/=:.0123456789KMGkmgEeiB -", max_size=24),
    st.builds(lambda c, a, b: f"{c}={a}:{b}", st.text(max_size=5),
              st.integers(-5, MAX_SIZE + 5), st.integers(-5, MAX_SIZE + 5)),
))
@example("=")
@example(":=:")
@example("a=1G:2G")
@example("a=" + "9" * 50)
@example("x=1" + KELVIN)
def test_parse_limit_spec_raises_only_beanwatch_errors(text):
    try:
        spec = parse_limit_spec(text)
    except BeanwatchError:
        return
    assert spec.cgroup == text.rpartition("=")[0] != ""
    assert 0 < spec.limit <= MAX_SIZE
    assert spec.barrier is None or 0 < spec.barrier <= spec.limit
    # Whatever the parser accepts, Limit accepts too.
    Limit(spec.limit, spec.barrier)


# -- Limit ------------------------------------------------------------------------------

def test_limit_defaults():
    lim = Limit(G)
    assert (lim.barrier, lim.action, lim.hysteresis) == (None, Action.REPORT, DEFAULT_HYSTERESIS)


@pytest.mark.parametrize("kwargs", [
    dict(limit=0),
    dict(limit=-1),
    dict(limit=G, barrier=0),
    dict(limit=G, barrier=-1),
    dict(limit=G, barrier=G + 1),
    dict(limit=G, hysteresis=-0.1),
    dict(limit=G, hysteresis=1.0),
    dict(limit=G, hysteresis=1.5),
    dict(limit=G, hysteresis=float("nan")),
    dict(limit=G, hysteresis=float("inf")),
])
def test_limit_rejects(kwargs):
    with pytest.raises(ConfigError):
        Limit(**kwargs)


@pytest.mark.parametrize("limit, barrier, hysteresis, trigger, low_water", [
    (1000, None, 0.0, 1000, 1000),
    (1000, None, 0.1, 1000, 900),
    (1000, 800, 0.0, 800, 800),
    (1000, 800, 0.1, 800, 720),
    (1000, 1000, 0.1, 1000, 900),
    (1, None, 0.1, 1, 0),
    (G, None, 0.5, G, G // 2),
    (G, 512 * M, 0.25, 512 * M, 384 * M),
])
def test_limit_trigger_and_low_water(limit, barrier, hysteresis, trigger, low_water):
    lim = Limit(limit, barrier, Action.REPORT, hysteresis)
    assert lim.trigger == trigger
    assert lim.low_water == low_water


@PROPS
@given(st.integers(1, 2**53), st.floats(0.0, 1.0, exclude_max=True))
def test_low_water_follows_hysteresis(trigger, h):
    lim = Limit(trigger, hysteresis=h)
    assert lim.low_water <= lim.trigger
    assert trigger * (1 - h) - 1 <= lim.low_water


@PROPS
@given(st.integers(1, MAX_SIZE), st.floats(0.0, 1.0, exclude_max=True))
@example(2**60 + 200, 0.0)
def test_low_water_never_above_trigger(trigger, h):
    assert Limit(trigger, hysteresis=h).low_water <= trigger
