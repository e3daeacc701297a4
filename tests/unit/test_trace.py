"""`beanwatch trace`'s Python side: kinds named from the event, records built from it."""

from dataclasses import dataclass, field

from observer.app.trace import Tracer, growth_kind, signed64
from observer.core.sizes import PAGE_SIZE
from observer.kernel import wire
from observer.output import render


def test_kinds():
    assert growth_kind(wire.EV_GROW_EXEC, 0, "x86_64") == "exec"
    assert growth_kind(wire.EV_GROW_FORK, 9, "x86_64") == "fork"
    assert growth_kind(wire.EV_GROW, wire.GROW_NO_SYSCALL, "x86_64") == "stack"
    assert [growth_kind(wire.EV_GROW, nr, "x86_64") for nr in (9, 12, 25, 30, 59)] == \
        ["mmap", "brk", "mremap", "shm", "exec"]
    assert growth_kind(wire.EV_GROW, 0, "x86_64") == "mapping"        # read(): not a mapping call
    assert growth_kind(wire.EV_GROW, wire.GROW_UNKNOWN, "x86_64") == "mapping"
    assert growth_kind(wire.EV_GROW, 9, "aarch64") == "mapping"       # other numbers: not named
    assert growth_kind(wire.EV_GROW, wire.GROW_NO_SYSCALL, "aarch64") == "stack"


@dataclass
class Status:
    name: str


@dataclass
class FakeProcfs:
    comms: dict

    def status(self, pid):
        return Status(self.comms[pid]) if pid in self.comms else None


@dataclass
class FakeSession:
    tree: dict
    seed: dict
    covered_by: dict
    procfs: FakeProcfs
    refreshed: int = 0

    def refresh_tree(self):
        self.refreshed += 1
        self.tree[99] = "/late"


def test_records_carry_exact_bytes_and_the_estimate_with_the_seed():
    s = FakeSession({7: "/job"}, {7: 100}, {7: ["acc"]}, FakeProcfs({42: "hog"}))
    out = []
    t = Tracer(s, out.append, min_pages=16, everything=False, clock=lambda: 1000.0,
               monotonic_ns=lambda: 5_000_000_000)
    t.on_growth(wire.Event(wire.EV_GROW, 42, 7, 16, 1000, 4_000_000_000, 9))
    t.on_growth(wire.Event(wire.EV_GROW, 42, 7, 15, 1000, 4_000_000_000, 9))     # below: dropped
    t.on_growth(wire.Event(wire.EV_GROW_FORK, 43, 8, 64, 5, 4_000_000_000, 0))    # not traced
    t.flush()
    assert len(out) == 1
    rec = out[0]
    assert rec["event"] == "grow" and rec["cgroup"] == "/job" and rec["ts"] == 999.0
    assert (rec["pid"], rec["comm"], rec["kind"]) == (42, "hog", "mmap")
    assert rec["bytes"] == 16 * PAGE_SIZE and rec["estimate_bytes"] == 1100 * PAGE_SIZE
    line = render.trace_line(rec)
    assert line.split()[1:] == ["/job", "-", "42", "hog", "mmap", str(16 * PAGE_SIZE),
                                render.format_size(1100 * PAGE_SIZE)]
    assert render.trace_header().split() == list(render.TRACE_COLUMNS)


def test_every_cgroup_and_one_made_since():
    s = FakeSession({}, {}, {}, FakeProcfs({}))
    out = []
    t = Tracer(s, out.append, min_pages=1)
    t.on_growth(wire.Event(wire.EV_GROW, 5, 99, 1, (1 << 64) - 3, 0, -1))
    t.flush()
    assert s.refreshed == 1
    assert out[0]["cgroup"] == "/late" and out[0]["comm"] is None and out[0]["kind"] == "stack"
    assert out[0]["estimate_bytes"] == 0          # a negative kernel count shows as 0
    assert signed64((1 << 64) - 3) == -3 and signed64(5) == 5
