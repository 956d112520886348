"""What the Markdown and HTML reports show, decided once: cells, key figures, grids, rows.

Works on a results document as written (non-finite numbers are the strings "nan"/"inf").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from infergate.accuracy.precision import PRECISIONS

# crashed / timeout: the backend's worker process died or outlived its limit (isolation.py).
OUTCOMES = ("passed", "failed", "error", "crashed", "timeout", "xfailed", "xpassed", "skipped")
SYMBOLS = {"passed": "✅", "failed": "❌", "error": "💥", "crashed": "☠", "timeout": "⌛",
           "xfailed": "xfail", "xpassed": "xpass", "skipped": "⏭"}
BROKEN = ("failed", "error", "crashed", "timeout", "xpassed")
REFERENCE = ("torch", "fp32")  # speed-ups are relative to PyTorch eager fp32


def number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # "nan", "inf": written as strings to keep JSON standard
        except ValueError:
            return None
    return None


def fmt(value, spec: str = "{:.4g}") -> str:
    value = number(value)
    if value is None:
        return ""
    return spec.format(value) if math.isfinite(value) else str(value)


def first_line(text: str) -> str:
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def machine_label(env: dict) -> str:
    return f"{env.get('cpu', 'unknown CPU')} ({env.get('cpu_count', '?')} cores)"


def machine_id(env: dict) -> str | None:
    """The hardware id of the machine a run's environment describes (infergate.machine_id:
    what decides which kernels run), or None for results from before that id."""
    machine = env.get("machine")
    if isinstance(machine, dict) and machine.get("id"):
        return str(machine["id"])
    return None


def machines(document: dict) -> list[str]:
    """The machines of a merged document, in order, each with its own matrix; [] for one
    machine's run (or shards of it: shards are not machines)."""
    labels = dict.fromkeys(document.get("machines") or {})
    labels.update(dict.fromkeys(e["machine"] for e in document["results"] if e.get("machine")))
    present = {e.get("machine") for e in document["results"]}
    return [label for label in labels if label in present]


def on_machine(document: dict, machine: str | None) -> list[dict]:
    """The entries of ``machine`` (all of them for None)."""
    return [e for e in document["results"] if machine is None or e.get("machine") == machine]


def _lowest_cosine(entry: dict) -> float | None:
    outputs = (entry.get("accuracy") or {}).get("outputs") or {}
    values = [number(o.get("cosine")) for o in outputs.values()]
    values = [v for v in values if v is not None]
    if any(math.isnan(v) for v in values):
        return math.nan  # min() would hide a NaN depending on its position
    return min(values, default=None)


def _path(*keys):
    def get(entry):
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        return number(entry)
    return get


def memory_figure(memory: dict | None) -> float | None:
    """The gated memory figure of a test_memory entry's ``memory``: the model's peak above
    the initialised runtime; results recorded before that figure existed (issue 11) show
    their all-in peak, as their baseline_mb is."""
    memory = memory or {}
    return number(memory.get("model_peak_mb", memory.get("peak_rss_mb")))


def _heap_mb(entry: dict | None, key: str = "run_peak_bytes") -> float | None:
    """A test_memory entry's peak heap figure (bytes, counted under callgrind), in MB."""
    value = number(((entry or {}).get("heap") or {}).get(key))
    return None if value is None else value / 2**20


def _millions(value: float | None) -> float | None:
    return None if value is None else value / 1e6


@dataclass(frozen=True)
class Figure:
    label: str
    get: object
    spec: str


# The one number a matrix cell shows, per test kind.
FIGURES = {
    "test_equivalence": Figure("lowest output cosine vs PyTorch fp32", _lowest_cosine, "{:.4f}"),
    "test_task_accuracy": Figure("task score relative to fp32", _path("task", "score"),
                                 "{:.3f}"),
    "test_latency": Figure("p50 latency, ms", _path("latency", "p50_ms"), "{:.3g}"),
    "test_memory": Figure("peak heap while running (callgrind), or else model RSS, MB",
                          lambda entry: _heap_mb(entry) or memory_figure(entry.get("memory")),
                          "{:.4g}"),
    "test_device_time": Figure("device p50 (CUDA events), ms",
                               _path("device_time", "device_p50_ms"), "{:.3g}"),
    "test_device_memory": Figure("model device memory (NVML, above the runtime), MB",
                                 _path("device_memory", "model_device_mb"), "{:.4g}"),
    "test_instructions": Figure("instructions per inference (callgrind), millions",
                                lambda entry: _millions(_path("instructions", "per_inference")(
                                    entry)), "{:.4g}"),
}


