"""report.html: one self-contained page (inline CSS, JS and SVG; nothing fetched).

Every text from a results file goes through ``html.escape``: failure messages quote tensors,
shapes and exception text, which may hold ``<``, ``&`` or quotes.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from html import escape

from infergate.report.view import (
    BROKEN,
    FIGURES,
    OUTCOMES,
    Grid,
    accuracy_errors,
    by_test,
    cell_text,
    first_line,
    grids,
    incomplete,
    machines,
    memory_figure,
    number,
    perf_table,
    performance_rows,
    settings_by_column,
    shorten_lists,
)

COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#6a1b9a", "crashed": "#000000",
           "timeout": "#4e342e", "xfailed": "#ef6c00", "xpassed": "#ad1457", "skipped": "#9e9e9e"}
SERIES = ("#1565c0", "#e65100")
# Words, not emoji: a headless or minimal browser may have no emoji font; cells are coloured.
LABELS = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "crashed": "CRASH",
          "timeout": "TIMEOUT", "xfailed": "xfail", "xpassed": "XPASS", "skipped": "skip"}
RAW_LIST_LIMIT = 20

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;
 background:#f6f7f9}
header{background:#1f2933;color:#fff;padding:16px 28px}
header h1{margin:0 0 6px;font-size:22px}
main{padding:8px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 18px;
 margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
h4{font-size:14px;margin:10px 0 4px}
div.machine{border-top:2px solid #1f2933;margin-top:14px}
.chip{display:inline-block;border-radius:12px;padding:2px 10px;margin:2px 4px 2px 0;
 color:#fff;font-weight:600}
table{border-collapse:collapse;margin:4px 0 10px}
th,td{border:1px solid #dde1e6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600}
table.grid td.c{text-align:center;white-space:nowrap;min-width:78px;color:#fff}
table.grid td.c a{color:inherit;text-decoration:none;display:block}
table.grid td.empty{background:#fafafa}
td.passed{background:#2e7d32}td.failed{background:#c62828}td.error{background:#6a1b9a}
td.xfailed{background:#ef6c00}td.xpassed{background:#ad1457}td.skipped{background:#9e9e9e}
td.crashed{background:#000}td.timeout{background:#4e342e}
details{border-left:4px solid #9e9e9e;margin:6px 0;padding:2px 10px;background:#fafbfc}
details:target{outline:2px solid #1565c0}
details.failed{border-color:#c62828}details.error{border-color:#6a1b9a}
details.xfailed{border-color:#ef6c00}details.passed{border-color:#2e7d32}
details.xpassed{border-color:#ad1457}details.crashed{border-color:#000}
details.timeout{border-color:#4e342e}
summary{cursor:pointer;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;background:#f0f2f5;padding:8px;margin:6px 0;
 font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
.legend span{margin-right:14px}.muted{color:#667}
svg text{font:11px system-ui,sans-serif;fill:#333}
.filters label{margin-right:12px}
"""

SCRIPT = """
(function () {
  function openTarget() {
    var t = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (t && t.tagName === 'DETAILS') { t.open = true; }
  }
  window.addEventListener('hashchange', openTarget);
  openTarget();
  document.querySelectorAll('.filters input').forEach(function (box) {
    box.addEventListener('change', function () {
      document.querySelectorAll('#details details.' + box.value).forEach(function (d) {
        d.hidden = !box.checked;
      });
    });
  });
  document.body.setAttribute('data-ready', '1');
})();
"""


class Anchors:
    """Stable, unique element ids per (test, id, machine)."""

    def __init__(self, document: dict):
        self.ids: dict[tuple, str] = {}
        for entry in document["results"]:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", "r-" + "-".join(self._key(entry)))
            while slug in self.ids.values():
                slug += "_"
            self.ids[self._key(entry)] = slug

    @staticmethod
    def _key(entry: dict) -> tuple:
        return entry["test"], entry["id"], entry.get("machine", "")

    def __call__(self, entry: dict) -> str:
        return self.ids[self._key(entry)]


def _e(value) -> str:
    return escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Header and cells are already HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


# --- charts -------------------------------------------------------------------------------

@dataclass
class Bar:
    label: str
    href: str
    outcome: str
    value: float | None = None  # bar length
    spread: tuple[float | None, float | None] = (None, None)  # whisker
    marker: float | None = None  # baseline tick
    limit: float | None = None  # threshold mark: the value beyond which the gate fails
    limit_note: str = ""
    dots: tuple[float | None, ...] = ()  # one per series


