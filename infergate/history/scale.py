"""The history at a year's scale (README figures): ingest time per run, the change-point pass
over every series, and the page for one model.

    python -m infergate.history.scale --url sqlite:////tmp/scale.db --nights 365 --combos 300

Each night is one results document of ``--combos`` combinations x four tests (latency with
p50 and normalised figures, memory, instructions, equivalence's cosine: five figures) for each
of ``--machines`` machine ids, ingested as the fixtures do at session end.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from infergate.history import report
from infergate.history.changes import find_changes
from infergate.history.ingest import ingest
from infergate.history.series import Filter, load_series
from infergate.history.store import Store
from infergate.report.document import build_document


def night_document(night: int, machine: str, combos: int, rng) -> dict:
    results = []
    for k in range(combos):
        combo = {"model": f"model{k // 10}", "backend": f"backend{k % 5}",
                 "precision": ("fp32", "int8")[k % 2], "tier": "full",
                 "id": f"model{k // 10}-backend{k % 5}-{('fp32', 'int8')[k % 2]}-{k}",
                 "duration_s": 1.0, "reason": ""}
        noise = float(np.exp(rng.normal(0, 0.04)))
        results += [
            {**combo, "test": "test_latency", "outcome": "passed",
             "latency": {"p50_ms": 10 * noise, "normalised": 30 * noise, "verdict": "pass",
                         "threshold_pct": 10.0}},
            {**combo, "test": "test_memory", "outcome": "passed",
             "memory": {"model_peak_mb": 100 + rng.normal(0, 0.4), "verdict": "pass"}},
            {**combo, "test": "test_instructions", "outcome": "passed",
             "instructions": {"instructions_per_inference": 9.4e7 * (1 + rng.normal(0, 2e-4)),
                              "verdict": "pass"}},
            {**combo, "test": "test_equivalence", "outcome": "passed",
             "accuracy": {"status": "pass", "tolerance": {"min_cosine": 0.99},
                          "outputs": {"y": {"cosine": 0.9999 + rng.normal(0, 1e-6)}}}}]
    env = {"machine": {"id": machine}, "cpu": machine, "cpu_count": 2, "libraries": {}}
    doc = build_document(results, {"tier": "full"}, env,
                         run={"complete": True, "status": "finished",
                              "id": f"{machine}-{night}", "commit": f"{night:040x}"})
    doc["created"] = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=night)).isoformat()
    return doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infergate.history.scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--combos", type=int, default=300)
    parser.add_argument("--machines", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/infergate-scale"))
    parser.add_argument("--no-ingest", action="store_true",
                        help="measure the pass and the page on the database as it is")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    store = Store.open(args.url)
    times = []
    for night in range(0 if args.no_ingest else args.nights):
        for m in range(args.machines):
            doc = night_document(night, f"machine{m}", args.combos, rng)
            started = time.perf_counter()
            ingest(store, doc, "scale")
            times.append(time.perf_counter() - started)
    if times:
        t = np.array(times)
        print(f"ingest: {len(t)} runs of {4 * args.combos} results, per run median "
              f"{np.median(t):.3f} s, p95 {np.percentile(t, 95):.3f} s, max {t.max():.3f} s;"
              f" the last 10 % median {np.median(t[-len(t) // 10:]):.3f} s")
    # Wall and CPU time: on a shared runner the difference is the neighbours' share.
    wall, cpu = time.perf_counter(), time.process_time()
    series = load_series(store)
    loaded = time.perf_counter() - wall, time.process_time() - cpu
    found = sum(len(find_changes(key, points)) for key, points in series.items())
    print(f"change-point pass: {len(series)} series of up to {args.nights} runs in "
          f"{time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU "
          f"(loading {loaded[0]:.1f} s wall, {loaded[1]:.1f} s CPU), {found} change points")
    wall, cpu = time.perf_counter(), time.process_time()
    page = report.write(store, args.out, Filter(model="model0"))
    print(f"history.html for one model (10 combinations x 4 tests, every machine): "
          f"{time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} s CPU, "
          f"{page.stat().st_size / 1e6:.1f} MB -> {page}")
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
