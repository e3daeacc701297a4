"""The command line with CliRunner (no root, no host access), and the table renderers."""

import inspect
import re

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import observer
import observer.app.cli as cli_module
import observer.app.demo as demo_module
import observer.app.runtime as runtime_module
from observer.output import render
from observer.app.cli import cli
from observer.core.config import Action, Limit
from observer.kernel.loader import probe_source
from observer.core.model import Account
from observer.core.records import account_record
from observer.core.sizes import MAX_SIZE, PAGE_SIZE

COMMANDS = {
    "watch": "Watch cgroups live and act on limits",
    "status": "One-shot accounting from /proc",
    "demo": "demonstration on a scratch cgroup",
    "check": "What this host supports",
    "verify": "Check the estimate against /proc",
    "top": "Full-screen live view",
}


@pytest.fixture(autouse=True)
def no_host(monkeypatch):
    """Tests may run as root: anything that would touch the host fails loudly instead,
    so an option that is wrongly accepted shows up as exit 1, never as a live session."""
    reached = []

    def refuse(name):
        def f(*args, **kwargs):
            reached.append(name)
            raise AssertionError(f"{name} reached from a unit test")
        return f

    monkeypatch.setattr(cli_module, "require_root", refuse("require_root"))
    for name in ("open_host", "run_watch", "build_session", "resolve_watches", "run_top",
                 "run_verify", "run_check", "status_records"):
        monkeypatch.setattr(runtime_module, name, refuse(name))
    monkeypatch.setattr(demo_module, "run_demo", refuse("run_demo"))
    return reached


def invoke(*args):
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        runner = CliRunner(mix_stderr=False)     # click < 8.2
    else:
        runner = CliRunner()                     # click >= 8.2: stdout and stderr apart
    return runner.invoke(cli, list(args), prog_name="beanwatch", env={"COLUMNS": "80"})


# -- help and version ------------------------------------------------------------------------

def test_group_help_lists_every_command():
    res = invoke("--help")
    assert res.exit_code == 0, res.output
    assert "On-demand per-cgroup memory accounting with eBPF" in res.stdout
    for name in COMMANDS:
        assert re.search(rf"^  {name}\s", res.stdout, flags=re.M), name


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("name, purpose", COMMANDS.items())
def test_command_help(name, purpose, flag, no_host):
    res = invoke(name, flag)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"Usage: beanwatch {name} [OPTIONS]")
    assert purpose in " ".join(res.stdout.split())
    assert res.stderr == "" and no_host == []


def test_every_registered_command_has_help():
    assert set(COMMANDS) <= set(cli.commands)
    for name, cmd in cli.commands.items():
        res = invoke(name, "--help")
        assert res.exit_code == 0, name
        assert cmd.get_short_help_str().strip(), f"{name} has no help text"


def test_watch_help_has_examples_and_hides_debug_flags():
    out = invoke("watch", "--help").stdout
    assert "Examples:" in out and out.index("Examples:") > out.index("Options:")
    assert "beanwatch watch --limit" in out
    assert "--print-bpf" not in out and "--ringbuf-pages" not in out


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_fits_80_columns(name):
    res = invoke(*([name] if name else []), "--help")
    too_wide = [line for line in res.stdout.splitlines() if len(line) > 80]
    assert too_wide == []


def test_version():
    res = invoke("--version")
    assert res.exit_code == 0
    assert res.stdout == f"beanwatch, version {observer.__version__}\n"


def test_print_bpf_needs_no_root(no_host):
    res = invoke("watch", "--print-bpf")
    assert res.exit_code == 0, res.output
    assert "TRACEPOINT_PROBE" in res.stdout
    with open(probe_source()) as f:
        assert res.stdout == f.read() + "\n"
    assert res.stderr == "" and no_host == []


# -- usage errors: exit 2, one error line on stderr, nothing on stdout ---------------------

