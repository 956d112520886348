"""``python -m infergate compare RUN_A RUN_B``: two runs side by side, each test's outcome and
key figure in both, the change between them, in Markdown (stdout, or compare.md) and HTML.

A run is a results.json file or, with ``--url``, a run id of the history (``history changes``
and ``history.html`` name them).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from infergate.history.ingest import result_row
from infergate.report.view import SYMBOLS

# The figure a test is judged on, then a second one shown beside it.
KEY_FIGURES = {"test_latency": ("normalised", "p50_ms"), "test_memory": ("memory_mb",),
               "test_instructions": ("instructions",), "test_equivalence": ("cosine",),
               "test_task_accuracy": ("task_score",)}
BETTER_LOWER = {"normalised", "p50_ms", "memory_mb", "instructions"}


def rows_of_document(document: dict) -> dict[tuple, dict]:
    return {(e["test"], e["id"], e.get("machine") or ""): result_row(e)
            for e in document["results"]}


def rows_of_run(store, run_id: int) -> dict[tuple, dict]:
    import sqlalchemy as sa

    from infergate.history.store import results, runs

    with store.transaction() as connection:
        if connection.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).scalar() is None:
            raise ValueError(f"no run {run_id} in {store.url}")
        found = connection.execute(sa.select(results).where(results.c.run_id == run_id))
        return {(r.test, r.combo, ""): dict(r._mapping) for r in found}


def _delta(a, b) -> float | None:
    if a is None or b is None or a == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return (b / a - 1) * 100


def compare(a: dict[tuple, dict], b: dict[tuple, dict]) -> list[dict]:
    out = []
    for key in sorted(set(a) | set(b)):
        ra, rb = a.get(key) or {}, b.get(key) or {}
        figures = KEY_FIGURES.get(key[0], ())
        figure = next((f for f in figures if ra.get(f) is not None or rb.get(f) is not None),
                      None)
        fa, fb = (ra.get(figure), rb.get(figure)) if figure else (None, None)
        delta = _delta(fa, fb)
        worse = delta is not None and (delta > 0 if figure in BETTER_LOWER else delta < 0)
        out.append({"test": key[0], "combo": key[1] + (f" @ {key[2]}" if key[2] else ""),
                    "outcome_a": ra.get("outcome"), "outcome_b": rb.get("outcome"),
                    "figure": figure, "a": fa, "b": fb, "delta_pct": delta,
                    "worse": worse, "verdict_a": ra.get("verdict"),
                    "verdict_b": rb.get("verdict"),
                    "changed": ra.get("outcome") != rb.get("outcome")})
    return out


HEADER = ["test", "combination", "A", "B", "figure", "A value", "B value", "Δ", "verdicts A → B"]


def _cells(row: dict) -> list[str]:
    def outcome(o):
        return f"{SYMBOLS.get(o, '')} {o}".strip() if o else "absent"

    def value(v):
        return "" if v is None else f"{v:.5g}"

    delta = "" if row["delta_pct"] is None else f"{row['delta_pct']:+.2f} %"
    verdicts = f"{row['verdict_a'] or '–'} → {row['verdict_b'] or '–'}"
    return [row["test"], row["combo"], outcome(row["outcome_a"]), outcome(row["outcome_b"]),
            row["figure"] or "", value(row["a"]), value(row["b"]), delta, verdicts]


def _summary(rows: list[dict], a: str, b: str) -> str:
    changed = sum(r["changed"] for r in rows)
    worse = sum(r["worse"] for r in rows)
    return (f"A = {a}, B = {b}: {len(rows)} results, {changed} with another outcome, "
            f"{worse} with a worse figure")


def render_markdown(rows: list[dict], a: str, b: str) -> str:
    lines = [f"# infergate compare\n\n{_summary(rows, a, b)}\n",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_html(rows: list[dict], a: str, b: str) -> str:
    def tr(row):
        style = ' style="background:#fdecea"' if row["changed"] or row["worse"] else ""
        return f"<tr{style}>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(row)) + "</tr>"

    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>infergate "
            "compare</title><style>body{font:13px system-ui,sans-serif;margin:20px}"
            "table{border-collapse:collapse}td,th{border:1px solid #dde1e6;padding:2px 6px}"
            "th{background:#eef1f4}</style></head><body><h1>infergate compare</h1>"
            f"<p>{escape(_summary(rows, a, b))}; rows with another outcome or a worse figure "
            f"are shaded.</p><table><tr>{head}</tr>{''.join(tr(r) for r in rows)}</table>"
            "</body></html>\n")


def write(out: Path, rows: list[dict], a: str, b: str) -> list[Path]:
    from infergate.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.md", out / "compare.html"]
    atomic_write_text(paths[0], render_markdown(rows, a, b))
    atomic_write_text(paths[1], render_html(rows, a, b))
    return paths
