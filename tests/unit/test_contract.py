"""The operator's contract (issue 17): what the README and deploy/README say is what the
tool does. Each test fails when the docs and the tool disagree."""

from __future__ import annotations

import ast
import os
import pathlib
import re

import pytest

from observer.app.enforcer import Enforcer
from observer.core.config import Action, Limit
from observer.core.model import Account
from observer.host.hooks import HookRunner, hook_env

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEPLOY = (ROOT / "deploy" / "README.md").read_text()
ME = os.getuid()


# --- hooks: the environment and the records agree (item 8) -----------------------------------

class Actor:
    def __init__(self):
        self.log = []

    def hold(self, name, cid):   # Actor.hold: a freeze that records no members
        return self.freeze(name, cid).ok

    def freeze(self, name, cid):
        from observer.host.actions import ActionResult
        self.log.append(("freeze", name))
        return ActionResult("freeze", name, [], True, "frozen")

    def thaw(self, name, cid):
        from observer.host.actions import ActionResult
        self.log.append(("thaw", name))
        return ActionResult("thaw", name, [], True, "thawed")

    def report(self, name):
        from observer.host.actions import ActionResult
        return ActionResult("report", name, [41, 42], True, "listed")


def _hook(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def _environ(path):
    return dict(i.split("=", 1) for i in path.read_bytes().decode().split("\0") if i)


def test_a_vetoed_action_records_the_pids_and_event_the_hook_was_given(tmp_path):
    dump = tmp_path / "env"
    veto = _hook(tmp_path, "veto", f"cat /proc/$$/environ > {dump}; exit 1")
    records = []
    hooks = HookRunner(None, veto, 2.0, required_uid=ME)
    e = Enforcer(Actor(), records.append, lambda: 2.0, hooks=hooks)
    acc = Account("/job", 5, Limit(100 << 20, None, Action.FREEZE))
    acc.on_estimate(200 << 20)
    acc.on_exact(150 << 20, 1.0)
    e.enforce(acc, {300: 4096, 200: 8192})
    while e.busy():
        e.poll()
    env = _environ(dump)
    (act,) = [r for r in records if r["event"] == "action"]
    assert act["vetoed"] and act["pids"] == [200, 300]
    assert env["BEANWATCH_PIDS"] == "200 300"
    # the hook is told the event of the record that made it run
    assert env["BEANWATCH_EVENT"] == "exceeded"
    from observer.core.records import EVENTS
    assert env["BEANWATCH_EVENT"] in EVENTS


def test_the_on_action_hook_is_told_the_action_record_event(tmp_path):
    dump = tmp_path / "env"
    after = _hook(tmp_path, "after", f"cat /proc/$$/environ > {dump}")
    records = []
    e = Enforcer(Actor(), records.append, lambda: 2.0,
                 hooks=HookRunner(after, None, 2.0, required_uid=ME))
    acc = Account("/job", 5, Limit(100 << 20, None, Action.REPORT))
    acc.on_estimate(200 << 20)
    acc.on_exact(150 << 20, 1.0)
    e.enforce(acc, {41: 4096, 42: 4096})
    while e.busy():
        e.poll()
    env = _environ(dump)
    (act,) = [r for r in records if r["event"] == "action"]
    assert env["BEANWATCH_EVENT"] == act["event"] == "action"
    assert env["BEANWATCH_PIDS"] == " ".join(map(str, act["pids"]))


def test_readme_lists_exactly_the_hook_variables():
    documented = set(re.findall(r"`(BEANWATCH_[A-Z_]+)`", README.split("Hooks:", 1)[1].split("Metrics:", 1)[0]))
    assert documented == {k for k in hook_env("action", {}) if k.startswith("BEANWATCH_")}


# --- held and maxheld; status (items 2, 3) ---------------------------------------------------

def _status_cli(monkeypatch, records):
    from click.testing import CliRunner
    import observer.app.cli as cli_module
    import observer.app.runtime as runtime
    monkeypatch.setattr(runtime, "open_host", lambda: object())
    monkeypatch.setattr(runtime, "resolve_watches", lambda *a, **k: [])
    monkeypatch.setattr(runtime, "status_records", lambda host, watches: records)
    return lambda *args: CliRunner().invoke(cli_module.cli, ["status", *args],
                                            prog_name="beanwatch")


def _measured(name, limit, estimate, exact, barrier=None):
    from observer.core.records import account_record
    acc = Account.measured_once(name, 7, Limit(limit, barrier, Action.REPORT) if limit else None,
                                estimate, exact)
    return account_record("status", acc, 1.0, over_limit=acc.over_limit)


def test_status_exits_3_when_a_cgroup_is_above_its_limit_and_counts_the_failure(monkeypatch):
    over = _measured("/a/job.service", 100 << 20, 1 << 30, 150 << 20)
    fine = _measured("/b/job.service", 100 << 20, 1 << 30, 50 << 20)
    run = _status_cli(monkeypatch, [over, fine])
    res = run("--json")
    assert res.exit_code == 3, res.output
    import json
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["event"], r["failcnt"], r["held_bytes"], r["maxheld_bytes"]) for r in recs] == [
        ("status", 1, 150 << 20, 150 << 20), ("status", 0, 50 << 20, 50 << 20)]
    assert _status_cli(monkeypatch, [fine])("--json").exit_code == 0
    # the table tells the two job.service cgroups apart: their paths, not only their names
    table = _status_cli(monkeypatch, [over, fine])().output
    assert "/a/job.service" in table and "/b/job.service" in table