def broken_check(entry: dict) -> str | None:
    """The first accuracy check a failed entry broke, short enough for a cell ("sqnr 12.3
    dB", "top1 0.5", "RMSE 4.2x PyTorch"): the cosine alone hides which metric failed."""
    failures = (entry.get("accuracy") or {}).get("failures") or []
    if entry.get("outcome") != "failed" or not failures:
        return None
    check = str(failures[0]).split(": ", 1)[-1]  # "<output>: <check>"
    if " < " in check:
        return check.split(" < ", 1)[0]
    ratio = re.search(r"is ([0-9.e+-]+)x", check)
    if check.startswith("RMSE vs fp64"):
        return f"RMSE {ratio.group(1)}x PyTorch" if ratio else "RMSE vs fp64"
    return check.split(" (", 1)[0][:32]


def key_figure(entry: dict) -> str:
    broken = broken_check(entry)
    if broken:
        return broken
    figure = FIGURES.get(entry["test"])
    return fmt(figure.get(entry), figure.spec) if figure else ""


def cell_text(entry: dict, symbols: dict[str, str] = SYMBOLS) -> str:
    return " ".join(filter(None, (symbols.get(entry.get("outcome"), "?"), key_figure(entry))))


def row_label(entry: dict) -> str:
    model = entry.get("model", entry["id"])
    return f"{model} @ {entry['machine']}" if entry.get("machine") else model


def model_label(entry: dict) -> str:
    """A row within one machine's matrix: the model alone."""
    return entry.get("model", entry["id"])


def column(entry: dict) -> tuple[str, str]:
    return entry.get("backend", "?"), entry.get("precision", "?")


def _column_order(col: tuple[str, str]):
    backend, precision = col
    rank = PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)
    return backend != REFERENCE[0], backend, rank, precision


@dataclass
class Grid:
    """One test's matrix: rows are models (per machine), columns backend x precision."""

    test: str
    rows: list[str]
    columns: list[tuple[str, str]]
    cells: dict[tuple[str, tuple[str, str]], dict] = field(default_factory=dict)
    folded: list[tuple[str, str]] = field(default_factory=list)  # skipped everywhere

    @property
    def is_list(self) -> bool:
        # A test run on one backend x precision only (the property tests) reads as a list.
        return len(self.columns) == 1

    def cell(self, row: str, col: tuple[str, str]) -> dict | None:
        return self.cells.get((row, col))


def by_test(document: dict, machine: str | None = None) -> dict[str, list[dict]]:
    tests: dict[str, list[dict]] = {}
    for entry in on_machine(document, machine):
        tests.setdefault(entry["test"], []).append(entry)
    return tests


def is_performance(entries: list[dict]) -> bool:
    return any(kind in e for e in entries for kind in PERF_KINDS)


def _blank_skip(entry: dict) -> bool:
    return entry.get("outcome") == "skipped" and not key_figure(entry)


def grid(test: str, entries: list[dict], label=row_label) -> Grid:
    rows = list(dict.fromkeys(label(e) for e in entries))
    columns = sorted({column(e) for e in entries}, key=_column_order)
    # A backend that cannot run here (no GPU) would add a column of bare skips per
    # precision: fold those into one line so the table stays readable.
    folded = [c for c in columns if all(_blank_skip(e) for e in entries if column(e) == c)]
    kept = [c for c in columns if c not in folded] or columns
    return Grid(test, rows, kept, {(label(e), column(e)): e for e in entries},
                [c for c in folded if c not in kept])


def grids(document: dict, machine: str | None = None) -> list[Grid]:
    """Accuracy-style tests first (equivalence, task), the rest after, each one grid; with
    ``machine``, that machine's grids, their rows the models alone."""
    tests = by_test(document, machine)
    order = sorted(tests, key=lambda t: (t not in FIGURES, is_performance(tests[t]), t))
    label = row_label if machine is None else model_label
    return [grid(t, tests[t], label) for t in order]


def problems(document: dict) -> list[dict]:
    return [e for e in document["results"] if e.get("outcome") in BROKEN]



def shorten_lists(value, limit: int, note: str = ""):
    """``value`` with every list longer than ``limit`` (raw latency samples run to thousands
    of numbers) replaced by how many values it held, and ``note``."""
    if isinstance(value, dict):
        return {k: shorten_lists(v, limit, note) for k, v in value.items()}
    if isinstance(value, list) and len(value) > limit:
        return f"[{len(value)} values{note}]"
    return value

