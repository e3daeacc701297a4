"""verify: the estimate against /proc, with a fake /proc tree and a stand-in session."""

from __future__ import annotations

import pytest

from observer.app.verify import Tally, Verifier, below, slack_bytes
from observer.core.model import Account
from observer.core.sizes import PAGE_SIZE
from observer.host.procfs import ProcFS

KiB, MiB = 1 << 10, 1 << 20


@pytest.mark.parametrize("estimate, before, after, violation", [
    (100, 50, 60, False),
    (100, 100, 100, False),      # equal is sound
    (99, 100, 100, True),
    (80, 100, 50, False),        # RSS fell between the two reads: not provably unsound
    (80, 50, 100, False),
    (40, 50, 60, True),
])
def test_below(estimate, before, after, violation):
    assert below(estimate, before, after) is violation


def status(pid, name, vm_kib, rss_kib):
    return (f"Name:\t{name}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t1\n"
            f"Threads:\t1\nVmSize:\t{vm_kib} kB\nVmRSS:\t{rss_kib} kB\n")


class Session:
    """What Verifier reads of a session: accounts, cgroup members, /proc, the probes' view."""

    def __init__(self, proc_root, members, tracked, estimates):
        self.procfs = ProcFS(str(proc_root))
        self.accounts = [Account(name, i, None) for i, name in enumerate(members, 1)]
        self.members, self.tracked, self.estimates = members, tracked, estimates
        self.cg = self
        self.probes = self

    def clock(self):
        return 5.0

    def subtree_procs(self, name):
        return self.members[name]

    def processes(self):
        return self.tracked

    def read_counters(self):
        return {}

    def estimate(self, acc, counters):
        return self.estimates[acc.name]


@pytest.fixture
def proc(tmp_path):
    def add(pid, name, vm, rss):
        d = tmp_path / str(pid)
        d.mkdir(exist_ok=True)
        (d / "status").write_text(status(pid, name, vm // 1024, rss // 1024))
    add.root = tmp_path
    return add


def test_a_sound_estimate_is_tallied_without_violations(proc):
    proc(10, "a", 100 * MiB, 30 * MiB)
    proc(11, "b", 50 * MiB, 20 * MiB)
    s = Session(proc.root, {"/job": [10, 11]},
                {10: (100 * MiB // PAGE_SIZE, 1), 11: (50 * MiB // PAGE_SIZE, 1)},
                {"/job": 160 * MiB})
    records = []
    v = Verifier(s, records.append)
    v()
    v()
    assert v.violations == 0
    t = v.tallies["/job"]
    assert (t.samples, t.violations, t.max_drift) == (2, 0, 10 * MiB)
    assert t.max_ratio == pytest.approx(160 / 50)
    rec = records[-1]
    assert (rec["event"], rec["processes"], rec["exact_bytes"], rec["drift_bytes"]) == \
        ("verify", 2, 50 * MiB, 10 * MiB)
    # 10 MiB above VmSize is more than shrinks may wait: 1/64 of 100 + 50 MiB
    assert rec["slack_bytes"] == 150 * MiB // 64 and t.over_slack == 2


def test_slack_is_a_64th_of_each_process_at_least_256_kib_at_most_16_mib():
    page = PAGE_SIZE
    assert slack_bytes([]) == 0
    assert slack_bytes([63 * page]) == 256 * KiB       # the floor: 64 pages
    assert slack_bytes([2 * MiB + 300 * KiB]) == 256 * KiB   # a small process
    assert slack_bytes([16 * MiB]) == 256 * KiB        # where 1/64 reaches the floor
    assert slack_bytes([16 * MiB + 64 * page]) == 256 * KiB + page
    assert slack_bytes([64 * MiB, 64 * MiB]) == 2 * MiB
    assert slack_bytes([64 * MiB + 127 * page + 100]) == MiB + page   # whole pages only
    assert slack_bytes([1 << 40]) == 16 * MiB          # the cap: 4096 pages
    assert slack_bytes([2 << 30, 2 << 30]) == 32 * MiB   # 16 MiB each


def test_an_estimate_within_the_slack_is_not_over_it(proc):
    proc(10, "a", 64 * MiB, 30 * MiB)
    s = Session(proc.root, {"/job": [10]}, {10: (65 * MiB // PAGE_SIZE, 1)}, {"/job": 65 * MiB})
    records = []
    v = Verifier(s, records.append)
    v()
    assert records[-1]["drift_bytes"] == records[-1]["slack_bytes"] == MiB
    assert v.tallies["/job"].over_slack == 0 and v.violations == 0


def test_an_untracked_process_and_a_low_total_are_violations(proc):
    proc(10, "hog", 100 * MiB, 30 * MiB)
    proc(12, "kthread", 0, 0)      # no address space: not checked
    s = Session(proc.root, {"/job": [10, 12, 99]}, {}, {"/job": 10 * MiB})   # 99: gone
    records = []
    v = Verifier(s, records.append)
    v()
    violations = [r for r in records if r["event"] == "violation"]
    assert [(r["pid"], r.get("tracked")) for r in violations] == [(10, False), (None, None)]
    assert violations[0]["comm"] == "hog" and violations[0]["estimate_bytes"] == 0
    assert violations[1]["estimate_bytes"] == 10 * MiB and violations[1]["rss_bytes"] == 30 * MiB
    assert v.violations == 2 and v.tallies["/job"] == Tally(1, 2, 90 * MiB, 10 / 30)


# --- run_verify: what the session itself says reaches verify's output --------------------

class RoundsThatRaise:
    """A stand-in session whose every round raised: logged as the real loop_failed does,
    and no tick (so no sample) ever came."""

    def __init__(self, sink):
        self.sink, self.loop_errors, self.accounts = sink, 0, []

    def start(self):
        pass

    def run(self, duration, should_stop, on_tick=None):
        for _ in range(3):
            self.loop_errors += 1
            self.sink({"event": "error", "time": 1.0, "cgroup": None,
                       "detail": "KeyError: 7", "errors": self.loop_errors})
        self.sink({"event": "snapshot", "time": 1.0, "cgroup": "/a"})

    def stop(self):
        pass


@pytest.mark.parametrize("as_json", [True, False])
def test_verify_says_a_round_that_raised_and_fails(monkeypatch, capsys, as_json):
    from observer.app import runtime
    monkeypatch.setattr(runtime, "build_session",
                        lambda host, watches, sink, options: RoundsThatRaise(sink))
    assert runtime.run_verify(None, [], 1.0, 0.1, as_json) == 1
    out, err = capsys.readouterr()
    assert "KeyError: 7" in (out if as_json else err)
    assert "snapshot" not in out + err            # the session's routine records are not shown
    assert "3 internal error(s)" in err
