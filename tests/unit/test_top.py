"""The top view's pure parts: sorting by closeness to the limit, fitting the width."""

from observer.output.top import SORTS, closeness, sort_records, table_lines

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
    lines = table_lines(RECORDS + [long], "closeness", 60)
    assert all(len(line) <= 60 for line in lines)
    assert lines[0].split()[:3] == ["cgroup", "name", "mode"]
    assert lines[1].split()[0] == "/b" and lines[1].split()[6] == "90"
    assert lines[-1].split()[6] == "-"   # /c has no limit


def test_hostile_names_stay_on_one_line():
    lines = table_lines([rec("/a\nb", 1)], "name", 80)
    assert len(lines) == 2 and "\n" not in lines[1]