@dataclass(frozen=True)
class Axis:
    lo: float
    hi: float
    log: bool

    @classmethod
    def fit(cls, values, log: bool) -> Axis | None:
        values = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if not values:
            return None
        if log:
            lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
            return cls(10.0 ** lo, 10.0 ** max(hi, lo + 1), True)
        return cls(0.0, max(values) * 1.08 or 1.0, False)

    def frac(self, v: float) -> float:
        """Position in [0, 1]; off-scale values (0 on a log axis, NaN) pin to an edge."""
        if v is None or math.isnan(v):
            return 1.0
        if self.log:
            v = min(max(v, self.lo), self.hi)
            return math.log10(v / self.lo) / math.log10(self.hi / self.lo)
        return min(max((v - self.lo) / (self.hi - self.lo), 0.0), 1.0)

    def ticks(self) -> list[float]:
        if self.log:
            lo, hi = round(math.log10(self.lo)), round(math.log10(self.hi))
            step = max(1, (hi - lo) // 8)
            return [10.0 ** k for k in range(lo, hi + 1, step)]
        return [self.hi * k / 5 for k in range(6)]


LABEL_W, PLOT_W, ROW_H, TOP = 330, 640, 17, 22


def _tick_label(v: float, log: bool) -> str:
    return f"1e{round(math.log10(v))}" if log else f"{v:.3g}"


def _bar_svg(bar: Bar, i: int, axis: Axis) -> str:
    y = TOP + i * ROW_H
    mid = y + ROW_H / 2
    x = lambda v: LABEL_W + axis.frac(v) * PLOT_W  # noqa: E731
    parts = [f'<a href="#{_e(bar.href)}"><text x="{LABEL_W - 6}" y="{mid + 4}" '
             f'text-anchor="end">{_e(bar.label)}</text></a>']
    colour = COLOURS.get(bar.outcome, "#607d8b")
    if bar.value is not None:
        parts.append(f'<rect x="{LABEL_W}" y="{y + 3}" width="{x(bar.value) - LABEL_W:.1f}" '
                     f'height="{ROW_H - 6}" fill="{colour}" opacity="0.8">'
                     f'<title>{_e(bar.label)}: {bar.value:.4g}</title></rect>')
    lo, hi = bar.spread
    if lo is not None and hi is not None:
        parts.append(f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{mid}" y2="{mid}" '
                     f'stroke="#222" stroke-width="1.2"/>')
    if bar.marker is not None:
        parts.append(f'<line class="baseline" x1="{x(bar.marker):.1f}" x2="{x(bar.marker):.1f}" '
                     f'y1="{y + 1}" y2="{y + ROW_H - 1}" stroke="#000" stroke-width="2.5">'
                     f'<title>baseline {bar.marker:.4g}</title></line>')
    if bar.limit is not None:
        parts.append(f'<line class="threshold" x1="{x(bar.limit):.1f}" '
                     f'x2="{x(bar.limit):.1f}" y1="{y}" y2="{y + ROW_H}" stroke="#c62828" '
                     f'stroke-width="1.5" stroke-dasharray="3,2"><title>threshold '
                     f'{bar.limit:.4g}{_e(bar.limit_note)}</title></line>')
    for k, v in enumerate(bar.dots):
        if v is not None:
            exact = axis.log and v <= 0
            fill = "#fff" if exact else SERIES[k % len(SERIES)]
            parts.append(f'<circle cx="{x(v):.1f}" cy="{mid}" r="4" fill="{fill}" '
                         f'stroke="{SERIES[k % len(SERIES)]}"><title>{_e(bar.label)}: '
                         f'{"0 (exact)" if exact else f"{v:.3g}"}</title></circle>')
    return "".join(parts)


def svg_chart(bars: list[Bar], *, log: bool, unit: str, chart_id: str) -> str:
    values = [v for b in bars for v in (b.value, *b.spread, b.marker, b.limit, *b.dots)]
    axis = Axis.fit(values, log)
    if axis is None:
        return '<p class="muted">No figures to plot.</p>'
    height = TOP + len(bars) * ROW_H + 8
    xs = [(LABEL_W + axis.frac(t) * PLOT_W, t) for t in axis.ticks()]
    grid = "".join(
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP - 4}" y2="{height - 6}" stroke="#e3e6ea"/>'
        f'<text x="{x:.1f}" y="{TOP - 8}" text-anchor="middle">{_tick_label(t, log)}</text>'
        for x, t in xs)
    rows = "".join(_bar_svg(b, i, axis) for i, b in enumerate(bars))
    return (f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" '
            f'width="{LABEL_W + PLOT_W + 40}" height="{height}" role="img" '
            f'aria-label="{_e(unit)}"><text x="4" y="{TOP - 8}">{_e(unit)}'
            f'</text>{grid}{rows}</svg>')