def test_status_refuses_format_with_json(monkeypatch):
    res = _status_cli(monkeypatch, [])("--format", "beancounters", "--json")
    assert res.exit_code == 2 and "exclude each other" in res.output


def test_the_table_shows_the_path_and_the_name_beside_it():
    from observer.output import render
    cid = "3f2a1b9c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
    recs = [_measured(p, 1 << 30, 1, 1) for p in
            ("/a/job.service", "/b/job.service", f"/system.slice/docker-{cid}.scope")]
    lines = render.table(recs).splitlines()
    assert lines[0].split()[:2] == ["cgroup", "name"]
    assert [l.split()[:2] for l in lines[1:3]] == [["/a/job.service", "-"], ["/b/job.service", "-"]]
    assert lines[3].split()[:3] == [f"/system.slice/docker-{cid}.scope", "docker", cid[:12]]
    fitted = render.table(recs, 79).splitlines()
    assert fitted[1].split()[0] != fitted[2].split()[0]


# --- sizes (item 6) --------------------------------------------------------------------------

@pytest.mark.parametrize("written", ["64", "1048575", "512K"])
def test_limits_under_1m_are_refused_naming_the_unit(written):
    from observer.core.config import ConfigError, parse_limit_spec
    from observer.host.configfile import ConfigFileError, parse_config
    with pytest.raises(ConfigError, match="under the minimum of 1M"):
        parse_limit_spec(f"x={written}")
    toml_value = written if written.isdigit() else f'"{written}"'
    with pytest.raises(ConfigFileError, match="under the minimum of 1M") as e:
        parse_config(f'[cgroup.a]\nlimit = {toml_value}\n')
    if written.isdigit():
        assert "a number without a unit is bytes" in str(e.value)


def test_readme_documents_every_size_unit():
    from observer.core.sizes import _UNITS, parse_size
    units = [u for u in _UNITS if u]
    line = next(l for l in README.splitlines() if l.startswith("- **SIZE**"))
    assert all(u in line for u in units), line
    for u in units:
        parse_size(f"1{u}")


# --- --config with the command line (item 1) -------------------------------------------------

PRECEDENCE = """\
[defaults]
action = "freeze"
hysteresis = 0.3

[cgroup."own"]
limit = "1G"
action = "report"
hysteresis = 0.05

[cgroup."inherits"]
limit = "1G"
"""


class _FakeCg:
    def resolve(self, spec, missing_ok=False):
        return "/" + spec.strip("/")

    def cgroup_id(self, name):
        raise FileNotFoundError(name)   # not there yet: waited for, no guard needed


class _FakeHost:
    cg = _FakeCg()


def _settings(watches):
    return {w.name: (w.limit.action, w.limit.hysteresis) for w in watches}


@pytest.mark.parametrize("cli_action, cli_hyst, expected", [
    # nothing on the command line: the file's own table, then its [defaults]
    (None, None, {"/own": (Action.REPORT, 0.05), "/inherits": (Action.FREEZE, 0.3),
                  "/cli": (Action.FREEZE, 0.3)}),
    # the command line beats [defaults], never a cgroup's own setting
    (Action.KILL, 0.2, {"/own": (Action.REPORT, 0.05), "/inherits": (Action.KILL, 0.2),
                        "/cli": (Action.KILL, 0.2)}),
])
def test_settings_precedence(cli_action, cli_hyst, expected):
    from observer.app.runtime import resolve_watches
    from observer.core.config import parse_limit_spec
    from observer.host.configfile import parse_config
    watches = resolve_watches(_FakeHost(), [parse_limit_spec("cli=1G")], cli_action, cli_hyst,
                              file_config=parse_config(PRECEDENCE), wait_for_missing=True)
    assert _settings(watches) == expected


