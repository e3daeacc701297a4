"""Output: JSON lines or a refreshed table on stdout; messages for people on stderr."""

from __future__ import annotations

import json
import sys

from ..core.names import display_name, printable
from ..core.sizes import format_size, parse_size, to_pages

TABLE_COLUMNS = ("held", "maxheld", "barrier", "limit", "failcnt", "mode", "estimate", "switches")
NAME_MAX = 24   # the name column's widest, when the table must fit a width
PATH_MIN = 16   # the path column's narrowest (the name column gives way first)


def json_line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=False)


def _row(rec: dict) -> list[str]:
    return [format_size(rec["held_bytes"]), format_size(rec["maxheld_bytes"]),
            format_size(rec["barrier_bytes"]), format_size(rec["limit_bytes"]),
            str(rec["failcnt"]), rec["mode"], format_size(rec["estimate_bytes"]),
            str(rec["switches"])]


def path_and_name(cgroup: str) -> tuple[str, str]:
    """The cgroup column (the path: two cgroups never look alike) and the name column
    (the friendly name, "-" where it says no more than the path's last part)."""
    path = printable(cgroup)
    name = display_name(cgroup)
    if name == path or path.endswith("/" + name):
        name = "-"
    return path, name


def _cut(text: str, w: int) -> str:
    """text in at most w columns, its start cut to "…"."""
    return text if len(text) <= w else "…" + text[-(w - 1):] if w > 1 else text[-w:]


def _cut_path(text: str, w: int) -> str:
    """A path in at most w columns: its head and its end kept, the middle cut to "…", so
    that /a/…/job.service and /b/…/job.service stay apart."""
    if len(text) <= w or w < 8:
        return _cut(text, w)
    head = w // 3
    return text[:head] + "…" + text[-(w - head - 1):]


def fit_rows(header, rows, width: int | None) -> list[str]:
    """Header and rows as lines: the first two columns (path and name) left-aligned, the
    others right-aligned. With a width, the path takes what the others leave (at least
    PATH_MIN where it can, its middle cut to "…"), the name at most NAME_MAX (its start
    cut); without one
    (output to a pipe or a file), nothing is cut."""
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    path_w, name_w = widths[0], widths[1]
    if width is not None:
        left = width - sum(w + 1 for w in widths[2:]) - 1   # for path and name
        name_w = min(name_w, NAME_MAX, max(len(header[1]), left - PATH_MIN))
        path_w = max(1, left - name_w)
    out = []
    for row in [list(header)] + rows:
        line = (_cut_path(row[0], path_w).ljust(path_w) + " " + _cut(row[1], name_w).ljust(name_w)
                + "".join(" " + c.rjust(w) for c, w in zip(row[2:], widths[2:])))
        out.append(line.rstrip() if width is None else line[:width])
    return out


def table(records: list[dict], width: int | None = None) -> str:
    """One row per cgroup: its path, its name, then TABLE_COLUMNS. With a width (a
    terminal's), fitted to it."""
    rows = [(*path_and_name(r["cgroup"]), *_row(r)) for r in records]
    return "\n".join(fit_rows(("cgroup", "name", *TABLE_COLUMNS), rows, width))


def beancounters(records: list[dict]) -> str:
    """Laid out like OpenVZ's /proc/user_beancounters: one resource per cgroup."""
    out = ["Version: 2.5",
           "       uid  resource                     held              maxheld              barrier                limit              failcnt"]
    for rec in records:
        lim = rec["limit_bytes"]
        bar = rec["barrier_bytes"] if rec["barrier_bytes"] is not None else lim
        vals = [to_pages(rec["held_bytes"] or 0), to_pages(rec["maxheld_bytes"] or 0),
                to_pages(bar) if bar is not None else "unlimited",
                to_pages(lim) if lim is not None else "unlimited", rec["failcnt"]]
        out.append(f"{printable(rec['cgroup'])}:")
        out.append(f"{'':10}  {'physpages':<12}" + "".join(f"{v:>21}" for v in vals))
        # privvmpages: the mapped total, which is the estimate (`status` measures once, so
        # maxheld is the same figure); against a vm-limit where one is set (none is yet)
        vm = to_pages(rec["estimate_bytes"] or 0)
        vm_lim = rec.get("vm_limit_bytes")
        vm_lim = to_pages(vm_lim) if vm_lim is not None else "unlimited"
        vals = [vm, vm, vm_lim, vm_lim, 0]
        out.append(f"{'':10}  {'privvmpages':<12}" + "".join(f"{v:>21}" for v in vals))
    return "\n".join(out)