@pytest.mark.parametrize("args, mentions", [
    (["watch", "--limit", "nosize"], "--limit"),
    (["watch", "--limit", "a=1G:2G"], "barrier"),
    (["watch", "--limit", "a=0"], "--limit"),
    (["watch", "--limit", "a=9999999999E"], "--limit"),
    (["watch", "--limit", "=1G"], "--limit"),
    (["watch", "--interval", "0"], "--interval"),
    (["watch", "--interval", "-1"], "--interval"),
    (["watch", "--interval", "3601"], "--interval"),
    (["watch", "--interval", "inf"], "--interval"),
    (["watch", "--interval", "soon"], "--interval"),
    (["watch", "--duration", "0"], "--duration"),
    (["watch", "--duration", "-5"], "--duration"),
    (["watch", "--hysteresis", "1"], "--hysteresis"),
    (["watch", "--hysteresis", "-0.1"], "--hysteresis"),
    (["watch", "--ringbuf-pages", "0"], "--ringbuf-pages"),
    (["watch", "--ringbuf-pages", str(2**64)], "--ringbuf-pages"),
    (["watch", "--action", "explode"], "--action"),
    (["watch", "--action", "kill"], "--limit"),
    (["watch", "--action", "freeze"], "--limit"),
    (["watch", "extra-arg"], "extra-arg"),
    (["watch", "--no-such-option"], "--no-such-option"),
    (["demo", "--limit", "1M"], "--limit"),
    (["demo", "--limit", "lots"], "--limit"),
    (["demo", "extra"], "extra"),
    (["status", "--format", "xml"], "--format"),
    (["status", "--limit", "x"], "--limit"),
    (["check", "extra"], "extra"),
    (["nosuchcommand"], "nosuchcommand"),
    (["watch", "--metrics", "nonsense"], "metrics"),
    (["watch", "--metrics", "host:70000"], "metrics"),
    (["watch", "--interval", "nan"], "--interval"),
    (["watch", "--duration", "nan"], "--duration"),
    (["watch", "--hysteresis", "nan"], "--hysteresis"),
    (["verify", "--interval", "nan"], "--interval"),
    (["verify", "--duration", "nan"], "--duration"),
    (["watch", "--limit", "x=1\u212a"], "--limit"),      # KELVIN SIGN once gave a traceback
    (["trace", "--rss-min", "0"], "--rss-min"),
    (["trace", "--rss-min", "100"], "--rss-min"),        # below one page
    (["trace", "--rss-min", "lots"], "--rss-min"),
    (["trace", "--interval", "0"], "--interval"),
    (["trace", "--interval", "nan"], "--interval"),
    (["trace", "--limit", "a=1G:2G"], "barrier"),
    (["trace", "--limit", "nosize"], "--limit"),
])
def test_usage_errors(args, mentions, no_host):
    res = invoke(*args)
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert res.stdout == ""
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert res.stderr.rstrip("\n").splitlines()[-1] == errors[0]     # one line, and last
    assert mentions in errors[0]
    assert no_host == []


# -- render ---------------------------------------------------------------------------------

def record(name, limit=None, barrier=None, estimate=0, exact=None, failcnt=0, switches=0):
    acc = Account(name, 1, Limit(limit, barrier) if limit else None)
    acc.on_estimate(estimate)
    if exact is not None:
        acc.on_exact(exact, now=0)
    acc.failcnt, acc.switches = failcnt, switches
    return account_record("snapshot", acc, 0.0)


def test_table_fits_79_columns_with_long_names():
    long_name = "/" + "/".join(f"level{i}-with-a-rather-long-name.slice" for i in range(8))
    records = [record(long_name, 2**62, 2**61, 2**62 + 12345, 3 * 2**60 + 1, 10**6, 10**6),
               record("/short"), record("/x" * 100, 512 << 20, None, 1 << 30, 100 << 20)]
    lines = render.table(records, 79).splitlines()
    assert len(lines) == 1 + len(records)
    assert all(len(line) <= 79 for line in lines), [len(l) for l in lines]
    assert lines[0].split() == ["cgroup", "name", *render.TABLE_COLUMNS]
    head, _, tail = lines[1].split()[0].partition("…")   # the middle of a long path is cut
    assert tail and long_name.startswith(head) and long_name.endswith(tail)
    assert lines[2].split()[0] == "/short"


@settings(database=None, deadline=None, max_examples=200)
@given(st.lists(st.tuples(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=300),
    st.one_of(st.none(), st.integers(1, MAX_SIZE)),
    st.integers(0, MAX_SIZE), st.integers(0, MAX_SIZE),
    st.integers(0, 10**7), st.integers(0, 10**7)), min_size=1, max_size=5))
def test_table_always_fits_79_columns(rows):
    records = [record(name, limit, None, est, exact, fc, sw)
               for name, limit, est, exact, fc, sw in rows]
    lines = render.table(records, 79).splitlines()
    assert len(lines) == 1 + len(records)
    assert max(len(line) for line in lines) <= 79


def test_hostile_cgroup_name_stays_on_one_row():
    evil = "/job\nfake        0     0     -     -       0 fast        0        0"
    assert len(render.table([record(evil)]).splitlines()) == 2
    assert len(render.table([record(evil)], 79).splitlines()) == 2
    assert len(render.beancounters([record(evil)]).splitlines()) == 5


