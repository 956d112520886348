"""summary.md: matrix tables for a CI job summary (GitHub renders it under the job)."""

from __future__ import annotations

import html

from infergate.report_view import (
    FIGURES,
    OUTCOMES,
    SYMBOLS,
    Grid,
    PerfRow,
    cell_text,
    first_line,
    grids,
    incomplete,
    is_performance,
    perf_table,
    performance_rows,
    problems,
)


def _text(value) -> str:
    # GitHub renders inline HTML in Markdown, and "|" would end a table cell.
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _matrix(g: Grid) -> list[str]:
    header = ["model", *(f"{b} {p}" for b, p in g.columns)]
    rows = [[_text(row), *(_text(cell_text(c)) if (c := g.cell(row, col)) else ""
                           for col in g.columns)] for row in g.rows]
    figure = FIGURES.get(g.test)
    note = [f"Cells: outcome and {figure.label}.", ""] if figure else []
    return [f"### {g.test}", "", *note, *_table(header, rows), "", *_folded(g)]


def _folded(g: Grid) -> list[str]:
    if not g.folded:
        return []
    return [f"⏭ skipped everywhere: {', '.join(f'{b} {p}' for b, p in g.folded)}", ""]


def _listing(g: Grid) -> list[str]:
    (backend, precision), = g.columns
    items = [f"- {_text(cell_text(g.cells[(row, g.columns[0])]))} {_text(row)}"
             for row in g.rows]
    return [f"### {g.test} ({backend} {precision})", "", *items, ""]


def _performance(rows: list[PerfRow]) -> list[str]:
    header, body = perf_table(rows)
    return ["### Performance", "", *_table(header, [[_text(c) for c in r] for r in body]), ""]


def _problems(document: dict) -> list[str]:
    broken = problems(document)
    if not broken:
        return []
    items = [f"- {SYMBOLS[e['outcome']]} `{e['test']}[{e['id']}]`"
             + (f" on {_text(e['machine'])}" if e.get("machine") else "")
             + f": {_text(first_line(e.get('reason', '')))}" for e in broken]
    return ["### What failed", "", *items, ""]


def _counts(document: dict) -> str:
    summary = document.get("summary") or {}
    counts = [f"{summary.get(o, 0)} {o}" for o in OUTCOMES if summary.get(o)]
    return f"**{summary.get('total', len(document['results']))} results**: " + (
        ", ".join(counts) or "none")


def render_markdown(document: dict) -> str:
    env = document.get("environment") or {}
    unfinished = incomplete(document)
    lines = ["## infergate results", "", _counts(document), "",
             *([f"**Incomplete run ({_text(unfinished)}): these are the results it reached.**",
                ""] if unfinished else []),
             f"{_text(env.get('cpu', '?'))}, {env.get('cpu_count', '?')} cores · "
             f"torch {_text((env.get('libraries') or {}).get('torch', '?'))} · "
             f"{_text(document.get('created', ''))}", ""]
    lines += _problems(document)
    all_grids = grids(document)
    for g in all_grids:
        if not is_performance(list(g.cells.values())):
            lines += _listing(g) if g.is_list else _matrix(g)
    perf = performance_rows(document)
    if perf:
        lines += _performance(perf)
    return "\n".join(lines)
