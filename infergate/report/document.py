"""The results document (results.json) and the reports rendered from it.

One document feeds every report: ``results.json`` (schema ``infergate.results/1``),
``summary.md`` and ``report.html``. Documents from several shards or machines merge into one.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from infergate import environment
from infergate.atomic import atomic_write_text
from infergate.report.html import render_html
from infergate.report.markdown import render_markdown
from infergate.report.view import OUTCOMES, machine_id, machine_label

SCHEMA = "infergate.results/1"


class ReportError(ValueError):
    """A results file that cannot be used; the message names the file."""


def _finite(value):
    """JSON has no inf/nan: write them as strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _sort_key(entry: dict) -> tuple:
    return entry["test"], entry["id"], entry.get("machine", "")


def summarize(results: list[dict]) -> dict:
    """Counts per outcome, overall and per test; every known outcome is present, even at 0."""
    def counts(entries):
        found = Counter(e.get("outcome") for e in entries)
        return {"total": len(entries), **{o: found.get(o, 0) for o in OUTCOMES}}

    tests = sorted({e["test"] for e in results})
    return {**counts(results),
            "by_test": {t: counts([e for e in results if e["test"] == t]) for t in tests}}


def build_document(results: list[dict], selection, env: dict | None = None, **extra) -> dict:
    results = sorted(results, key=_sort_key)
    return _finite({
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": env if env is not None else environment.describe(),
        "selection": selection,
        "summary": summarize(results),
        **extra,
        "results": results,
    })


def _dump(document: dict) -> str:
    return json.dumps(document, indent=1, default=str) + "\n"


def write_results(directory: Path, document: dict) -> Path:
    """results.json alone (a run's progress), atomically."""
    path = Path(directory) / "results.json"
    atomic_write_text(path, _dump(document))
    return path


class ReportsIncomplete(OSError):
    """Some reports were not written; ``written`` names those that were, ``failures`` each
    that was not, with why."""

    def __init__(self, written: dict[str, Path], failures: list[str]):
        self.written, self.failures = written, failures
        super().__init__("; ".join(failures))


def write_reports(directory: Path, document: dict) -> dict[str, Path]:
    """results.json, then summary.md and report.html, each atomically and each on its own (a
    renderer's bug or a full disk costs that file only, never the data); the summary also
    goes to GitHub's job summary when ``GITHUB_STEP_SUMMARY`` names one. Raises
    ReportsIncomplete, after writing all it can, when any of them failed."""
    directory = Path(directory)
    paths, failed = {}, []
    views = {"results.json": lambda: _dump(document),
             "summary.md": lambda: render_markdown(document),
             "report.html": lambda: render_html(document)}
    texts = {}
    for name, render in views.items():
        try:
            texts[name] = render()
            atomic_write_text(directory / name, texts[name])
            paths[name] = directory / name
        except OSError as exc:
            failed.append(f"the reports: {directory / name}: {exc.strerror or exc}")
        except Exception as exc:  # noqa: BLE001 - a renderer's bug costs its view only
            failed.append(f"the reports: {directory / name}: rendering it failed: "
                          f"{type(exc).__name__}: {exc}")
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary and "summary.md" in texts:
        try:  # GitHub owns that file and collects every step's appends: append, never replace
            with open(step_summary, "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(texts["summary.md"] + "\n")
        except OSError as exc:
            failed.append(f"the job summary (GITHUB_STEP_SUMMARY={step_summary}): "
                          f"{exc.strerror or exc}")
    if failed:
        raise ReportsIncomplete(paths, failed)
    return paths


def load_results(path: Path) -> dict:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from None
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema != SCHEMA:
        raise ReportError(f"{path}: not an infergate results file "
                          f"(schema {schema!r}, expected {SCHEMA!r})")
    results = document.get("results")
    if not isinstance(results, list) or not all(
            isinstance(e, dict) and {"test", "id"} <= e.keys() for e in results):
        raise ReportError(f"{path}: 'results' must be a list of entries with 'test' and 'id'")
    if not isinstance(document.get("environment"), dict):
        raise ReportError(f"{path}: 'environment' must be an object")
    return document


def machine_key(env: dict) -> str:
    """What makes two runs "the same machine": its hardware id (infergate.machine_id, as
    baselines and the history key them), so shards of one run on runners of one kind stay
    one machine, and two kinds whose CPUs print the same name ("AMD EPYC") stay two. Results
    from before that id: the CPU's name, cores, OS and GPU."""
    found = machine_id(env)
    if found:
        return json.dumps(["id", found])
    return json.dumps([env.get(k) for k in ("cpu", "cpu_count", "platform", "gpu")])


def _entries_with_environment(document: dict):
    machines = document.get("machines") or {}
    for entry in document["results"]:
        yield entry, machines.get(entry.get("machine"), document["environment"])


class _Machines:
    """Readable, unique labels for the machines seen while merging."""

    def __init__(self):
        self.labels: dict[str, str] = {}
        self.environments: dict[str, dict] = {}

    def label(self, env: dict) -> str:
        key = machine_key(env)
        if key not in self.labels:
            label = machine_id(env) or machine_label(env)
            if label in self.environments:
                label = f"{label}, {env.get('platform', '?')}"
            if label in self.environments:
                label = f"{label} #{len(self.labels) + 1}"
            self.labels[key], self.environments[label] = label, env
        return self.labels[key]


def merge(sources: list[tuple[str, dict]]) -> tuple[dict, list[str]]:
    """One document from several (name, document) pairs, entries keyed by (test, id, machine).

    The same (test, id) twice from one machine (shards of a run, or a rerun): the later
    source wins, with a warning. From different machines both stay, each entry naming its
    machine, and the reports show one matrix per machine.
    """
    machines = _Machines()
    merged: dict[tuple, tuple[dict, str]] = {}
    warnings = []
    for name, document in sources:
        for entry, env in _entries_with_environment(document):
            label = machines.label(env)
            key = (entry["test"], entry["id"], label)
            if key in merged:
                warnings.append(f"{entry['test']}[{entry['id']}] on {label} is in both "
                                f"{merged[key][1]} and {name}; keeping {name}")
            merged[key] = (entry, name)
    several = len(machines.environments) > 1
    results = []
    for (_, _, label), (entry, _) in merged.items():
        entry = {k: v for k, v in entry.items() if k != "machine"}
        results.append({**entry, "machine": label} if several else entry)
    first = sources[0][1]
    extra = {"sources": [name for name, _ in sources]}
    if several:
        extra["machines"] = machines.environments
    return build_document(results, first.get("selection"), first["environment"], **extra), \
        warnings
