"""results.json documents into the history: one run per (document, machine), idempotently.

The same run ingested twice stays one run: a run is keyed by its session id (``run.id``,
written by the pytest plugin) and machine, or, for a document without one, by a hash of its
content. Ingesting a run again replaces its results in one transaction, so a run ingested
while it was still going and again at its end holds its final results.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from infergate.history.store import Store, results, runs
from infergate.report.view import machine_id as hardware_id
from infergate.report.view import machine_label, number

REASON_CHARS = 4000  # a crash's stderr tail is enough to recognise it; the report keeps all


@dataclass(frozen=True)
class Ingested:
    run_id: int
    run_key: str
    machine_id: str
    results: int
    replaced: bool

    def __str__(self) -> str:
        action = "replaced" if self.replaced else "added"
        return (f"run {self.run_id} ({self.machine_id}, {self.results} results) {action}")


def _finite(value) -> float | None:
    value = number(value)
    return value if value is not None and math.isfinite(value) else None


def _lowest_cosine(entry: dict) -> float | None:
    outputs = (entry.get("accuracy") or {}).get("outputs") or {}
    values = [number(o.get("cosine")) for o in outputs.values() if isinstance(o, dict)]
    values = [v for v in values if v is not None]
    return None if not values or any(math.isnan(v) for v in values) else min(values)


def result_row(entry: dict) -> dict:
    """The columns of one results.json entry: verdict and the figures a series is made of."""
    latency = entry.get("latency") or {}
    counts = entry.get("instructions") or {}
    memory = entry.get("memory") or {}
    accuracy = entry.get("accuracy") or {}
    task = entry.get("task") or {}
    verdict = next((part.get("verdict") or part.get("status")
                    for part in (latency, counts, memory, accuracy, task)
                    if part.get("verdict") or part.get("status")), None)
    return {
        "test": entry["test"], "combo": entry["id"], "model": entry.get("model"),
        "backend": entry.get("backend"), "precision": entry.get("precision"),
        "outcome": entry.get("outcome"), "verdict": verdict,
        "reason": (entry.get("reason") or "")[:REASON_CHARS],
        "duration_s": _finite(entry.get("duration_s")),
        "p50_ms": _finite(latency.get("p50_ms")),
        "normalised": _finite(latency.get("normalised")),
        "instructions": _finite(counts.get("instructions_per_inference",
                                           counts.get("per_inference"))),
        "memory_mb": _finite(memory.get("model_peak_mb", memory.get("peak_rss_mb"))),
        "cosine": _lowest_cosine(entry),
        "task_score": _finite(task.get("score")),
        "threshold_pct": _finite(latency.get("threshold_pct", counts.get("threshold_pct"))),
        "min_cosine": _finite((accuracy.get("tolerance") or {}).get("min_cosine")),
    }


def machine_id(env: dict) -> str:
    # Results from before the hardware id: the CPU's name.
    return hardware_id(env) or machine_label(env)


def _created(document: dict, source: str) -> datetime:
    created = document.get("created")
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: 'created' must be an ISO time, got {created!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def runs_of(document: dict, source: str) -> list[dict]:
    """One run per machine: a merged report holds several machines' results."""
    machines = document.get("machines") or {}
    groups: dict[str, list[dict]] = {}
    for entry in document["results"]:
        groups.setdefault(entry.get("machine") or "", []).append(entry)
    run_info = document.get("run") or {}
    created = _created(document, source)
    out = []
    for label, entries in groups.items():
        env = machines.get(label, document["environment"]) if label else document["environment"]
        mid = machine_id(env)
        if run_info.get("id"):
            key = f"{run_info['id']}/{mid}"
        else:
            content = json.dumps([document.get("created"), env, entries], sort_keys=True,
                                 default=str)
            key = "sha256:" + hashlib.sha256(content.encode()).hexdigest()
        out.append({
            "run": {
                "run_key": key, "created": created, "commit": run_info.get("commit"),
                "branch": run_info.get("branch"), "ci_job_url": run_info.get("ci_job_url"),
                "machine_id": mid, "machine": env.get("machine"),
                "libraries": env.get("libraries"),
                "environment": {k: env.get(k) for k in ("python", "platform", "cpu",
                                                        "cpu_count", "gpu")},
                "status": run_info.get("status"), "complete": run_info.get("complete"),
                "source": source},
            # (test, id) once per run: a later entry wins, as in the report's merge
            "results": list({(e["test"], e["id"]): result_row(e) for e in entries}.values()),
        })
    return out


def ingest(store: Store, document: dict, source: str) -> list[Ingested]:
    done = []
    for item in runs_of(document, source):
        run, rows = item["run"], item["results"]
        with store.transaction() as connection:
            store.lock(connection, run["run_key"])  # two jobs ingesting one run: one after other
            existing = connection.execute(
                sa.select(runs.c.id).where(runs.c.run_key == run["run_key"])).scalar()
            values = {**run, "ingested": datetime.now(UTC)}
            if existing is None:
                run_id = connection.execute(
                    runs.insert().values(**values).returning(runs.c.id)).scalar_one()
            else:
                run_id = existing
                connection.execute(results.delete().where(results.c.run_id == run_id))
                connection.execute(runs.update().where(runs.c.id == run_id).values(**values))
            if rows:
                connection.execute(results.insert(), [{**r, "run_id": run_id} for r in rows])
        done.append(Ingested(run_id, run["run_key"], run["machine_id"], len(rows),
                             existing is not None))
    return done

