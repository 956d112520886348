"""summary.md: matrix tables for a CI job summary (GitHub renders it under the job)."""

from __future__ import annotations

import html

from infergate.report.view import (
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
    machines,
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


def _matrix(g: Grid, level: str = "###") -> list[str]:
    header = ["model", *(f"{b} {p}" for b, p in g.columns)]
    rows = [[_text(row), *(_text(cell_text(c)) if (c := g.cell(row, col)) else ""
                           for col in g.columns)] for row in g.rows]
    figure = FIGURES.get(g.test)
    note = [f"Cells: outcome and {figure.label}.", ""] if figure else []
    return [f"{level} {g.test}", "", *note, *_table(header, rows), "", *_folded(g)]


def _folded(g: Grid) -> list[str]:
    if not g.folded:
        return []
    return [f"⏭ skipped everywhere: {', '.join(f'{b} {p}' for b, p in g.folded)}", ""]


def _listing(g: Grid, level: str = "###") -> list[str]:
    (backend, precision), = g.columns
    items = [f"- {_text(cell_text(g.cells[(row, g.columns[0])]))} {_text(row)}"
             for row in g.rows]
    return [f"{level} {g.test} ({backend} {precision})", "", *items, ""]


def _performance(rows: list[PerfRow], level: str = "###") -> list[str]:
    header, body = perf_table(rows)
    return [f"{level} Performance", "", *_table(header, [[_text(c) for c in r] for r in body]),
            ""]


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


def _environment(env: dict) -> str:
    return (f"{_text(env.get('cpu', '?'))}, {env.get('cpu_count', '?')} cores · "
            f"torch {_text((env.get('libraries') or {}).get('torch', '?'))}")


def _matrices(document: dict, machine: str | None = None, level: str = "###") -> list[str]:
    """The matrix of one machine (all entries for None), then its performance table."""
    lines = []
    for g in grids(document, machine):
        if not is_performance(list(g.cells.values())):
            lines += _listing(g, level) if g.is_list else _matrix(g, level)
    perf = performance_rows(document, machine)
    return lines + (_performance(perf, level) if perf else [])


def render_markdown(document: dict) -> str:
    env = document.get("environment") or {}
    unfinished = incomplete(document)
    several = machines(document)
    lines = ["## infergate results", "", _counts(document), "",
             *([f"**Incomplete run ({_text(unfinished)}): these are the results it reached.**",
                ""] if unfinished else []),
             (f"{len(several)} machines, one matrix each"
              if several else _environment(env)) + f" · {_text(document.get('created', ''))}",
             ""]
    off = (document.get("selection") or {}).get("gates_off")
    if off:
        lines += [f"**Gates that cannot fail in this run:** {_text('; '.join(off))}", ""]
    lines += _problems(document)
    if not several:
        return "\n".join(lines + _matrices(document))
    envs = document.get("machines") or {}
    for machine in several:
        lines += [f"### Machine {_text(machine)}", "",
                  *([_environment(envs[machine]), ""] if machine in envs else []),
                  *_matrices(document, machine, "####")]
    return "\n".join(lines)
