"""``python -m infergate history report --out DIR``: history.html, one self-contained page of
trend plots per machine and combination, one small plot per figure: runs in time order,
each point coloured by that run's outcome, the change points found (dashed, with the level
of each segment) and the threshold (the accuracy tolerance; for performance figures the run's
threshold over the first segment's level). Inline CSS and SVG, nothing fetched."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import sqlalchemy as sa

from infergate.atomic import atomic_write_text
from infergate.history.changes import Change, Point, find_changes
from infergate.history.series import Filter
from infergate.history.store import FIGURES, Store, results, runs
from infergate.report.html import COLOURS

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 430, 150, 68, 10, 18, 22
UNITS = {"p50_ms": "p50 ms", "normalised": "p50 × calibration", "instructions":
         "instructions / inference", "memory_mb": "model MB", "cosine": "lowest cosine",
         "task_score": "task score"}

CSS = """
body{font:13px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1f2933;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:6px 24px 30px}section{background:#fff;border:1px solid #dde1e6;
border-radius:8px;padding:8px 14px;margin:12px 0}h2{font-size:17px;margin:4px 0}
h3{font-size:14px;margin:10px 0 4px}.plots{display:flex;flex-wrap:wrap;gap:6px}
svg text{font:10px system-ui,sans-serif;fill:#333}.muted{color:#667}
table{border-collapse:collapse}td,th{border:1px solid #dde1e6;padding:2px 6px;text-align:left}
"""


def _e(value) -> str:
    return escape(str(value), quote=True)


@dataclass(frozen=True)
class Row:
    point: Point
    outcome: str | None
    threshold_pct: float | None
    min_cosine: float | None


def load(store: Store, selection: Filter) -> dict[tuple, dict[str, list[Row]]]:
    """(machine, combo, test) -> figure -> rows in run order."""
    figures = [f for f in FIGURES if not selection.figure or f in selection.figure.split(",")]
    query = (sa.select(runs.c.id, runs.c.created, runs.c.commit, runs.c.machine_id,
                       results.c.test, results.c.combo, results.c.outcome,
                       results.c.threshold_pct, results.c.min_cosine,
                       *(results.c[f] for f in figures))
             .join(runs, runs.c.id == results.c.run_id).where(*selection.where())
             .order_by(runs.c.created, runs.c.id))
    out: dict[tuple, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    with store.transaction() as connection:
        for r in connection.execute(query):
            time = r.created if r.created.tzinfo else r.created.replace(tzinfo=UTC)
            for figure in figures:
                value = r._mapping[figure]
                if value is not None:
                    out[(r.machine_id, r.combo, r.test)][figure].append(
                        Row(Point(r.id, time, r.commit, float(value)), r.outcome,
                            r.threshold_pct, r.min_cosine))
    return out


def _threshold(figure: str, rows: list[Row], changes: list[Change]) -> tuple[float, str] | None:
    if figure == "cosine":
        tol = next((r.min_cosine for r in reversed(rows) if r.min_cosine is not None), None)
        return (tol, f"min_cosine {tol:g}") if tol is not None else None
    pct = next((r.threshold_pct for r in reversed(rows) if r.threshold_pct is not None), None)
    if pct is None:
        return None
    end = changes[0].index if changes else len(rows)
    first = math.exp(sum(math.log(r.point.value) for r in rows[:end]) / end)
    sign = 1 if FIGURES[figure] == "up" else -1
    return first * (1 + sign * pct / 100), f"{sign * pct:+g} % over the first level"


def plot(key: tuple, figure: str, rows: list[Row]) -> str:
    machine, combo, test = key
    changes = find_changes((machine, test, combo, figure), [r.point for r in rows])
    threshold = _threshold(figure, rows, changes)
    values = [r.point.value for r in rows] + ([threshold[0]] if threshold else [])
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - abs(lo) * 0.01 - 1e-9, hi + abs(hi) * 0.01 + 1e-9
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    n = len(rows)
    x = lambda i: PAD_L + (W - PAD_L - PAD_R) * (i / max(n - 1, 1))  # noqa: E731
    y = lambda v: PAD_T + (H - PAD_T - PAD_B) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    # The axis's ends: dates for nightly runs; with the time where all runs are of one day.
    same_day = rows[0].point.time.date() == rows[-1].point.time.date()
    when = "%Y-%m-%d %H:%M" if same_day else "%Y-%m-%d"
    parts = [f'<text x="4" y="12">{_e(UNITS.get(figure, figure))}</text>',
             f'<text x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">{hi:.4g}</text>',
             f'<text x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end">{lo:.4g}</text>',
             f'<text x="{PAD_L}" y="{H - 6}">{rows[0].point.time:{when}}</text>',
             f'<text x="{W - PAD_R}" y="{H - 6}" text-anchor="end">'
             f'{rows[-1].point.time:{when}}</text>',
             f'<line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#bbb"/>']
    if threshold:
        parts.append(f'<line class="threshold" x1="{PAD_L}" x2="{W - PAD_R}" '
                     f'y1="{y(threshold[0]):.1f}" y2="{y(threshold[0]):.1f}" stroke="#c62828" '
                     f'stroke-dasharray="4,3"><title>threshold: {_e(threshold[1])} '
                     f'({threshold[0]:.4g})</title></line>')
    edges = [0, *(c.index for c in changes), n]
    for k in range(len(edges) - 1):
        seg = [r.point.value for r in rows[edges[k]:edges[k + 1]]]
        level = sum(seg) / len(seg)
        parts.append(f'<line class="level" x1="{x(edges[k]):.1f}" x2="{x(edges[k + 1] - 1):.1f}" '
                     f'y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="#1565c0" '
                     f'stroke-width="2" opacity="0.6"/>')
    for c in changes:
        colour = "#c62828" if c.regression else "#2e7d32"
        parts.append(f'<line class="change" x1="{x(c.index - 0.5):.1f}" '
                     f'x2="{x(c.index - 0.5):.1f}" y1="{PAD_T}" y2="{H - PAD_B}" '
                     f'stroke="{colour}" stroke-dasharray="2,2"><title>change point: '
                     f'{c.delta_pct:+.2f} % from run {c.run_id}'
                     f'{" (" + _e(c.commit[:10]) + ")" if c.commit else ""}, '
                     f'p={c.p_value:.2g}</title></line>')
    path = " ".join(f"{x(i):.1f},{y(r.point.value):.1f}" for i, r in enumerate(rows))
    parts.append(f'<polyline points="{path}" fill="none" stroke="#90a4ae"/>')
    for i, r in enumerate(rows):
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(r.point.value):.1f}" r="2.6" '
                     f'fill="{COLOURS.get(r.outcome, "#607d8b")}"><title>run {r.point.run_id} '
                     f'{r.point.time:%Y-%m-%d %H:%M} {_e(r.outcome)}: {r.point.value:.5g}'
                     f'</title></circle>')
    return (f'<svg class="trend" data-figure="{_e(figure)}" data-changes="{len(changes)}" '
            f'xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}">{"".join(parts)}'
            "</svg>")


def render(data: dict[tuple, dict[str, list[Row]]], title: str) -> str:
    by_machine: dict[str, list[tuple]] = defaultdict(list)
    for key in sorted(data):
        by_machine[key[0]].append(key)
    sections = []
    for machine, keys in by_machine.items():
        combos: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            plots = "".join(plot(key, f, rows) for f, rows in data[key].items())
            combos[key[1]].append(f"<h3>{_e(key[2])}</h3><div class=\"plots\">{plots}</div>")
        body = "".join(f'<div class="combo" data-combo="{_e(c)}"><h2>{_e(c)}</h2>{"".join(p)}'
                       f"</div>" for c, p in combos.items())
        sections.append(f'<section data-machine="{_e(machine)}"><h2>{_e(machine)}</h2>'
                        f"{body}</section>")
    legend = " ".join(f'<span style="color:{c}">● {o}</span>' for o, c in COLOURS.items())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>infergate history</title><style>{CSS}</style></head><body><header>"
            f"<h1>infergate history</h1><div>{_e(title)}</div></header><main>"
            f'<p class="muted">Points: each run, coloured by its outcome ({legend}). Blue: the '
            "level of each segment; dashed vertical: a change point (red regression, green "
            "improvement); dashed red horizontal: the threshold.</p>"
            + ("".join(sections) or "<p>No runs match.</p>")
            + "<script>document.body.setAttribute('data-ready','1')</script></main></body>"
              "</html>\n")


def write(store: Store, out: Path, selection: Filter | None = None) -> Path:
    selection = selection or Filter()
    data = load(store, selection)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    chosen = ", ".join(f"{k}={v}" for k, v in vars(selection).items() if v)
    plots = sum(len(figures) for figures in data.values())
    title = (f"{store.url} · {len(data)} tests × combinations × machines, {plots} plots (one "
             f"per figure) · {chosen or 'all'} · {stamp}")
    path = Path(out) / "history.html"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(data, title))
    return path
