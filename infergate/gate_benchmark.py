"""Benchmarks of the performance gate itself (not part of CI; results go in the README).

    python -m infergate.gate_benchmark --combos mlp-ort_cpu-fp32,minilm_short-ort_cpu-fp32

For each combination: one baseline measurement, then ``--repeats`` rounds, each with one
unchanged (A/A) measurement and one per injected slowdown, interleaved so machine drift hits
both alike. Every measurement is judged by the gate (normalised and absolute) and by a fixed
"median +10 %" comparison of absolute times, the pytest-benchmark ``--benchmark-compare-fail``
way. Finally the harness overhead: its p50 against a bare perf_counter loop around the same
session on the smallest model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from infergate import progress
from infergate.artifacts import ArtifactStore
from infergate.atomic import atomic_write_text
from infergate.backends import all_backends
from infergate.baselines import judge_latency, make_entry
from infergate.measure import Protocol, measure_latency, pin_threads
from infergate.models import all_models
from infergate.probe import run_probe
from infergate.subject import ModelUnderTest


def fixed_median_gate(current: dict, baseline: dict, threshold: float) -> bool:
    """pytest-benchmark's ``--benchmark-compare-fail=median:10%``: regressed if slower."""
    return (statistics.median(current["samples_ms"])
            > (1 + threshold) * statistics.median(baseline["latency"]["samples_ms"]))


def judge_all(latency: dict, baseline: dict, threshold: float) -> dict:
    return {"normalised": judge_latency("x", latency, baseline, threshold=threshold).status,
            "absolute": judge_latency("x", latency, baseline, threshold=threshold,
                                      mode="absolute").status,
            "fixed_median": "regressed" if fixed_median_gate(latency, baseline, threshold)
            else "pass",
            "normalised_delta_pct": (latency["normalised"] / baseline["latency"]["normalised"]
                                     - 1) * 100,
            "absolute_delta_pct": (latency["p50_ms"] / baseline["latency"]["p50_ms"] - 1) * 100}


def gate_runs(combo: str, store: ArtifactStore, args) -> dict:
    model, backend_name, precision = combo.split("-")
    subject = ModelUnderTest(all_models()[model], store)
    backend = all_backends()[backend_name]

    def probe(slowdown=0.0):
        return run_probe(subject, backend, precision, threads=args.threads,
                         min_time_s=args.min_time, slowdown=slowdown)["latency"]

    baseline = make_entry({"latency": probe(), "memory": {"peak_rss_mb": 0.0}}, args.threads,
                          subject.spec.benchmark_dims())
    runs = {"aa": [], **{f"slow{s:g}": [] for s in args.slowdowns}}
    for i in range(args.repeats):
        progress.say(f"{combo}: round {i + 1}/{args.repeats}")
        runs["aa"].append(judge_all(probe(), baseline, args.threshold))
        for s in args.slowdowns:
            runs[f"slow{s:g}"].append(judge_all(probe(s), baseline, args.threshold))
    return {"baseline_p50_ms": baseline["latency"]["p50_ms"], "runs": runs}


def overhead(combo: str, store: ArtifactStore, threads: int, seconds: float) -> dict:
    """Harness p50 vs a bare perf_counter loop around the same session, same process."""
    model, backend_name, precision = combo.split("-")
    pin_threads(threads)
    subject = ModelUnderTest(all_models()[model], store)
    runner = all_backends()[backend_name].prepare(subject, precision)
    runner.threads = threads
    feed = subject.inputs(seed=0, **subject.spec.benchmark_dims())
    with runner:
        bare_p50, harness_p50 = [], []
        for _ in range(3):  # alternate, so drift hits both
            bare, end = [], time.perf_counter() + seconds
            while time.perf_counter() < end:
                start = time.perf_counter()
                runner.run(feed)
                bare.append(time.perf_counter() - start)
            bare_p50.append(statistics.median(bare) * 1e3)
            result = measure_latency(lambda: runner.run(feed), runner.synchronize, 1,
                                     Protocol(min_time_s=seconds))
            harness_p50.append(result.stats.p50_ms)
    bare_ms, harness_ms = statistics.median(bare_p50), statistics.median(harness_p50)
    return {"combo": combo, "bare_p50_ms": bare_ms, "harness_p50_ms": harness_ms,
            "ratio": harness_ms / bare_ms}


def summarise(results: dict) -> list[str]:
    lines = ["| combination | measurements | normalised gate | absolute gate | "
             "fixed median +10 % |", "|---|---|---|---|---|"]
    for combo, data in results["gate"].items():
        for name, runs in data["runs"].items():
            label = ("A/A (false alarms)" if name == "aa"
                     else f"+{float(name[4:]):.0%} work (detected)")

            def count(gate, runs=runs):
                hits = sum(r[gate] == "regressed" for r in runs)
                insufficient = sum(r[gate] == "insufficient" for r in runs)
                return f"{hits}/{len(runs)}" + (f" ({insufficient} insufficient)"
                                                if insufficient else "")

            lines.append(f"| {combo} | {label} | {count('normalised')} | {count('absolute')} | "
                         f"{count('fixed_median')} |")
    o = results["overhead"]
    lines.append(f"\nHarness overhead ({o['combo']}): p50 {o['harness_p50_ms'] * 1e3:.1f} µs vs "
                 f"bare loop {o['bare_p50_ms'] * 1e3:.1f} µs, ratio {o['ratio']:.3f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infergate.gate_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--combos", default="mlp-ort_cpu-fp32,minilm_short-ort_cpu-fp32")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--slowdowns", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.10, 0.20])
    parser.add_argument("--threshold", type=float, default=0.10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--cache-dir", default=".cache/infergate")
    parser.add_argument("--out", default="reports/gate-benchmark.json")
    args = parser.parse_args(argv)
    store = ArtifactStore(Path(args.cache_dir))
    combos = args.combos.split(",")
    results = {"settings": vars(args),
               "gate": {c: gate_runs(c, store, args) for c in combos}}
    results["overhead"] = overhead(combos[0], store, args.threads, args.min_time)
    atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=str) + "\n")
    print("\n".join(summarise(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