def test_built_in_defaults_come_last():
    from observer.app.runtime import resolve_watches
    from observer.host.configfile import parse_config
    watches = resolve_watches(_FakeHost(), [], None, None, wait_for_missing=True,
                              file_config=parse_config('[cgroup."a"]\nlimit = "1G"\n'))
    assert _settings(watches) == {"/a": (Action.REPORT, 0.1)}


def test_watch_config_with_action_kill_is_accepted_and_applied(tmp_path, monkeypatch):
    from click.testing import CliRunner
    import observer.app.cli as cli_module
    import observer.app.runtime as runtime
    import observer.host.configfile as configfile
    conf = tmp_path / "bw.toml"
    conf.write_text(PRECEDENCE)
    conf.chmod(0o600)
    monkeypatch.setattr(configfile, "load", lambda path: configfile.parse_config(
        conf.read_bytes()) if path == str(conf) else None)   # owner check: test_configfile
    monkeypatch.setattr(cli_module, "require_root", lambda: None)
    monkeypatch.setattr(runtime, "open_host", lambda: _FakeHost())
    seen = {}

    def run_watch(host, watches, options, reload=None, signals=None):
        seen["watches"] = watches
        return 0
    monkeypatch.setattr(runtime, "run_watch", run_watch)
    res = CliRunner().invoke(cli_module.cli, ["watch", "--config", str(conf), "--action", "kill"],
                             prog_name="beanwatch")
    assert res.exit_code == 0, res.output
    assert _settings(seen["watches"]) == {"/own": (Action.REPORT, 0.05),
                                          "/inherits": (Action.KILL, 0.3)}
    # without --limit or --config, kill is still refused (memory.max limits are reported)
    res = CliRunner().invoke(cli_module.cli, ["watch", "--action", "kill"], prog_name="beanwatch")
    assert res.exit_code == 2 and "--limit or --config" in res.output


# --- wording (report mode, hooks, refusals) ---------------------------------------------------

def _acc_record(event, **extra):
    from observer.core.records import account_record
    acc = Account("/job", 5, Limit(48 << 20, 48 << 20, Action.REPORT))
    acc.on_estimate(1 << 30)
    acc.on_exact((48 << 20) + 4096, 1.0)
    return account_record(event, acc, 1.0, **extra)


def test_report_says_nothing_was_done():
    from observer.output.render import describe
    line = describe(_acc_record("action", action="report", pids=[7, 8], ok=True, detail="listed"))
    assert "done" not in line and "nothing frozen or killed" in line and "7 8" in line


def test_above_the_barrier_never_reads_as_equal():
    from observer.core.sizes import parse_size
    from observer.output.render import describe
    line = describe(_acc_record("barrier", reminder=False, repeats=0))
    used, level = re.match(r"/job: (\S+) is above the barrier (\S+) ", line).groups()
    assert used != level and parse_size(used.rstrip("M") + "M") > parse_size(level)
    reminder = describe(_acc_record("exceeded", reminder=True, repeats=41))
    assert "41 check(s)" in reminder


def test_no_message_repeats_itself():
    from observer.host.actions import ActionRefused, guard
    from observer.host.hooks import HookOutcome
    from observer.output.render import describe
    hook = describe(_acc_record("hook", hook="on-action", returncode=0, timed_out=False,
                                detail="on-action hook exited 0"))
    assert hook.count("on-action hook") == 1, hook

    class Cg:
        def ancestors_or_self(self, name):
            parts = name.strip("/").split("/")
            return ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    with pytest.raises(ActionRefused) as e:
        guard(Cg(), "/system.slice", 1, "/system.slice/beanwatch.service", "/init.scope")
    failed = describe(_acc_record("action", action="kill", pids=[], ok=False, detail=str(e.value)))
    assert failed.count("/job") == 1 and "refused: it holds beanwatch" in failed, failed


# --- watch on a terminal: an events area (unfriendly: watch on a terminal) ---------------------

