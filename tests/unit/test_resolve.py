"""runtime.resolve_watches: where count, kill scope, grace, prefer and avoid come from."""

from __future__ import annotations

from observer.app.runtime import Host, resolve_watches
from observer.core.config import Action, Count, KillScope, LimitSpec
from observer.host.cgroupfs import CgroupFS
from observer.host.configfile import parse_config
from observer.host.procfs import ProcFS


def test_the_cgroups_own_key_wins_over_the_command_line_which_wins_over_defaults(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    host = Host(CgroupFS(str(tmp_path)), ProcFS(str(tmp_path)), "/own", "/init")
    cfg = parse_config('''
[defaults]
kill_scope = "child"
grace = 3
[cgroup."a"]
limit = "1G"
[cgroup."b"]
limit = "1G"
kill_scope = "process"
''')
    policy = {"kill_scope": KillScope.CGROUP, "count": Count.RSS_SWAP}
    watches = resolve_watches(host, [LimitSpec("c", 1 << 30, None)], Action.REPORT, 0.1,
                              file_config=cfg, policy=policy)
    by = {w.name: w.limit for w in watches}
    assert by["/c"].kill_scope is KillScope.CGROUP and by["/c"].count is Count.RSS_SWAP
    assert by["/a"].kill_scope is KillScope.CGROUP       # the command line over [defaults]
    assert by["/a"].grace == 3.0 and by["/a"].count is Count.RSS_SWAP
    assert by["/b"].kill_scope is KillScope.PROCESS      # its own key over the command line
    plain = resolve_watches(host, [], Action.REPORT, 0.1, file_config=cfg)
    assert {w.name: w.limit.kill_scope for w in plain} == {"/a": KillScope.CHILD,
                                                          "/b": KillScope.PROCESS}


def test_a_vm_limit_only_table_does_not_shift_whose_own_keys_win(tmp_path):
    # A table with a vm_limit and no limit has no Limit: the tables' own keys must still be
    # matched to their own limits (a table without a limit before one with its own
    # kill_scope once handed it the keyless table's, and the command line overrode it).
    for name in ("v", "b"):
        (tmp_path / name).mkdir()
    host = Host(CgroupFS(str(tmp_path)), ProcFS(str(tmp_path)), "/own", "/init")
    cfg = parse_config('''
[cgroup."v"]
vm_limit = "1G"
[cgroup."b"]
limit = "1G"
kill_scope = "process"
''')
    watches = resolve_watches(host, [], Action.REPORT, 0.1, file_config=cfg,
                              policy={"kill_scope": KillScope.CGROUP})
    assert {w.name: w.limit.kill_scope for w in watches} == {"/b": KillScope.PROCESS}
