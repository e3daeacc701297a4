"""Victim selection from literals: scope, ranking by size, prefer and avoid, oom.group."""

from __future__ import annotations

from observer.core.config import KillScope
from observer.core.victims import Candidate, between, choose, config_mark, oom_group_of, rank

L = "/job"


def kids(*specs):
    return [Candidate(f"{L}/{n}", size, mark) for n, size, mark in specs]


def test_cgroup_scope_is_the_whole_limited_cgroup():
    c = choose(KillScope.CGROUP, L, kids(("a", 10, None)))
    assert (c.cgroup, c.pid) == (L, None) and "whole" in c.reason


def test_child_scope_takes_the_largest_child():
    c = choose(KillScope.CHILD, L, kids(("small", 10, None), ("big", 300, None), ("mid", 50, None)))
    assert c.cgroup == f"{L}/big" and c.pid is None
    assert [x.cgroup for x in c.candidates] == [f"{L}/big", f"{L}/mid", f"{L}/small"]
    d = c.describe()
    assert d["victim"] == {"cgroup": f"{L}/big"} and d["candidates"][0]["bytes"] == 300
    assert d["candidates_total"] == 3 and "largest child cgroup" in d["reason"]


def test_prefer_comes_first_and_avoid_last():
    cands = kids(("big", 300, "avoid"), ("mid", 50, None), ("small", 10, "prefer"))
    assert choose(KillScope.CHILD, L, cands).cgroup == f"{L}/small"
    cands = kids(("big", 300, "avoid"), ("mid", 50, None))
    c = choose(KillScope.CHILD, L, cands)
    assert c.cgroup == f"{L}/mid" and "not marked avoid" in c.reason
    c = choose(KillScope.CHILD, L, kids(("big", 300, "avoid"), ("b2", 30, "avoid")))
    assert c.cgroup == f"{L}/big" and "all being marked avoid" in c.reason


def test_process_scope_takes_the_largest_process():
    cands = [Candidate(f"{L}/a", 10, None, 11, "small", 5),
             Candidate(f"{L}/b", 99, None, 12, "hog", 6)]
    c = choose(KillScope.PROCESS, L, cands)
    assert (c.pid, c.cgroup, c.victim.start_time) == (12, None, 6)
    assert c.describe()["victim"] == {"pid": 12, "comm": "hog", "cgroup": f"{L}/b"}


def test_no_candidate_falls_back_to_the_whole_cgroup():
    c = choose(KillScope.CHILD, L, [])
    assert c.cgroup == L and "no child cgroup" in c.reason


def test_oom_group_widens_the_victim_to_the_topmost_group():
    cands = [Candidate(f"{L}/svc/w1", 99, None, 12, "hog", 6)]
    c = choose(KillScope.PROCESS, L, cands, {f"{L}/svc", f"{L}/svc/w1"})
    assert (c.cgroup, c.pid) == (f"{L}/svc", None) and "oom.group" in c.reason
    c = choose(KillScope.CHILD, L, kids(("a", 1, None)), {L})
    assert c.cgroup == L and "limited cgroup" in c.reason
    assert oom_group_of(L, f"{L}/x/y", set()) is None


def test_between_and_rank_and_config_marks():
    assert between(L, f"{L}/a/b") == [L, f"{L}/a", f"{L}/a/b"]
    assert between("/", "/a") == ["/", "/a"]
    assert between(L, L) == [L]
    assert [c.size for c in rank(kids(("a", 1, None), ("b", 2, None)))] == [2, 1]
    assert config_mark(["worker-3"], ("worker-*",), ()) == "prefer"
    assert config_mark(["worker-3"], ("worker-*",), ("*-3",)) == "avoid"   # avoid wins
    assert config_mark(["db"], ("worker-*",), ()) is None