TRACE_COLUMNS = ("time", "cgroup", "name", "pid", "comm", "kind", "bytes", "estimate")


def trace_header() -> str:
    return _trace_row(TRACE_COLUMNS)


def _trace_row(cols) -> str:
    t, cg, name, pid, comm, kind, size, est = cols
    return (f"{t:<12} {cg:<32} {name:<16} {pid:>7} {comm:<16} {kind:<7} {size:>10} "
            f"{est:>10}").rstrip()


def trace_line(rec: dict) -> str:
    """One record of `trace` as a line under trace_header. grow: bytes exact (the size of
    the change in bytes), estimate the cgroup's after it. rss (slow mode, per interval):
    kind "rss", bytes the process's resident growth over the interval (exact), then its RSS
    now, the interval and the cgroup's exact usage of its limit. mode: a cgroup's switch;
    limit: its memory.max changed."""
    import time as _time
    ts = rec["ts"]
    stamp = _time.strftime("%H:%M:%S", _time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
    cgroup = printable(rec["cgroup"]) if rec["cgroup"] is not None else f"id:{rec['cgroup_id']}"
    path, name = path_and_name(rec["cgroup"]) if rec["cgroup"] is not None else (cgroup, "-")
    estimate = format_size(rec.get("estimate_bytes"))
    if rec["event"] == "mode":
        more = f" ({rec['suppressed']} more not shown)" if rec.get("suppressed") else ""
        return (_trace_row((stamp, path, name, "-", "-", "mode", "-", estimate))
                + f"  {rec.get('previous')} -> {rec['mode']}, limit "
                  f"{format_size(rec.get('limit_bytes'))}{more}")
    if rec["event"] == "limit":    # memory.max changed (limits followed from it)
        before, after = (format_size(v) if v is not None else "max"
                         for v in (rec.get("previous_limit_bytes"), rec.get("limit_bytes")))
        return (_trace_row((stamp, path, name, "-", "-", "limit", "-", estimate))
                + f"  memory.max {before} -> {after}, {rec.get('mode')} mode")
    comm = printable(rec["comm"] or "?")
    if rec["event"] == "rss":
        used, limit = sizes_apart(rec.get("exact_bytes"), rec.get("limit_bytes"))
        return (_trace_row((stamp, path, name, str(rec["pid"]), comm, "rss",
                            str(rec["growth_bytes"]), estimate))
                + f"  over {rec['interval_s']:.2f}s, rss now {format_size(rec['rss_bytes'])}; "
                  f"cgroup {used} of {limit}")
    return _trace_row((stamp, path, name, str(rec["pid"]), comm,
                       rec["kind"], str(rec["bytes"]), estimate))


def describe(record: dict) -> str:
    """A one-line account of a non-snapshot record, for stderr and the demo log."""
    ev, cg = record["event"], display_name(str(record.get("cgroup")))
    held = format_size(record.get("held_bytes"))
    if ev == "mode":
        return (f"{cg}: {record.get('previous')} -> {record['mode']} mode "
                f"(estimate {format_size(record['estimate_bytes'])}, limit {format_size(record['limit_bytes'])})")
    if ev == "check":
        return (f"{cg}: exact check {format_size(record['exact_bytes'])} of limit "
                f"{format_size(record['limit_bytes'])} (estimate {format_size(record['estimate_bytes'])})")
    if ev in ("exceeded", "barrier"):
        what = "limit" if ev == "exceeded" else "barrier"
        level = record["limit_bytes"] if ev == "exceeded" else record["barrier_bytes"]
        used, lvl = sizes_apart(record.get("held_bytes"), level)
        still = (f", still: {record.get('repeats', 0)} check(s) above since the last record"
                 if record.get("reminder") else "")
        return f"{cg}: {used} is above the {what} {lvl} (failcnt {record['failcnt']}{still})"
    if ev == "hook":
        return f"{cg}: {record.get('detail')}"     # "on-action hook exited 0 ..."
    if ev == "action" and record.get("vetoed"):
        return f"{cg}: {record['action']} vetoed: {record.get('detail')}"
    if ev == "action" and not record.get("ok"):
        return f"{cg}: {record['action']} FAILED: {record.get('detail')}"
    if ev == "action" and record.get("action") == "report":
        return (f"{cg}: over its limit, reported only (nothing frozen or killed); "
                f"pids {_pids(record.get('pids'))}")
    if ev == "action":
        done = {"freeze": "frozen", "kill": "killed"}.get(record["action"], record["action"])
        return f"{cg}: {done}: pids {_pids(record.get('pids'))} ({record.get('detail')})"
    if ev == "barrier_action":
        what = record.get("action")
        what = record.get("signal") or what if what == "signal" else what
        state = "" if record.get("ok") else " FAILED"
        return f"{cg}: at the barrier: {what}{state}: {record.get('detail')}"
    if ev == "oom_kill":
        more = (f" ({record['unrecorded']} more since the last record)"
                if record.get("unrecorded") else "")
        return (f"{cg}: the kernel's OOM killer killed pid {record.get('pid')} "
                f"({record.get('comm')}){more}")
    if ev == "start":
        gaps = record.get("not_covered") or []
        refused = record.get("refused_features") or {}
        return (f"probes attached (address space via {record.get('vm_hook')}, slow mode via "
                f"{record.get('slow_source')})"
                + "".join(f"; not covered: {g}" for g in gaps)
                + "".join(f"; slower: {f} refused by the kernel ({why})"
                          for f, why in refused.items()))
    detail = record.get("detail")
    if ev == "reload":
        if record.get("ok"):
            return f"config reloaded (SIGHUP): now watching {detail}"
        return f"config reload (SIGHUP) refused, the running config is kept: {detail}"
    # records about no one cgroup (cgroup null) name none: never "None: ..."
    where = f"{cg}: " if record.get("cgroup") is not None else ""
    if ev == "lost":
        return (f"{where}events lost {record.get('events_lost')}, processes unaccounted "
                f"{record.get('processes_unaccounted')}; resynchronising")
    return f"{where}{ev}" + (f": {detail}" if detail else "")


def _pids(pids, shown: int = 16) -> str:
    pids = list(pids or [])
    more = f" and {len(pids) - shown} more" if len(pids) > shown else ""
    return " ".join(map(str, pids[:shown])) + more if pids else "none"


def sizes_apart(a: int | None, b: int | None) -> tuple[str, str]:
    """Two sizes formatted so that different values never read alike ("48.0M is above
    48M" cannot be): more decimals in the larger's unit until they differ, else bytes."""
    fa, fb = format_size(a), format_size(b)
    if a is None or b is None or a == b or parse_size(fa) != parse_size(fb):
        return fa, fb
    for unit, power in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        scale = 1 << power
        if max(a, b) >= scale:
            for digits in range(2, 7):
                fa, fb = f"{a / scale:.{digits}f}{unit}", f"{b / scale:.{digits}f}{unit}"
                if fa != fb:
                    return fa, fb
            break
    return f"{a} bytes", f"{b} bytes"


def describe_violation(record: dict) -> str:
    """One line for a `verify` violation: an estimate below RSS."""
    who = f"pid {record['pid']} ({record.get('comm')})" if record["pid"] else "cgroup total"
    return (f"VIOLATION {record['cgroup']}: {who} estimate "
            f"{format_size(record['estimate_bytes'])} < RSS {format_size(record['rss_bytes'])}")


def verify_table(tallies: dict) -> str:
    """`verify`'s closing table: one row per cgroup (tallies: name -> verify.Tally)."""
    out = [f"{'cgroup':<40} {'samples':>7} {'violations':>10} {'max drift':>9} {'est/exact':>9}"]
    for name, t in tallies.items():
        ratio = f"{t.max_ratio:.2f}" if t.max_ratio else "-"   # "-": nothing resident to compare
        out.append(f"{name[-40:]:<40} {t.samples:>7} {t.violations:>10} "
                   f"{format_size(t.max_drift):>9} {ratio:>9}")
    return "\n".join(out)


def message(text: str) -> None:
    print(f"beanwatch: {text}", file=sys.stderr, flush=True)
