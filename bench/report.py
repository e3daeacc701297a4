"""Cells, targets and the rendering of result tables as text (stdout) and markdown."""

from __future__ import annotations


def _num(x: float, unit: str = "") -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if unit in ("/s", "") and ax >= 1e6:
        s = f"{x / 1e6:.2f}M"
    elif unit in ("/s", "") and ax >= 1e4:
        s = f"{x / 1e3:.0f}k"
    elif ax >= 100:
        s = f"{x:.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return s + (unit if unit not in ("",) else "")


def abs_cell(s: dict | None, unit: str = "", p99: bool = False) -> dict:
    return {"kind": "abs", "unit": unit, "summary": s, "p99": p99}


def ratio_cell(s: dict | None) -> dict:
    return {"kind": "ratio", "summary": s}


def text_cell(text: str) -> dict:
    return {"kind": "text", "text": text}


def target(what: str, goal: str, value, met: bool | None, detail: str = "", by: str = "") -> dict:
    """met: True, False, or None when the measurement cannot decide; by: how far from the goal."""
    return {"what": what, "target": goal, "value": value, "met": met, "detail": detail, "by": by}


def fmt(cell: dict) -> str:
    if cell["kind"] == "text":
        return cell["text"]
    s = cell["summary"]
    if not s:
        return "n/a"
    if cell["kind"] == "ratio":
        if s["n"] == 1:
            return f"{s['median']:.3f}"
        return f"{s['median']:.3f} ({s['min']:.2f}-{s['max']:.2f})"
    unit = cell["unit"]
    text = _num(s["median"], unit)
    if cell.get("p99"):
        text += f", p99 {_num(s['p99'], unit)}"
    if s["n"] > 1:
        text += f" ({_num(s['min'], unit)}-{_num(s['max'], unit)})"
    return text


def _grid(table: dict) -> list[list[str]]:
    return [list(table["columns"])] + [[r["label"]] + [fmt(c) for c in r["cells"]]
                                       for r in table["rows"]]


def text(table: dict) -> str:
    grid = _grid(table)
    widths = [max(len(row[i]) for row in grid) for i in range(len(grid[0]))]
    lines = [table["title"]]
    for n, row in enumerate(grid):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"  * {n}" for n in table.get("notes", [])]
    return "\n".join(lines)


def markdown(table: dict) -> str:
    grid = _grid(table)
    lines = [f"#### {table['title']}", ""]
    lines.append("| " + " | ".join(grid[0]) + " |")
    lines.append("|" + "---|" * len(grid[0]))
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in grid[1:]]
    if table.get("notes"):
        lines.append("")
        lines += [f"- {n}" for n in table["notes"]]
    return "\n".join(lines)


def targets_table(targets: list[dict]) -> dict:
    rows = []
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "undecided"}[t["met"]]
        if t.get("by"):
            verdict += f" ({t['by']})"
        rows.append({"label": t["what"], "cells": [text_cell(t["target"]), text_cell(t["detail"]),
                                                   text_cell(verdict)]})
    return {"id": "targets", "title": "Targets (issues 4 and 13)", "columns": ["what", "target",
                                                                       "measured", "verdict"],
            "rows": rows}