class _Tty:
    def __init__(self, tty=True):
        self.text, self.tty = "", tty

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_watch_on_a_terminal_keeps_an_events_area():
    from observer.app.runtime import TableSink
    from observer.core.records import account_record
    out, err = _Tty(), _Tty()
    sink = TableSink(lambda: 1, out=out, err=err)
    acc = Account("/job", 5, Limit(256 << 20, None, Action.REPORT))
    acc.on_estimate(1 << 30)
    sink(account_record("mode", acc, 1.0, previous="fast"))
    acc.on_exact(300 << 20, 1.0)
    sink(account_record("exceeded", acc, 1.0, reminder=False, repeats=0))
    for i in range(3):   # rounds after the events: each redraw clears the screen...
        sink(account_record("snapshot", acc, 2.0 + i))
    frame = out.text.rsplit("\x1b[2J", 1)[1]
    # ...and the last frame still shows the table, then the events
    table, _, events = frame.partition("recent events")
    assert "/job" in table and "held" in table
    assert "fast -> slow mode" in events and "is above the limit" in events
    assert err.text == ""          # stderr is that terminal: not written over the screen


def test_watch_to_a_pipe_appends_tables_and_logs_events(capsys):
    from observer.app.runtime import TableSink
    from observer.core.records import account_record
    out = _Tty(tty=False)
    sink = TableSink(lambda: 1, out=out, err=_Tty(tty=False))
    acc = Account("/job", 5, Limit(256 << 20, None, Action.REPORT))
    sink(account_record("snapshot", acc, 1.0))
    sink(account_record("waiting", acc, 1.0, detail="no such cgroup (yet)"))
    sink(account_record("snapshot", acc, 2.0))
    assert out.text.count("cgroup") == 2 and "\x1b" not in out.text
    assert "waiting" in capsys.readouterr().err


# --- demo, oom_score_adj, verify (unfriendly items) ------------------------------------------

@pytest.mark.parametrize("limit", ["2G", "769M", "32M"])
def test_demo_refuses_limits_it_cannot_show(limit, monkeypatch):
    from click.testing import CliRunner
    import observer.app.cli as cli_module
    import observer.app.demo as demo
    monkeypatch.setattr(demo, "run_demo", lambda *a: pytest.fail("ran the demo"))
    monkeypatch.setattr(cli_module, "require_root", lambda: pytest.fail("went on"))
    res = CliRunner().invoke(cli_module.cli, ["demo", "--limit", limit], prog_name="beanwatch")
    assert res.exit_code == 2 and "from 64M to 768M" in res.output


def test_demo_tells_a_kill_from_its_own_cleanup(capsys):
    from observer.app.demo import summarize
    recs = [{"event": "mode"}, {"event": "check"},
            {"event": "action", "action": "kill", "held_bytes": 300 << 20}]
    assert summarize(recs, 256 << 20, None, False) == 1
    assert "was NOT killed: still running" in capsys.readouterr().out
    assert summarize(recs, 256 << 20, -9, False) == 0
    assert "was killed (exit -9)" in capsys.readouterr().out


def test_the_oom_score_note_says_what_it_means(tmp_path):
    from observer.host.selfguard import set_oom_score
    (tmp_path / "self" / "oom_score_adj").mkdir(parents=True)   # cannot be written
    note = set_oom_score(str(tmp_path))
    assert "\n" not in note and "OOM killer may pick beanwatch" in note
    assert "harmless unless" in note and "CAP_SYS_RESOURCE" in note


def test_verify_shows_no_ratio_for_an_empty_cgroup():
    from observer.app.verify import Tally
    from observer.output.render import verify_table
    row = verify_table({"/empty": Tally(samples=3)}).splitlines()[1].split()
    assert row == ["/empty", "3", "0", "0", "-"]


# --- the service's logging: unit, docs and the documented pipeline (item 7) --------------------

def _unit_exec_args():
    unit = (ROOT / "packaging" / "beanwatch.service").read_text()
    line = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    return line.split("=", 1)[1].split()[1:], unit


def test_the_docs_say_what_the_unit_runs():
    args, unit = _unit_exec_args()
    assert "--journal" in args and "StandardOutput=null" in unit
    said = re.search(r"runs `beanwatch watch --config (\S+)\s+(--json --journal)`", README)
    assert said, "README: the unit's command line"
    assert args == ["watch", "--config", said.group(1), *said.group(2).split()]
    assert "runs `watch --json --journal`" in DEPLOY


def _documented_pipelines():
    return [l.strip() for l in DEPLOY.splitlines() if l.strip().startswith("journalctl -u beanwatch -o json")]


