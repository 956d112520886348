"""Benchmarks of the performance gate itself (not part of CI; results go in the README).

    python -m infergate.perf.gate_benchmark \
        --combos minilm_short-ort_cpu-fp32,minilm_short-openvino-int8

For each combination: a baseline of ``--baseline-processes`` fresh processes taken in rounds
(as ``--infergate-update-baselines`` does), then ``--repeats`` rounds, each with one unchanged (A/A)
verdict and one per injected slowdown, interleaved so machine drift hits both alike. Each
verdict follows the suite's flow: one process, and up to four more while it is regressed or
undecided. Every verdict is also compared with a fixed "median +10 %" comparison of the
first process's absolute time, the pytest-benchmark ``--benchmark-compare-fail`` way.
Finally the harness overhead: its p50 against a bare perf_counter loop around the same
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
from infergate.atomic import atomic_write_text
from infergate.backends import all_backends
from infergate.build.artifacts import ArtifactStore
from infergate.build.subject import ModelUnderTest
from infergate.models import all_models
from infergate.perf.baselines import FIGURES, make_entry
from infergate.perf.gate import (
    CONFIRM,
    CONFIRM_AB,
    judge_alternating,
    judge_latency,
    judge_processes,
    pooled_spread,
)
from infergate.perf.measure import Protocol, measure_latency, pin_threads
from infergate.perf.probe import run_probe
from infergate.perf.revision import checkout, prepare, run_reference_probe


def fixed_median_gate(current: dict, baseline: dict, threshold: float) -> bool:
    """pytest-benchmark's ``--benchmark-compare-fail=median:10%``: regressed if slower."""
    return current["p50_ms"] > (1 + threshold) * baseline["latency"]["p50_ms"]


def verdicts(first: dict, another, baseline: dict, priors: dict, args) -> dict:
    """The suite's verdict (normalised and absolute gate) from one process plus its
    confirmations, and the fixed-threshold comparison, for one measurement."""
    out = {"fixed_median": "regressed" if fixed_median_gate(first, baseline, args.threshold)
           else "pass"}
    measured = [first]

    def next_process(used: list) -> dict:
        # Each gate runs the suite's flow on its own; confirmations measured for one are
        # reused by the other rather than measured twice.
        if len(measured) <= len(used):
            measured.append(another())
        return measured[len(used)]

    for mode in ("normalised", "absolute"):
        processes = [first]
        verdict = judge_processes("x", processes, lambda p=processes: next_process(p),
                                  baseline, confirm=args.confirm, mode=mode,
                                  threshold=args.threshold, priors=priors,
                                  run_spread=args.run_spread)
        out[mode] = verdict.status
        out[f"{mode}_delta_pct"] = verdict.figures[f"{mode}_delta_pct"]
        out[f"{mode}_ci"] = [verdict.figures[f"{mode}_ci_low"],
                             verdict.figures[f"{mode}_ci_high"]]
        out[f"{mode}_processes"] = len(processes)
    return out


def gate_runs(combos: list[str], store: ArtifactStore, args) -> dict:
    subjects = {}
    for combo in combos:
        model, backend_name, precision = combo.split("-")
        subjects[combo] = (ModelUnderTest(all_models()[model], store),
                           all_backends()[backend_name], precision)

    def probe(combo, slowdown=0.0):
        subject, backend, precision = subjects[combo]
        return run_probe(subject, backend, precision, threads=args.threads,
                         min_time_s=args.min_time, slowdown=slowdown)

    if args.against:
        return ab_runs(subjects, probe, store, args)
    runs = {c: [] for c in combos}
    for r in range(args.baseline_processes):
        for combo in combos:
            progress.say(f"baseline round {r + 1}/{args.baseline_processes}: {combo}")
            runs[combo].append(probe(combo))
    entries = {c: make_entry(runs[c], args.threads, subjects[c][0].spec.benchmark_dims())
               for c in combos}
    priors = {f: pooled_spread(entries, f) for f in FIGURES}
    results = {c: {"baseline_p50_ms": entries[c]["latency"]["p50_ms"],
                   "runs": {"aa": [], **{f"slow{s:g}": [] for s in args.slowdowns}}}
               for c in combos}
    for i in range(args.repeats):
        for combo in combos:
            progress.say(f"{combo}: round {i + 1}/{args.repeats}")
            for s in [0.0, *args.slowdowns]:
                results[combo]["runs"]["aa" if not s else f"slow{s:g}"].append(verdicts(
                    probe(combo, s)["latency"], lambda c=combo, s=s: probe(c, s)["latency"],
                    entries[combo], priors, args))
    return {"priors": {f: {"sd": p.sd, "dof": p.dof} for f, p in priors.items()},
            "combinations": results}


