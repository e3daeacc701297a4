"""The top view's pure parts: sorting by closeness to the limit, fitting the width."""

import pytest

from observer.output.top import (SORTS, EventPane, closeness, format_rate, process_lines,
                                 process_rows, sort_records, table_lines, use_bar, use_level)

MiB = 1 << 20


def rec(name, held, limit=None, estimate=None, mode="fast"):
    return {"cgroup": name, "held_bytes": held, "estimate_bytes": estimate or held,
            "exact_bytes": None, "limit_bytes": limit, "mode": mode, "failcnt": 0, "switches": 0}


RECORDS = [rec("/a", 100 * MiB, 1000 * MiB), rec("/b", 90 * MiB, 100 * MiB),
           rec("/c", 900 * MiB), rec("/d", 50 * MiB, 60 * MiB, estimate=2000 * MiB)]


def test_closest_to_limit_first_unlimited_last():
    assert [r["cgroup"] for r in sort_records(RECORDS, "closeness")] == ["/b", "/d", "/a", "/c"]
    assert closeness(rec("/x", 5)) == -1.0


def test_other_sorts():
    assert [r["cgroup"] for r in sort_records(RECORDS, "held")] == ["/c", "/a", "/b", "/d"]
    assert [r["cgroup"] for r in sort_records(RECORDS, "estimate")] == ["/d", "/c", "/a", "/b"]
    assert [r["cgroup"] for r in sort_records(RECORDS, "name")] == ["/a", "/b", "/c", "/d"]
    assert set(SORTS) == {"closeness", "held", "estimate", "name"}


def test_lines_fit_the_width_and_show_use():
    long = rec("/" + "x" * 200, 10 * MiB, 20 * MiB)
    lines = table_lines(RECORDS + [long], "closeness", 72)
    assert all(len(line) <= 72 for line in lines)
    assert lines[0].split()[:3] == ["cgroup", "name", "mode"]
    assert lines[1].split()[0] == "/b" and lines[1].split()[6:8] == ["#########.", "90"]
    assert lines[-1].split()[6] == "-"   # /c has no limit


def test_hostile_names_stay_on_one_line():
    lines = table_lines([rec("/a\nb", 1)], "name", 80)
    assert len(lines) == 2 and "\n" not in lines[1]


def test_use_bar_and_its_level():
    assert use_bar(rec("/a", 50 * MiB, 100 * MiB)) == "#####..... 50"
    assert use_bar(rec("/a", 150 * MiB, 100 * MiB)) == "########## 150"   # full, no overflow
    assert use_bar(rec("/a", 0, 100 * MiB)) == ".......... 0"
    assert use_bar(rec("/a", None, 100 * MiB)) == "-" == use_bar(rec("/a", 5))
    below = dict(rec("/a", 80 * MiB, 100 * MiB), barrier_bytes=90 * MiB)
    at_barrier = dict(rec("/a", 95 * MiB, 100 * MiB), barrier_bytes=90 * MiB)
    assert [use_level(r) for r in (below, at_barrier, rec("/a", 101 * MiB, 100 * MiB),
                                   rec("/a", 100 * MiB, 100 * MiB), rec("/a", 5),
                                   rec("/a", None, 100 * MiB))] == \
        ["ok", "barrier", "limit", "ok", None, None]


def test_process_rows_sorted_by_contribution_with_growth():
    prev = {1: ("a", 100, 10 * MiB, None), 2: ("b", 100, 50 * MiB, None)}
    now = {1: ("a", 200, 30 * MiB, None), 2: ("b", 100, 40 * MiB, 35 * MiB),
           3: ("c", 300, 5 * MiB, None)}
    rows = process_rows(now, prev, 2.0)
    assert [r.pid for r in rows] == [2, 1, 3]
    assert [r.growth for r in rows] == [-5 * MiB, 10 * MiB, None]
    assert rows[0].pss == 35 * MiB
    lines = process_lines(rows, 80)
    assert lines[0].split() == ["pid", "comm", "vmsize", "rss", "pss", "rss/s"]
    assert lines[1].split()[0] == "2" and lines[1].split()[-1] == format_rate(-5 * MiB)
    assert format_rate(None) == "-" and format_rate(10 * MiB).startswith("+")
    assert all(len(line) <= 40 for line in process_lines(rows, 40))


def _event(kind, cgroup, ts=0.0, **kw):
    base = {"event": kind, "ts": ts, "cgroup": cgroup, "held_bytes": MiB, "exact_bytes": MiB,
            "limit_bytes": 2 * MiB, "estimate_bytes": 3 * MiB, "mode": "slow",
            "previous": "fast", "barrier_bytes": None, "failcnt": 0}
    return dict(base, **kw)


def test_event_pane_collapses_repeated_checks_into_a_count():
    pane = EventPane(8)
    pane.add(_event("mode", "/a"))
    for i in range(5):
        pane.add(_event("check", "/a", ts=i))
    pane.add(_event("check", "/b"))
    pane.add(_event("check", "/a", exact_bytes=MiB // 2))
    text = pane.text()
    assert len(text) == 3, text
    assert "x6 checks, latest: " in text[0][:40] and "exact check" in text[0]
    assert "checks" not in text[1]         # /b: one check, no count
    assert "fast -> slow" in text[2]       # the switch stays