def _legend(*items: tuple[str, str]) -> str:
    spans = "".join(f'<span><svg width="12" height="12"><circle cx="6" cy="6" r="5" '
                    f'fill="{c}"/></svg> {_e(t)}</span>' for c, t in items)
    return f'<p class="legend">{spans}</p>'


def _label(entry: dict) -> str:
    return f"{entry['id']} @ {entry['machine']}" if entry.get("machine") else entry["id"]


def _accuracy_chart(document: dict, anchor: Anchors) -> str:
    entries = [e for e in by_test(document).get("test_equivalence", []) if e.get("accuracy")]
    if not entries:
        return ""
    bars = [Bar(_label(e), anchor(e), e.get("outcome", ""), dots=accuracy_errors(e))
            for e in entries]
    return ("<section><h2>Accuracy errors (test_equivalence, worst output, log scale)</h2>"
            + _legend((SERIES[0], "max abs error"), (SERIES[1], "1 − cosine (hollow: exact)"))
            + svg_chart(bars, log=True, unit="error", chart_id="chart-accuracy")
            + "</section>")


def _perf_bar(entry: dict, kind: str, href: str) -> Bar:
    figures = entry.get(kind) or {}
    if kind == "latency":
        baseline = number((figures.get("baseline") or {}).get("p50_ms"))
        threshold = number(figures.get("threshold_pct"))
        gated = figures.get("mode", "absolute")
        return Bar(_label(entry), href, entry.get("outcome", ""), number(figures.get("p50_ms")),
                   (number(figures.get("min_ms")), number(figures.get("p99_ms"))), baseline,
                   limit=baseline * (1 + threshold / 100) if baseline and threshold else None,
                   limit_note=f" (+{threshold:g} %; gated on the {gated} figure)"
                   if threshold else "")
    limit = number(figures.get("limit_mb"))
    return Bar(_label(entry), href, entry.get("outcome", ""), memory_figure(figures),
               marker=number(figures.get("baseline_mb")), limit=limit,
               limit_note=" MB (the gate's limit)" if limit else "")


def _perf_charts(document: dict, anchor: Anchors) -> str:
    sections = []
    for kind, title, unit in (("latency", "Latency: p50 bar, min–p99 whisker, baseline (or "
                                          "A/B revision) p50 tick, dashed red threshold", "ms"),
                              ("memory", "Model memory (peak RSS above the initialised runtime): "
                                         "bar, baseline tick, dashed red limit", "MB")):
        entries = [e for e in document["results"] if kind in e]
        if not entries:
            continue
        bars = [_perf_bar(e, kind, anchor(e)) for e in entries]
        sections.append(f"<h3>{_e(title)}</h3>"
                        + svg_chart(bars, log=False, unit=unit, chart_id=f"chart-{kind}"))
    tables = []
    for machine in machines(document) or [None]:
        rows = performance_rows(document, machine)
        if rows:
            header, body = perf_table(rows, LABELS)
            title = f"<h3>Machine {_e(machine)}</h3>" if machine else ""
            tables.append(title + _table([_e(h) for h in header],
                                         [[_e(c) for c in row] for row in body]))
    if not tables:
        return ""
    return (f'<section id="performance"><h2>Performance</h2>{"".join(tables)}'
            f'{"".join(sections)}</section>')


# --- matrix, environment, details ---------------------------------------------------------

