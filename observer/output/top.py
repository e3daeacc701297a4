"""`beanwatch top`: a full-screen live view, closest-to-limit first; Enter on a cgroup
lists its processes."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from . import render
from ..core.names import printable
from ..core.sizes import format_size

SORTS = ("closeness", "held", "estimate", "name")
COLUMNS = ("mode", "held", "estimate", "limit", "use%", "failcnt", "switches")
HEADER = ("cgroup", "name", *COLUMNS)
BAR = 10   # cells of the use% bar


def closeness(rec: dict) -> float:
    """held / limit (the estimate, an upper bound, where usage is not measured: fast mode);
    cgroups without a limit sort after every limited one."""
    lim = rec.get("limit_bytes")
    used = rec["held_bytes"] if rec.get("held_bytes") is not None else rec["estimate_bytes"]
    return used / lim if lim else -1.0


def sort_records(records: list[dict], key: str) -> list[dict]:
    if key == "name":
        return sorted(records, key=lambda r: r["cgroup"])
    if key == "closeness":
        return sorted(records, key=lambda r: (-closeness(r), r["cgroup"]))
    field = {"held": "held_bytes", "estimate": "estimate_bytes"}[key]
    return sorted(records, key=lambda r: (-(r[field] or 0), r["cgroup"]))


def use_level(rec: dict) -> str | None:
    """Where held stands: "limit" (above the limit), "barrier" (above the barrier), "ok",
    or None (no limit, or usage not measured)."""
    lim, held = rec.get("limit_bytes"), rec.get("held_bytes")
    if not lim or held is None:
        return None
    if held > lim:
        return "limit"
    bar = rec.get("barrier_bytes")
    return "barrier" if bar is not None and held > bar else "ok"


def use_bar(rec: dict, cells: int = BAR) -> str:
    """use% (held / limit) as a bar of cells and the percentage: "#####----- 50";
    "-" without a limit or while usage is not measured."""
    lim, held = rec.get("limit_bytes"), rec.get("held_bytes")
    if not lim or held is None:
        return "-"
    frac = held / lim
    full = min(cells, int(frac * cells + 0.5))
    return "#" * full + "." * (cells - full) + f" {100 * frac:.0f}"


def table_lines(records: list[dict], key: str, width: int) -> list[str]:
    """The cgroup rows as text, fitted to width (the path column takes what is left).
    use% is held / limit, drawn as a bar: "-" without a limit or while usage is not
    measured."""
    rows = []
    for r in sort_records(records, key):
        lim, held = r.get("limit_bytes"), r.get("held_bytes")
        rows.append((*render.path_and_name(r["cgroup"]), r["mode"], format_size(held),
                     format_size(r["estimate_bytes"]), format_size(lim), use_bar(r),
                     str(r["failcnt"]), str(r["switches"])))
    return render.fit_rows(HEADER, rows, width - 1)


@dataclass(frozen=True)
class ProcRow:
    pid: int
    comm: str
    vm_size: int
    rss: int
    pss: int | None           # where measured (smaps_rollup), else None
    growth: float | None      # RSS bytes per second since the last sample, None at first


def process_rows(samples: dict[int, tuple], previous: dict[int, tuple], dt: float) -> list[ProcRow]:
    """samples, previous: pid -> (comm, vm_size, rss, pss). Sorted by contribution (RSS,
    the figure held sums), then pid."""
    rows = []
    for pid, (comm, vm, rss, pss) in samples.items():
        prev = previous.get(pid)
        growth = (rss - prev[2]) / dt if prev is not None and dt > 0 else None
        rows.append(ProcRow(pid, comm, vm, rss, pss, growth))
    return sorted(rows, key=lambda r: (-r.rss, r.pid))


def format_rate(bps: float | None) -> str:
    if bps is None:
        return "-"
    sign = "-" if bps < 0 else "+"
    return sign + format_size(int(abs(bps))) + "/s"


def process_lines(rows: list[ProcRow], width: int) -> list[str]:
    out = [f"{'pid':>8} {'comm':<16} {'vmsize':>9} {'rss':>9} {'pss':>9} {'rss/s':>11}"]
    for r in rows:
        out.append(f"{r.pid:>8} {printable(r.comm)[:16]:<16} {format_size(r.vm_size):>9} "
                   f"{format_size(r.rss):>9} {format_size(r.pss):>9} {format_rate(r.growth):>11}")
    return [line[:width] for line in out]


class EventPane:
    """Recent events, newest first: switches, barrier and limit crossings, actions. Exact
    checks repeat every interval while a cgroup is slow: a run of them for one cgroup is
    one line with a count (the latest figure shown)."""

    def __init__(self, size: int = 8):
        self.lines = collections.deque(maxlen=size)   # [stamp, text, check cgroup, count]

    def add(self, rec: dict) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(rec["ts"]))
        text = render.describe(rec)
        if rec["event"] == "check":
            for entry in self.lines:
                if entry[2] == rec["cgroup"]:
                    self.lines.remove(entry)
                    entry[0], entry[1], entry[3] = stamp, text, entry[3] + 1
                    self.lines.appendleft(entry)
                    return
            self.lines.appendleft([stamp, text, rec["cgroup"], 1])
            return
        self.lines.appendleft([stamp, text, None, 1])

    def __len__(self) -> int:
        return len(self.lines)

    def text(self) -> list[str]:
        # the count first: a long line is cut at the screen's edge
        return [f"{s} " + (f"x{n} checks, latest: " if c is not None and n > 1 else "") + t
                for s, t, c, n in self.lines]


class TopScreen:
    """Keeps the latest snapshot per cgroup and recent events; draws them with curses.
    Up/down select a cgroup, Enter lists its processes (Enter, Esc or Left go back)."""

    def __init__(self, stdscr, max_events: int = 8, session=None):
        self.scr = stdscr
        self.session = session
        self.latest: dict[str, dict] = {}
        self.events = EventPane(max_events)
        self.sort = SORTS[0]
        self.quit = False
        self.selected = 0
        self.detail: str | None = None     # the cgroup whose processes are listed
        self.samples: dict[int, tuple] = {}
        self.sampled_at = 0.0
        self.colours = {}

    def sink(self, rec: dict) -> None:
        if rec["event"] == "snapshot":
            self.latest[rec["cgroup"]] = rec
        else:
            self.events.add(rec)

    def ordered(self) -> list[dict]:
        return sort_records(list(self.latest.values()), self.sort)

    def keys(self) -> None:
        import curses
        while True:
            ch = self.scr.getch()
            if ch == -1:
                return
            if self.detail is not None:
                if ch in (10, 13, curses.KEY_ENTER, 27, curses.KEY_LEFT, curses.KEY_BACKSPACE):
                    self.detail = None
                elif ch in (ord("q"), ord("Q")):
                    self.quit = True
                self.draw()
                continue
            if ch in (ord("q"), ord("Q"), 27):
                self.quit = True
            elif ch in (ord("s"), ord("S")):
                self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
            elif ch == ord("n"):
                self.sort = "name"
            elif ch in (curses.KEY_DOWN, ord("j")):
                self.selected = min(self.selected + 1, max(0, len(self.latest) - 1))
            elif ch in (curses.KEY_UP, ord("k")):
                self.selected = max(0, self.selected - 1)
            elif ch in (10, 13, curses.KEY_ENTER) and self.latest:
                self.detail = self.ordered()[min(self.selected, len(self.latest) - 1)]["cgroup"]
                self.samples, self.sampled_at = {}, 0.0
                self.sample()
            self.draw()

    def sample(self) -> list[ProcRow]:
        """The processes of the cgroup shown (and its descendants), read from /proc."""
        s = self.session
        if s is None or self.detail is None:
            return []
        now = time.monotonic()
        samples = {}
        for pid in s.cg.subtree_procs(self.detail):
            st = s.procfs.status(pid)
            if st is None or not st.vm_size:   # gone, or a kernel thread
                continue
            samples[pid] = (st.name, st.vm_size, st.vm_rss, getattr(st, "pss", None))
        rows = process_rows(samples, self.samples, now - self.sampled_at)
        self.samples, self.sampled_at = samples, now
        self.rows = rows
        return rows

    def colour(self, level: str | None) -> int:
        return self.colours.get(level, 0)

    def draw(self) -> None:
        import curses
        h, w = self.scr.getmaxyx()
        self.scr.erase()
        if self.detail is not None:
            self.draw_detail(h, w)
            self.scr.refresh()
            return
        title = (f"beanwatch top  {len(self.latest)} cgroups  sort: {self.sort}  "
                 f"[s]ort [n]ame up/down Enter: processes [q]uit")
        self.scr.addnstr(0, 0, title, w - 1, curses.A_BOLD)
        records = self.ordered()
        self.selected = min(self.selected, max(0, len(records) - 1))
        lines = table_lines(records, self.sort, w - 1)
        room = max(1, h - 3 - len(self.events) - 1)
        for i, line in enumerate(lines[:room + 1]):
            attr = curses.A_REVERSE if i == 0 else 0
            if i and i - 1 == self.selected:
                attr = curses.A_BOLD | curses.A_UNDERLINE
            self.scr.addnstr(2 + i, 0, line, w - 1, attr)
            if i:
                bar = use_bar(records[i - 1])
                at = line.rfind(bar) if bar != "-" else -1
                if 0 <= at < w - 1:
                    self.scr.chgat(2 + i, at, min(len(bar), w - 1 - at),
                                   attr | self.colour(use_level(records[i - 1])))
        y = min(h - len(self.events) - 1, 3 + min(len(lines), room + 1))
        if len(self.events) and y < h:
            self.scr.addnstr(y, 0, "recent events", w - 1, curses.A_BOLD)
            for i, ev in enumerate(self.events.text()):
                if y + 1 + i < h:
                    self.scr.addnstr(y + 1 + i, 0, ev, w - 1)
        self.scr.refresh()

    def draw_detail(self, h: int, w: int) -> None:
        import curses
        rec = self.latest.get(self.detail, {})
        title = (f"beanwatch top  {printable(self.detail)}  held "
                 f"{format_size(rec.get('held_bytes'))}  estimate "
                 f"{format_size(rec.get('estimate_bytes'))}  limit "
                 f"{format_size(rec.get('limit_bytes'))}  [Enter/Esc] back [q]uit")
        self.scr.addnstr(0, 0, title, w - 1, curses.A_BOLD)
        lines = process_lines(getattr(self, "rows", []), w - 1)
        for i, line in enumerate(lines[:max(1, h - 3)]):
            self.scr.addnstr(2 + i, 0, line, w - 1, curses.A_REVERSE if i == 0 else 0)

    def tick(self) -> None:
        if self.detail is not None:
            self.sample()
        self.draw()


def run_top(build_session, should_stop) -> int:
    """build_session(sink) gives the session whose records the screen shows."""
    import curses

    def main(stdscr):
        curses.curs_set(0)
        stdscr.nodelay(True)
        stdscr.keypad(True)
        screen = TopScreen(stdscr)
        if curses.has_colors():
            curses.start_color()
            curses.use_default_colors()
            for n, (level, fg) in enumerate((("ok", curses.COLOR_GREEN),
                                             ("barrier", curses.COLOR_YELLOW),
                                             ("limit", curses.COLOR_RED)), start=1):
                curses.init_pair(n, fg, -1)
                screen.colours[level] = curses.color_pair(n)
        session = build_session(screen.sink)
        screen.session = session
        try:
            session.start()
            screen.draw()

            def on_loop():
                screen.keys()

            session.run(None, lambda: screen.quit or should_stop(), on_tick=screen.tick,
                        on_loop=on_loop)
        finally:
            session.stop()
        return 0
    return curses.wrapper(main)