def ab_runs(subjects: dict, probe, store: ArtifactStore, args) -> dict:
    """A/B mode (--against): every verdict measures the revision and this tree alternately,
    as ``pytest --infergate-perf-against`` does, from scratch: nothing is shared between
    verdicts."""
    ref = checkout(args.against, store.root)
    prepared = {c: prepare(ref, s.spec.name, b.name, p) for c, (s, b, p) in subjects.items()}

    def reference(combo):
        subject, backend, precision = subjects[combo]
        dims = subject.spec.benchmark_dims()
        return run_reference_probe(ref, prepared[combo], subject.spec.name, backend.name,
                                   precision, dims=dims, threads=args.threads,
                                   min_time_s=args.min_time, lock_dir=store.root,
                                   feed=subject.feed_path(**dims))

    results = {c: {"against": ref.label, "runs": {"aa": [], **{f"slow{s:g}": []
                                                               for s in args.slowdowns}}}
               for c in subjects}
    for i in range(args.repeats):
        for combo, (subject, _, _) in subjects.items():
            for s in [0.0, *args.slowdowns]:
                progress.say(f"{combo}: round {i + 1}/{args.repeats}, +{s:.0%} work")
                current, refs = [probe(combo, s)], []
                verdict = judge_alternating(
                    combo, current, refs, lambda c=combo, s=s: probe(c, s),
                    lambda c=combo: reference(c), against=ref.label, threads=args.threads,
                    dims=subject.spec.benchmark_dims(), confirm=args.confirm,
                    threshold=args.threshold)
                # The absolute figure judged on the same pairs (the flow followed the
                # normalised one), and the fixed threshold on the first pair.
                absolute = judge_latency(combo, [c["latency"] for c in current],
                                         make_entry(refs, args.threads, {}), mode="absolute",
                                         threshold=args.threshold, against=ref.label)
                fixed = current[0]["latency"]["p50_ms"] > (
                    (1 + args.threshold) * refs[0]["latency"]["p50_ms"])
                results[combo]["runs"]["aa" if not s else f"slow{s:g}"].append({
                    "fixed_median": "regressed" if fixed else "pass",
                    **{f"{mode}{key}": v for mode, judged in (("normalised", verdict),
                                                              ("absolute", absolute))
                       for key, v in (("", judged.status),
                                      ("_delta_pct", judged.figures[f"{mode}_delta_pct"]),
                                      ("_ci", [judged.figures[f"{mode}_ci_low"],
                                               judged.figures[f"{mode}_ci_high"]]),
                                      ("_processes", len(current)))}})
    return {"priors": {}, "combinations": results}


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
    for combo, data in results["gate"]["combinations"].items():
        for name, runs in data["runs"].items():
            label = ("A/A (false alarms)" if name == "aa"
                     else f"+{float(name[4:]):.0%} work (detected)")

            def count(gate, runs=runs):
                hits = sum(r[gate] == "regressed" for r in runs)
                insufficient = sum(r[gate] == "insufficient" for r in runs)
                return f"{hits}/{len(runs)}" + (f" ({insufficient} undecided)"
                                                if insufficient else "")

            lines.append(f"| {combo} | {label} | {count('normalised')} | {count('absolute')} | "
                         f"{count('fixed_median')} |")
    priors = results["gate"]["priors"]
    if priors:
        lines.append("\nBetween-process spread in the benchmark's baselines: " + ", ".join(
            f"{f} {p['sd'] * 100:.1f} % ({p['dof']} dof)" for f, p in priors.items()))
    o = results["overhead"]
    lines.append(f"\nHarness overhead ({o['combo']}): p50 {o['harness_p50_ms'] * 1e3:.1f} µs vs "
                 f"bare loop {o['bare_p50_ms'] * 1e3:.1f} µs, ratio {o['ratio']:.3f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infergate.perf.gate_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--combos",
                        default="minilm_short-ort_cpu-fp32,minilm_short-openvino-int8")
    parser.add_argument("--overhead-combo", default="mlp-ort_cpu-fp32")
    parser.add_argument("--baseline-processes", type=int, default=5)
    parser.add_argument("--confirm", type=int, default=None,
                        help=f"as the suite's --infergate-perf-confirm (default {CONFIRM}; "
                             f"{CONFIRM_AB} with --against)")
    parser.add_argument("--against", metavar="REV",
                        help="A/B mode: judge against git revision REV measured alternately, "
                             "as pytest's --infergate-perf-against (HEAD gives the A/A of a "
                             "clean tree)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--slowdowns", type=lambda s: [float(x) for x in s.split(",")],
                        default=[0.10, 0.20])
    parser.add_argument("--threshold", type=float, default=0.10)
    parser.add_argument("--run-spread", type=float, default=0.03,
                        help="as the suite's --infergate-perf-run-spread (default 0.03)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-time", type=float, default=2.0)
    parser.add_argument("--cache-dir", default=".cache/infergate")
    parser.add_argument("--out", default="reports/gate-benchmark.json")
    args = parser.parse_args(argv)
    if args.confirm is None:
        args.confirm = CONFIRM_AB if args.against else CONFIRM
    store = ArtifactStore(Path(args.cache_dir))
    combos = args.combos.split(",")
    results = {"settings": vars(args), "gate": gate_runs(combos, store, args)}
    results["overhead"] = overhead(args.overhead_combo, store, args.threads, args.min_time)
    atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=str) + "\n")
    print("\n".join(summarise(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