def test_the_documented_journal_pipeline_reads_what_beanwatch_sends(tmp_path):
    """What journalctl -o json prints for an entry is a JSON object of its fields (text);
    the documented jq program is run on the fields JournalSink sends."""
    import json
    import shlex
    import shutil
    import subprocess
    from observer.output.journal import fields_of
    (pipeline,) = _documented_pipelines()
    journalctl, _, jq = pipeline.partition(" | ")
    argv = shlex.split(journalctl)
    assert argv[:3] == ["journalctl", "-u", "beanwatch"] and "BEANWATCH_EVENT=action" in argv
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    rec = _acc_record("action", action="kill", pids=[7, 8], ok=True, detail="cgroup.kill written")
    fields = fields_of(rec)
    assert fields["BEANWATCH_EVENT"] == "action"   # the match in the pipeline selects it
    entry = json.dumps({**fields, "_SYSTEMD_UNIT": "beanwatch.service"})
    out = subprocess.run(shlex.split(jq), input=entry, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"cgroup": "/job", "action": "kill", "ok": True, "pids": [7, 8]}


def test_the_debian_unit_is_the_packaged_one():
    deb = (ROOT / "debian" / "beanwatch.service").read_text()
    ours = (ROOT / "packaging" / "beanwatch.service").read_text()
    assert deb == ours.replace("ExecStart=/usr/local/bin/beanwatch ", "ExecStart=/usr/bin/beanwatch ")


# --- example configs (unfriendly: the example configs) ---------------------------------------

def _readme_toml():
    (block,) = re.findall(r"```toml\n(.*?)```", README, re.S)
    return block


@pytest.mark.parametrize("text", [
    (ROOT / "packaging" / "beanwatch.toml.example").read_text(), _readme_toml()])
def test_example_configs_parse_and_start_without_their_cgroups(text):
    """An installed service starts with its shipped example on any systemd host: the
    example reports on system.slice only, and a cgroup missing on this host is waited for."""
    from observer.app.runtime import resolve_watches
    from observer.host.configfile import parse_config
    config = parse_config(text)
    watches = resolve_watches(_FakeHost(), [], None, None, file_config=config,
                              wait_for_missing=True)
    assert all(w.cgroup_id == 0 for w in watches)     # none exists here: all waited for
    assert "/system.slice" in {w.name for w in watches}


def test_the_shipped_example_only_reports_on_system_slice():
    from observer.host.configfile import parse_config
    config = parse_config((ROOT / "packaging" / "beanwatch.toml.example").read_text())
    assert [(c.cgroup, c.limit.action) for c in config.cgroups] == [("system.slice", Action.REPORT)]


# --- the records: every event the code can emit is registered and documented (item 4) ---------

def _emitted_events():
    """Event names the code passes to record()/account_record() as literals, and the
    Effect values the session records (barrier, exceeded); and any dict literal with an
    "event" key outside core/records.py (a record not built by the registry)."""
    from observer.core.model import Effect
    names, stray = {Effect.WARN.value, Effect.EXCEED.value}, []
    for path in (ROOT / "observer").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if called in ("record", "account_record") and node.args:
                    first = node.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        names.add(first.value)
            if isinstance(node, ast.Dict) and path.name != "records.py":
                if any(isinstance(k, ast.Constant) and k.value == "event" for k in node.keys):
                    stray.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return names, stray


def _readme_events():
    table = README.split("| event | when |", 1)[1].split("\n\n", 1)[0]
    names = set()
    for row in table.splitlines()[2:]:
        names |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return names


def test_every_event_is_registered_built_by_the_registry_and_documented():
    from observer.core.records import EVENTS
    emitted, stray = _emitted_events()
    assert stray == [], "records built outside core/records.record"
    assert emitted == set(EVENTS), emitted ^ set(EVENTS)
    assert _readme_events() == set(EVENTS), _readme_events() ^ set(EVENTS)


def test_every_record_has_the_common_fields():
    from observer.core.records import EVENTS, record
    for event in EVENTS:
        rec = record(event, 1.5, None)
        assert list(rec)[:3] == ["event", "ts", "cgroup"]
    with pytest.raises(ValueError):
        record("exceed", 1.0, None)


def test_check_json_records_have_the_common_fields_and_their_own_names(monkeypatch, capsys):
    import json
    from observer.app import hostcheck, runtime
    monkeypatch.setattr(hostcheck, "run_checks", lambda: [
        hostcheck.Result("root", True, "running as root"),
        hostcheck.Result("cgroup.kill", False, "missing", required=False)])
    monkeypatch.setattr(hostcheck, "PROBE_FACTS", {"vm_hook": "mmap-lock"})
    assert runtime.run_check(True) == 0
    recs = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in recs] == ["host_check", "host_check", "host_summary"]
    assert all({"event", "ts", "cgroup"} <= set(r) for r in recs)
    assert [r.get("check") for r in recs[:2]] == ["root", "cgroup.kill"]
    assert "name" not in recs[0] and recs[2]["vm_hook"] == "mmap-lock"