def test_beancounters_layout():
    text = render.beancounters([record("/a", 1 << 30, 512 << 20, 10 << 30, 300 << 20, failcnt=3),
                                record("/free", estimate=8192)])
    lines = text.splitlines()
    assert lines[0] == "Version: 2.5"
    assert lines[1].split() == ["uid", "resource", "held", "maxheld", "barrier", "limit", "failcnt"]
    assert lines[2] == "/a:"
    P = PAGE_SIZE
    # maxheld is the highest usage measured, never the estimate (10G here)
    assert lines[3].split() == ["physpages", str((300 << 20) // P), str((300 << 20) // P),
                                str((512 << 20) // P), str((1 << 30) // P), "3"]
    # privvmpages: the mapped total (the estimate), with no vm-limit
    assert lines[4].split() == ["privvmpages", str((10 << 30) // P), str((10 << 30) // P),
                                "unlimited", "unlimited", "0"]
    assert lines[5] == "/free:"
    assert lines[6].split() == ["physpages", "0", "0", "unlimited", "unlimited", "0"]   # not measured
    assert lines[7].split() == ["privvmpages", "2", "2", "unlimited", "unlimited", "0"]


def test_beancounters_privvmpages_against_a_vm_limit():
    rec = dict(record("/a", 1 << 30, None, 8 << 20, 4096), vm_limit_bytes=2 << 30)
    row = render.beancounters([rec]).splitlines()[4].split()
    assert row == ["privvmpages", str((8 << 20) // PAGE_SIZE), str((8 << 20) // PAGE_SIZE),
                   str((2 << 30) // PAGE_SIZE), str((2 << 30) // PAGE_SIZE), "0"]


def test_beancounters_barrier_defaults_to_limit():
    lines = render.beancounters([record("/a", 1 << 30, None, 4096, 4096)]).splitlines()
    assert lines[3].split()[3:5] == [str((1 << 30) // 4096)] * 2


def test_beancounters_values_sit_under_their_headings():
    lines = render.beancounters([record("/a", 1 << 30, 512 << 20, 10 << 30, 300 << 20)]).splitlines()
    heads = {m.group(): m.end() for m in re.finditer(r"\S+", lines[1])}
    for row in (lines[3], lines[4]):   # physpages and privvmpages
        ends = [m.end() for m in re.finditer(r"\S+", row)][1:]
        assert ends == [heads[h] for h in ("held", "maxheld", "barrier", "limit", "failcnt")]


# -- --config: refused before anything touches the host ------------------------------------

GOOD_CONFIG = '[cgroup."job"]\nlimit = "1G"\naction = "kill"\n'


@pytest.mark.parametrize("content, mode, fragment", [
    (GOOD_CONFIG, 0o666, "writable by group or others"),
    (GOOD_CONFIG, 0o620, "writable by group or others"),
    ('[cgroup."job"]\nlimit = "1G"\nbarrier = "2G"\n', 0o600, "barrier"),
    ('[cgroup."job"]\nlimit = "1G"\nsurprise = 1\n', 0o600, "surprise"),
    ("", 0o600, "cgroup"),
])
def test_bad_config_exits_2_before_touching_the_host(tmp_path, no_host, content, mode, fragment):
    import os
    path = tmp_path / "beanwatch.toml"
    path.write_text(content)
    os.chmod(path, mode)
    res = invoke("watch", "--config", str(path))
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("beanwatch: ")
    assert no_host == []


def test_config_that_is_a_symlink_or_missing_is_refused(tmp_path, no_host):
    good = tmp_path / "real.toml"
    good.write_text(GOOD_CONFIG)
    link = tmp_path / "link.toml"
    link.symlink_to(good)
    for path in (link, tmp_path / "missing.toml", tmp_path):
        res = invoke("watch", "--config", str(path))
        assert res.exit_code == 2 and res.stdout == "" and no_host == [], res.output


# issue 11: --count, --kill-scope, --prefer, --avoid, --grace


@pytest.mark.parametrize("args", [
    ["--count", "pss"], ["--kill-scope", "largest"], ["--grace", "-1"], ["--grace", "nan"],
    ["--grace", "3601"],
])
def test_victim_and_usage_options_refuse_bad_values(args, no_host):
    res = invoke("watch", "--limit", "x=1G", *args)
    assert res.exit_code == 2 and res.stdout == "" and no_host == []
    assert args[0] in res.stderr


def test_victim_and_usage_options_reach_the_watches(monkeypatch):
    seen = {}

    def resolve(host, limits, action, hysteresis, adaptive, file_config, **kw):
        seen.update(kw)
        raise runtime_module.BeanwatchError("stop here")
    monkeypatch.setattr(cli_module, "require_root", lambda: None)
    monkeypatch.setattr(runtime_module, "open_host", lambda: object())
    monkeypatch.setattr(runtime_module, "resolve_watches", resolve)
    res = invoke("watch", "--limit", "x=1G", "--action", "kill", "--count", "rss+swap",
                 "--kill-scope", "child", "--prefer", "w-*", "--prefer", "z", "--avoid", "db",
                 "--grace", "2.5")
    assert res.exit_code == 2 and "stop here" in res.stderr
    from observer.core.config import Count, KillScope
    assert seen["policy"] == {"count": Count.RSS_SWAP, "kill_scope": KillScope.CHILD,
                              "grace": 2.5, "prefer": ("w-*", "z"), "avoid": ("db",)}
    res = invoke("watch", "--limit", "x=1G")
    assert seen["policy"] == {}     # nothing given: the config file's or built-in defaults
