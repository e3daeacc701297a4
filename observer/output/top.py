"""`beanwatch top`: a full-screen live view, closest-to-limit first."""

from __future__ import annotations

import collections
import time

from . import render
from ..core.sizes import format_size

SORTS = ("closeness", "held", "estimate", "name")
COLUMNS = ("mode", "held", "estimate", "limit", "use%", "failcnt", "switches")
HEADER = ("cgroup", "name", *COLUMNS)


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


def table_lines(records: list[dict], key: str, width: int) -> list[str]:
    """The cgroup rows as text, fitted to width (the path column takes what is left).
    use% is held / limit: "-" without a limit or while usage is not measured."""
    rows = []
    for r in sort_records(records, key):
        lim, held = r.get("limit_bytes"), r.get("held_bytes")
        use = f"{100 * held / lim:.0f}" if lim and held is not None else "-"
        rows.append((*render.path_and_name(r["cgroup"]), r["mode"], format_size(held),
                     format_size(r["estimate_bytes"]), format_size(lim), use,
                     str(r["failcnt"]), str(r["switches"])))
    return render.fit_rows(HEADER, rows, width - 1)


class TopScreen:
    """Keeps the latest snapshot per cgroup and recent events; draws them with curses."""

    def __init__(self, stdscr, max_events: int = 8):
        self.scr = stdscr
        self.latest: dict[str, dict] = {}
        self.events = collections.deque(maxlen=max_events)
        self.sort = SORTS[0]
        self.quit = False

    def sink(self, rec: dict) -> None:
        if rec["event"] == "snapshot":
            self.latest[rec["cgroup"]] = rec
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(rec["ts"]))
            self.events.appendleft(f"{stamp} {render.describe(rec)}")

    def keys(self) -> None:
        while True:
            ch = self.scr.getch()
            if ch == -1:
                return
            if ch in (ord("q"), ord("Q"), 27):
                self.quit = True
            elif ch in (ord("s"), ord("S")):
                self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
                self.draw()
            elif ch == ord("n"):
                self.sort = "name"
                self.draw()

    def draw(self) -> None:
        import curses
        h, w = self.scr.getmaxyx()
        self.scr.erase()
        title = (f"beanwatch top  {len(self.latest)} cgroups  sort: {self.sort}  "
                 f"[s]ort [n]ame [q]uit")
        self.scr.addnstr(0, 0, title, w - 1, curses.A_BOLD)
        lines = table_lines(list(self.latest.values()), self.sort, w - 1)
        room = max(1, h - 3 - len(self.events) - 1)
        for i, line in enumerate(lines[:room + 1]):
            self.scr.addnstr(2 + i, 0, line, w - 1, curses.A_REVERSE if i == 0 else 0)
        y = min(h - len(self.events) - 1, 3 + min(len(lines), room + 1))
        if self.events and y < h:
            self.scr.addnstr(y, 0, "recent events", w - 1, curses.A_BOLD)
            for i, ev in enumerate(self.events):
                if y + 1 + i < h:
                    self.scr.addnstr(y + 1 + i, 0, ev, w - 1)
        self.scr.refresh()


def run_top(build_session, should_stop) -> int:
    """build_session(sink) gives the session whose records the screen shows."""
    import curses

    def main(stdscr):
        curses.curs_set(0)
        stdscr.nodelay(True)
        screen = TopScreen(stdscr)
        session = build_session(screen.sink)
        try:
            session.start()
            screen.draw()

            def on_loop():
                screen.keys()

            session.run(None, lambda: screen.quit or should_stop(), on_tick=screen.draw,
                        on_loop=on_loop)
        finally:
            session.stop()
        return 0
    return curses.wrapper(main)
