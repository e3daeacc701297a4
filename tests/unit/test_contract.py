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