# The device kinds first: a skip without figures is slotted by its test's name, and
# "test_device_memory" also holds "memory".
# How a verdict's status reads in a table: one that could not decide says so.
UNDECIDED = {"insufficient": "undecided"}
PERF_KINDS = ("latency", "device_time", "device_memory", "memory", "instructions")
DEVICE_KINDS = ("device_time", "device_memory")


@dataclass
class PerfRow:
    label: str
    latency: dict | None = None
    memory: dict | None = None
    instructions: dict | None = None
    device_time: dict | None = None
    device_memory: dict | None = None
    speedup: float | None = None

    def figure(self, kind: str, key: str, part: str = ""):
        entry = getattr(self, kind)
        return number(((entry or {}).get(part or kind) or {}).get(key))

    def baseline(self, kind: str, key: str):
        entry = getattr(self, kind) or {}
        return number(((entry.get(kind) or {}).get("baseline") or {}).get(key))

    def verdict(self, kind: str, symbols: dict[str, str] = SYMBOLS, part: str = "") -> str:
        entry = getattr(self, kind)
        if entry is None:
            return ""
        if part and part not in entry:
            return ""
        verdict = (entry.get(part or kind) or {}).get("verdict")
        verdict = UNDECIDED.get(verdict, verdict)
        return f"{symbols.get(entry.get('outcome'), '?')} {verdict or ''}".strip()

    @property
    def measured(self) -> bool:
        return any((getattr(self, kind) or {}).get(kind) for kind in PERF_KINDS)


def _signed(value) -> str:
    text = fmt(value, "{:+.1f}")
    return f"{text} %" if text else ""


def _gated_delta(row: PerfRow) -> str:
    """The gated figure's change; under the latency floor nothing is gated, and the floor's
    verdict carries an absolute change only (no threshold): say so rather than show it."""
    latency = (row.latency or {}).get("latency") or {}
    if latency.get("verdict") == "insufficient" and "threshold_pct" not in latency:
        return "not gated (under the latency floor)"
    return _signed(row.figure("latency", "delta_pct"))


BASELINE_P50 = "baseline p50 ms"


def _compared_with(rows: list[PerfRow]) -> str:
    """The latency comparison column's header: an A/B run compares with the revision's
    processes (``latency.against`` names it), not with a stored baseline."""
    against = {((r.latency or {}).get("latency") or {}).get("against") for r in rows} - {None}
    revisions = sorted(against - {"baseline"})
    if not revisions:
        return BASELINE_P50
    name = revisions[0] if len(revisions) == 1 else "revision"
    return f"{name} p50 ms (A/B)" if against == set(revisions) else f"baseline or {name} p50 ms"


PERF_COLUMNS = (
    ("p50 ms", lambda r, s: fmt(r.figure("latency", "p50_ms"), "{:.3g}")),
    (BASELINE_P50, lambda r, s: fmt(r.baseline("latency", "p50_ms"), "{:.3g}")),
    ("Δ gated p50", lambda r, s: _gated_delta(r)),
    ("latency verdict", lambda r, s: r.verdict("latency", s)),
    ("speed-up vs torch fp32", lambda r, s: fmt(r.speedup, "{:.2f}×")),
    ("model MB", lambda r, s: fmt(memory_figure((r.memory or {}).get("memory")), "{:.4g}")),
    ("baseline MB", lambda r, s: fmt(r.figure("memory", "baseline_mb"), "{:.4g}")),
    ("Δ memory", lambda r, s: _signed(r.figure("memory", "delta_pct"))),
    ("memory verdict", lambda r, s: r.verdict("memory", s)),
    ("heap MB", lambda r, s: fmt(_heap_mb(r.memory), "{:.4g}")),
    ("Δ heap", lambda r, s: fmt(r.figure("memory", "delta_pct", part="heap"), "{:+.2f} %")),
    ("heap verdict", lambda r, s: r.verdict("memory", s, part="heap")),
    ("runtime MB (not gated)",
     lambda r, s: fmt(r.figure("memory", "runtime_overhead_mb"), "{:.4g}")),
    ("M instructions", lambda r, s: fmt(_millions(r.figure("instructions", "per_inference")),
                                        "{:.4g}")),
    ("Δ instructions", lambda r, s: fmt(r.figure("instructions", "delta_pct"), "{:+.2f} %")),
    ("instructions verdict", lambda r, s: r.verdict("instructions", s)),
)
# GPU backends' device figures (CUDA events, NVML, the framework allocator): shown only when
# some row has them, so a CPU run's table keeps its width.
DEVICE_COLUMNS = (
    ("device p50 ms", lambda r, s: fmt(r.figure("device_time", "device_p50_ms"), "{:.3g}")),
    ("host overhead p50 ms",
     lambda r, s: fmt(r.figure("device_time", "host_overhead_p50_ms"), "{:.3g}")),
    ("Δ device p50", lambda r, s: _signed(r.figure("device_time", "delta_pct"))),
    ("device time verdict", lambda r, s: r.verdict("device_time", s)),
    ("device MB (NVML, model)",
     lambda r, s: fmt(r.figure("device_memory", "model_device_mb"), "{:.4g}")),
    ("allocator peak MB",
     lambda r, s: fmt(r.figure("device_memory", "allocator_peak_mb"), "{:.4g}")),
    ("Δ device memory", lambda r, s: _signed(r.figure("device_memory", "delta_pct"))),
    ("device memory verdict", lambda r, s: r.verdict("device_memory", s)),
)