def _grid_html(g: Grid, anchor: Anchors, level: str = "h3") -> str:
    def cell(row, col):
        entry = g.cell(row, col)
        if entry is None:
            return '<td class="empty"></td>'
        outcome = entry.get("outcome", "")
        tip = first_line(entry.get("reason", "")) or outcome
        return (f'<td class="c {_e(outcome)}" data-id="{_e(entry["id"])}" '
                f'data-test="{_e(g.test)}" title="{_e(tip)}"><a href="#{anchor(entry)}">'
                f"{_e(cell_text(entry, LABELS))}</a></td>")

    head = "".join(f"<th>{_e(b)}<br>{_e(p)}</th>" for b, p in g.columns)
    body = "".join(f"<tr><th>{_e(row)}</th>{''.join(cell(row, c) for c in g.columns)}</tr>"
                   for row in g.rows)
    figure = FIGURES.get(g.test)
    note = f'<p class="muted">Cells: outcome and {_e(figure.label)}.</p>' if figure else ""
    folded = ", ".join(f"{b} {p}" for b, p in g.folded)
    folded = f'<p class="muted">Skipped everywhere: {_e(folded)}</p>' if folded else ""
    return (f"<{level}>{_e(g.test)}</{level}>{note}"
            f"<table class=\"grid\" data-test=\"{_e(g.test)}\">"
            f"<tr><th>model</th>{head}</tr>{body}</table>{folded}")


def _environment(document: dict) -> str:
    machines = document.get("machines") or {"": document.get("environment") or {}}
    parts = []
    for label, env in machines.items():
        libraries = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items())
        rows = [["CPU", f"{env.get('cpu', '?')} ({env.get('cpu_count', '?')} cores)"],
                ["CPU features", ", ".join(env.get("cpu_features") or [])],
                ["platform", env.get("platform", "")], ["Python", env.get("python", "")],
                ["libraries", libraries]]
        title = f"<h3>{_e(label)}</h3>" if label else ""
        parts.append(title + _table(["", ""], [[_e(k), _e(v)] for k, v in rows]))
    settings = [[_e(f"{b} {p}"), "<br>".join(f"{_e(k)} = {_e(v)}" for k, v in s.items())]
                for (b, p), s in settings_by_column(document).items()]
    if settings:
        parts.append("<h3>Pinned runner settings</h3>"
                     + _table(["backend precision", "settings"], settings))
    return f'<section id="environment"><h2>Environment</h2>{"".join(parts)}</section>'


MESSAGE_KINDS = ("accuracy", "task")


def _without_messages(entry: dict) -> dict:
    """The raw entry less the messages shown above it (each was printed twice, or thrice)."""
    raw = {k: v for k, v in entry.items() if k not in ("reason", "perf_message")}
    for kind in MESSAGE_KINDS:
        if isinstance(raw.get(kind), dict):
            raw[kind] = {k: v for k, v in raw[kind].items() if k != "message"}
    return raw


def _localisation_svg(entry: dict, width: int = 640, height: int = 150) -> str:
    """Error against PyTorch eager vs depth (``localisation.layers``, from
    infergate.accuracy.localise), log scale: the curve of where a combination went wrong, its
    first divergent layer in red."""
    found = entry.get("localisation") or {}
    layers = [(m, float(e)) for m, _, e in found.get("layers") or () if e is not None]
    axis = Axis.fit([e for _, e in layers] + [found.get("limit")], log=True)
    if len(layers) < 2 or axis is None:
        return ""
    first = (found.get("first") or {}).get("module")
    x = lambda i: 50 + i * (width - 60) / (len(layers) - 1)  # noqa: E731
    y = lambda v: 10 + (1 - axis.frac(v)) * (height - 30)  # noqa: E731
    ticks = "".join(f'<text x="46" y="{y(t) + 4:.1f}" text-anchor="end">'
                    f"{_tick_label(t, True)}</text>" for t in axis.ticks())
    limit = found.get("limit")
    line = (f'<line x1="50" x2="{width - 10}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="#c62828" stroke-dasharray="3,2"><title>limit {limit:.3g}</title></line>'
            if limit else "")
    path = " ".join(f"{x(i):.1f},{y(e):.1f}" for i, (_, e) in enumerate(layers))
    dots = "".join(f'<circle cx="{x(i):.1f}" cy="{y(e):.1f}" r="{5 if m == first else 2.5}" '
                   f'fill="{"#c62828" if m == first else SERIES[0]}"><title>{_e(m)}: '
                   f"{e:.2g}</title></circle>" for i, (m, e) in enumerate(layers))
    return (f'<svg class="localisation" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" role="img" aria-label="rel RMSE vs eager by layer">{ticks}'
            f'{line}<polyline points="{path}" fill="none" stroke="{SERIES[0]}"/>{dots}'
            f'<text x="50" y="{height - 4}">layer (execution order) -&gt; rel RMSE vs '
            f"PyTorch eager fp32{_e(f'; first divergent: {first}' if first else '')}</text>"
            "</svg>")