# --- the synopsis, the table columns, the examples (items 5, 9; done when) --------------------

def _synopsis():
    block = README.split("## Commands", 1)[1].split("```", 2)[1]
    commands, current = {}, None
    for line in block.splitlines():
        m = re.match(r"beanwatch (\w+)", line)
        if m:
            current = m.group(1)
            commands.setdefault(current, set())
        elif not line.startswith(" "):
            current = None
        if current:
            commands[current] |= set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line))
    return commands


def test_the_synopsis_lists_every_option_of_every_command():
    from observer.app.cli import cli
    documented = _synopsis()
    assert set(documented) == set(cli.commands), set(documented) ^ set(cli.commands)
    for name, cmd in cli.commands.items():
        real = {o for p in cmd.params if not getattr(p, "hidden", False)
                for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} - {"--help"}
        assert documented[name] == real, (name, documented[name] ^ real)


def test_the_readme_names_the_columns_the_tool_prints():
    from observer.output import render, top
    text = " ".join(README.split("Without `--json`, `watch` prints a table", 1)[1]
                    .split("With `--json`", 1)[0].split())
    watch_cols = re.search(r"one row per cgroup: cgroup \(the path\), name \(.*?\),"
                           r" ([a-z, ]+)\. held", text).group(1).split(", ")
    assert watch_cols == list(render.TABLE_COLUMNS)
    top_cols = re.search(r"`top` shows ([^.]*)\.", text).group(1)
    top_cols = [c.split(" ")[0] for c in top_cols.split(", ")]
    assert top_cols == list(top.HEADER)


def _examples():
    """Every concrete `beanwatch ...` command in the READMEs' code blocks and in watch's
    help: no placeholders ([...], FILE, ...)."""
    from observer.app.cli import EXAMPLES_WATCH
    import shlex
    found = []
    texts = [README, DEPLOY]
    blocks = [b for t in texts for b in re.findall(r"```[a-z]*\n(.*?)```", t, re.S)]
    blocks.append(EXAMPLES_WATCH)
    # inline: `beanwatch watch --config FILE --action kill`, FILE standing for a path
    blocks += [c.replace("FILE", "/etc/beanwatch/beanwatch.toml")
               for t in texts for c in re.findall(r"`((?:sudo )?beanwatch [^`]*)`", t)]
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            words = shlex.split(line) if line else []
            if words[:1] == ["sudo"]:
                words = words[1:]
            if words[:1] != ["beanwatch"] or len(words) < 2:
                continue
            if any(c in line for c in "[]|$") or "..." in line:
                continue   # the synopsis
            found.append(words[1:])
    return found


def test_the_examples_are_found():
    commands = {e[0] for e in _examples()}
    assert {"watch"} <= commands and len(_examples()) >= 4


@pytest.mark.parametrize("args", _examples(), ids=lambda a: " ".join(a))
def test_every_documented_example_parses(args, tmp_path):
    """Each documented command line is accepted by the command line parser with its values
    checked (option callbacks run; nothing is started)."""
    import click
    from click.testing import CliRunner
    from observer.app.cli import cli
    if args[0].startswith("-"):    # --version
        res = CliRunner().invoke(cli, list(args), prog_name="beanwatch")
        assert res.exit_code == 0 and res.output.startswith("beanwatch")
        return
    ctx = cli.make_context("beanwatch", list(args), resilient_parsing=False)
    name, cmd, rest = cli.resolve_command(ctx, list(args))
    with cmd.make_context(name, rest, parent=ctx) as sub:
        assert isinstance(sub, click.Context)


def test_the_start_record_says_which_feature_the_kernel_refused():
    from observer.output.render import describe
    line = describe({"event": "start", "ts": 0, "cgroup": None, "vm_hook": "mmap-lock",
                     "slow_source": "rss-stat", "not_covered": [],
                     "refused_features": {"per-CPU slot": "Permission denied"}})
    assert "slower: per-CPU slot refused by the kernel (Permission denied)" in line
    assert "slower" not in describe({"event": "start", "ts": 0, "cgroup": None,
                                     "vm_hook": "mmap-lock", "slow_source": "rss-stat"})