def perf_table(rows: list[PerfRow], symbols: dict[str, str] = SYMBOLS
               ) -> tuple[list[str], list[list[str]]]:
    """The performance table's header and cells (plain text), shared by both reports.
    Combinations with no figures at all (a GPU backend on a CPU runner) are left out."""
    measured = [r for r in rows if r.measured]
    columns = PERF_COLUMNS + (DEVICE_COLUMNS if any(
        (getattr(r, kind) or {}).get(kind) for r in measured for kind in DEVICE_KINDS) else ())
    header = ["combination", *(_compared_with(measured) if name == BASELINE_P50 else name
                               for name, _ in columns)]
    return header, [[r.label, *(get(r, symbols) for _, get in columns)] for r in measured]


def _slot(entry: dict) -> str:
    """Which figure an entry carries (a skip without figures: by its test's name)."""
    return next((kind for kind in PERF_KINDS if kind in entry),
                next((kind for kind in PERF_KINDS[1:] if kind in entry["test"]), "latency"))


def performance_rows(document: dict, machine: str | None = None) -> list[PerfRow]:
    """One row per combination (and machine) with its latency and memory entries, and the
    p50 speed-up over the same model's PyTorch eager fp32 on the same machine; with
    ``machine``, that machine's rows, labelled by the combination alone."""
    rows: dict[tuple, PerfRow] = {}
    for entries in by_test(document, machine).values():
        if not is_performance(entries):
            continue
        for entry in entries:
            key = (entry.get("machine", ""), entry.get("model"), column(entry))
            label = (f"{entry['id']} @ {entry['machine']}"
                     if entry.get("machine") and machine is None else entry["id"])
            setattr(rows.setdefault(key, PerfRow(label)), _slot(entry), entry)
    for (machine, model, _), row in rows.items():
        reference = rows.get((machine, model, REFERENCE))
        p50 = row.figure("latency", "p50_ms")
        ref = reference.figure("latency", "p50_ms") if reference else None
        if p50 and ref:
            row.speedup = ref / p50
    return sorted(rows.values(), key=lambda r: r.label)


def settings_by_column(document: dict) -> dict[tuple[str, str], dict[str, str]]:
    """Pinned runner settings per backend x precision; a value that differs between models
    (an artifact path) shows as "(per model)" rather than one line per model."""
    seen: dict[tuple[str, str], dict[str, set]] = {}
    for entry in document["results"]:
        for key, value in (entry.get("settings") or {}).items():
            seen.setdefault(column(entry), {}).setdefault(key, set()).add(str(value))
    return {col: {k: (next(iter(v)) if len(v) == 1 else "(per model)") for k, v in s.items()}
            for col, s in sorted(seen.items(), key=lambda item: _column_order(item[0]))}


def accuracy_errors(entry: dict) -> tuple[float | None, float | None]:
    """The worst output's max abs error and 1 - cosine, for the log-scale chart."""
    outputs = (entry.get("accuracy") or {}).get("outputs") or {}
    max_abs = [number(o.get("max_abs")) for o in outputs.values()]
    max_abs = [v for v in max_abs if v is not None]
    cosine = _lowest_cosine(entry)
    return (max(max_abs) if max_abs else None), (None if cosine is None else 1.0 - cosine)


def incomplete(document: dict) -> str:
    """Why the run behind ``document`` did not finish ("" when it did, or is older than the
    marker)."""
    run = document.get("run") or {}
    return "" if run.get("complete", True) else str(run.get("status", "incomplete"))