def _details(entry: dict, anchor: Anchors) -> str:
    outcome = entry.get("outcome", "")
    messages = [entry.get("reason", ""), entry.get("perf_message", "")] + [
        (entry.get(k) or {}).get("message", "") for k in MESSAGE_KINDS
        if isinstance(entry.get(k), dict)]
    shown: list[str] = []
    for message in filter(None, messages):  # a failure's reason is the verdict's message
        if not any(message in other or other in message for other in shown):
            shown.append(message)
        elif any(other in message for other in shown):  # keep the fuller of the two
            shown = [message if other in message else other for other in shown]
    text = "\n\n".join(dict.fromkeys(shown)) or outcome
    where = f" on {entry['machine']}" if entry.get("machine") else ""
    raw = json.dumps(shorten_lists(_without_messages(entry), RAW_LIST_LIMIT), indent=1,
                     default=str)
    return (f'<details id="{anchor(entry)}" class="{_e(outcome)}"'
            f'{" open" if outcome in BROKEN else ""}>'
            f"<summary>{_e(LABELS.get(outcome, '?'))} {_e(entry['test'])}[{_e(entry['id'])}]"
            f"{_e(where)} — {_e(outcome)}</summary><pre>{_e(text)}</pre>"
            f"{_localisation_svg(entry)}"
            f"<details><summary>raw entry</summary><pre>{_e(raw)}</pre></details></details>")


def _header(document: dict) -> str:
    summary = document.get("summary") or {}
    chips = "".join(f'<span class="chip" style="background:{COLOURS[o]}">'
                    f"{summary.get(o, 0)} {o}</span>" for o in OUTCOMES if summary.get(o))
    sources = document.get("sources")
    merged = f" · merged from {_e(', '.join(sources))}" if len(sources or ()) > 1 else ""
    unfinished = incomplete(document)
    warning = (f"<div><strong>Incomplete run ({_e(unfinished)}): these are the results it "
               f"reached.</strong></div>" if unfinished else "")
    return (f"<header><h1>infergate report</h1><div>{summary.get('total', 0)} results "
            f"{chips}</div>{warning}<div class=\"muted\" style=\"color:#cbd2d9\">"
            f"{_e(document.get('created', ''))}{merged}</div></header>")


def _filters() -> str:
    boxes = "".join(f'<label><input type="checkbox" value="{o}" checked> {o}</label>'
                    for o in OUTCOMES)
    return f'<p class="filters">Show: {boxes}</p>'


def _matrix(document: dict, anchor: Anchors) -> str:
    """One matrix, or one per machine of a merged document (shards of one machine's run are
    one machine)."""
    several = machines(document)
    if not several:
        return "".join(_grid_html(g, anchor) for g in grids(document))
    envs = document.get("machines") or {}
    parts = []
    for machine in several:
        env = envs.get(machine) or {}
        where = (f'<p class="muted">{_e(env.get("cpu", "?"))}, {_e(env.get("cpu_count", "?"))}'
                 f" cores</p>" if env else "")
        grids_html = "".join(_grid_html(g, anchor, "h4") for g in grids(document, machine))
        parts.append(f'<div class="machine" data-machine="{_e(machine)}"><h3>Machine '
                     f"{_e(machine)}</h3>{where}{grids_html}</div>")
    return "".join(parts)


def render_html(document: dict) -> str:
    anchor = Anchors(document)
    matrix = _matrix(document, anchor)
    details = "".join(_details(e, anchor) for e in document["results"])
    body = (_header(document) + "<main>"
            + f'<section id="matrix"><h2>Support matrix</h2>{matrix or "<p>No results.</p>"}'
              "</section>"
            + _accuracy_chart(document, anchor) + _perf_charts(document, anchor)
            + _environment(document)
            + f'<section id="details"><h2>Every result</h2>{_filters()}{details}</section>'
            + "</main>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>infergate report</title><style>{CSS}</style></head>"
            f"<body>{body}<script>{SCRIPT}</script></body></html>\n")
