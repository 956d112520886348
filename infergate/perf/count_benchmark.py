"""Benchmark of the instruction-count gate itself (not part of CI; results go in the README).

    python -m infergate.perf.count_benchmark --combos minilm_short-ort_cpu-fp32,... \\
        --aa 10 --slowdowns 0.02,0.05 --repeats 4 --out docs/count-benchmark.json

For each combination: a baseline of ``instructions.BASELINE_PROCESSES`` processes (as
``--infergate-update-baselines`` takes it), then ``--aa`` verdicts on unchanged code and
``--repeats``
verdicts per injected slowdown (real work, sized in instructions: ``infergate.perf.injected``).
Each verdict follows the suite's flow: one process, confirmed by more when it moved
(``--no-confirm``: the first process only). Counts do not depend on load, so every process
runs in parallel, one per core.

``--from FILE`` adds the counts of an earlier run: every verdict, old and new, is judged
again from its stored counts by the current rule (``instructions.judge``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infergate import environment, progress
from infergate.atomic import atomic_write_text
from infergate.backends import all_backends
from infergate.build.artifacts import ArtifactStore
from infergate.build.subject import ModelUnderTest
from infergate.models import all_models
from infergate.perf import instructions
from infergate.perf.probe import counted_request, run_counted


def _parse(combo: str) -> tuple[str, str, str]:
    model, backend, precision = combo.split("#")[0].rsplit("-", 2)  # "#2": a later run
    if model not in all_models() or backend not in all_backends():
        raise SystemExit(f"unknown combination {combo!r}")
    return model, backend, precision


def run(combos: list[str], store: ArtifactStore, args) -> dict:
    subjects = {}
    requests = {}
    for combo in combos:  # exports and quantization first, outside the pool
        model, backend, precision = _parse(combo)
        subject = subjects.setdefault(model, ModelUnderTest(all_models()[model], store))
        for slowdown in (0.0, *args.slowdowns):
            requests[combo, slowdown] = counted_request(subject, all_backends()[backend],
                                                        precision, slowdown=slowdown)
    pool = ThreadPoolExecutor(max(1, environment.cpu_count()))

    def count_one(job: tuple[str, float]) -> dict:
        (reply,) = run_counted([requests[job]])
        if isinstance(reply, Exception):
            raise reply
        return reply

    def count_all(jobs: list[tuple[str, float]]) -> list[dict]:
        started = time.perf_counter()
        replies = list(pool.map(count_one, jobs))
        progress.say(f"{len(jobs)} counts in {time.perf_counter() - started:.0f} s")
        return replies

    # First processes of every baseline and verdict at once; confirmations after.
    plan = [(combo, 0.0) for combo in combos for _ in range(instructions.BASELINE_PROCESSES)]
    plan += [(combo, 0.0) for combo in combos for _ in range(args.aa)]
    plan += [(combo, s) for combo in combos for s in args.slowdowns for _ in range(args.repeats)]
    replies = count_all(plan)
    results: dict[str, dict] = {c: {"baseline": [], "verdicts": []} for c in combos}
    firsts = []
    for job, reply in zip(plan, replies, strict=True):
        combo, slowdown = job
        bucket = results[combo]
        if len(bucket["baseline"]) < instructions.BASELINE_PROCESSES and slowdown == 0.0:
            bucket["baseline"].append(reply)
        else:
            firsts.append((combo, slowdown, [reply]))
    entries = {c: instructions.make_entry(r["baseline"], measured_on="benchmark")
               for c, r in results.items()}
    moved = [(combo, slowdown, counted) for combo, slowdown, counted in firsts
             if args.confirm and instructions.moved(
                 [counted[0]["instructions"]["per_inference"]], entries[combo],
                 args.threshold)]
    extra = instructions.BASELINE_PROCESSES - 1
    confirmations = count_all([(c, s) for c, s, _ in moved for _ in range(extra)])
    for i, (_, _, counted) in enumerate(moved):
        counted += confirmations[i * extra:(i + 1) * extra]
    for combo, slowdown, counted in firsts:
        results[combo]["verdicts"].append({
            "slowdown": slowdown, "counts": [r["instructions"]["per_inference"] for r in counted],
            "seconds": [sum(r["instructions"]["phases_s"].values()) for r in counted]})
    for combo, bucket in results.items():
        bucket["entry"] = entries[combo]
        bucket["baseline"] = [r["instructions"] for r in bucket["baseline"]]
    return results


def rejudge(results: dict, threshold: float = instructions.THRESHOLD) -> dict:
    """Each verdict from its stored counts, by the current rule."""
    for combo, bucket in results.items():
        for verdict in bucket["verdicts"]:
            judged = instructions.judge(combo, verdict["counts"], bucket["entry"],
                                        threshold=threshold)
            verdict.update(status=judged.status, message=str(judged))
    return results


def summarise(results: dict) -> list[str]:
    lines = []
    for combo, bucket in results.items():
        by = {}
        for v in bucket["verdicts"]:
            by.setdefault(v["slowdown"], []).append(v)
        entry = bucket["entry"]
        parts = [f"{combo}: baseline {entry['per_inference'] / 1e6:.3f}M/inference, spread "
                 f"{entry['spread'] * 100:.3g} %"]
        for slowdown, verdicts in sorted(by.items()):
            flagged = sum(v["status"] == "regressed" for v in verdicts)
            deltas = [min(v["counts"]) / entry["per_inference"] - 1 for v in verdicts]
            what = "false alarms" if slowdown == 0 else f"+{slowdown * 100:g} % detected"
            parts.append(f"{what} {flagged}/{len(verdicts)} (Δ {min(deltas) * 100:+.3f}…"
                         f"{max(deltas) * 100:+.3f} %)")
        seconds = [s for v in bucket["verdicts"] for s in v["seconds"]]
        parts.append(f"{statistics.median(seconds):.0f} s per process under valgrind")
        lines.append("; ".join(parts))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infergate.perf.count_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--combos", default="", help="comma list of model-backend-precision")
    parser.add_argument("--from", dest="earlier", type=Path, action="append", default=[],
                        help="an earlier run's output whose counts join this one's "
                             "(repeatable)")
    parser.add_argument("--aa", type=int, default=10, help="unchanged verdicts per combination")
    parser.add_argument("--slowdowns", default="0.02,0.05",
                        type=lambda s: [float(x) for x in s.split(",") if x])
    parser.add_argument("--repeats", type=int, default=4,
                        help="verdicts per combination and slowdown")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="judge every verdict on its first process (the suite counts two "
                             "more when the figure moved; that only lowers the minimum)")
    parser.add_argument("--threshold", type=float, default=instructions.THRESHOLD,
                        help="the instruction threshold the verdicts are judged at")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/infergate"))
    parser.add_argument("--out", type=Path, default=Path("reports/count-benchmark.json"))
    args = parser.parse_args(argv)
    combos = [c for c in args.combos.split(",") if c]
    missing = instructions.unavailable_reason()
    if combos and missing:
        print(f"cannot count instructions: {missing}", file=sys.stderr)
        return 2
    results = {}

    def add(found: dict) -> None:
        for combo, bucket in found.items():
            label, n = combo.split("#")[0], 1
            while (label if n == 1 else f"{label}#{n}") in results:
                n += 1  # the same combination in another run keeps its own baseline
            results[label if n == 1 else f"{label}#{n}"] = bucket

    for earlier in args.earlier:
        add(json.loads(earlier.read_text())["results"])
    if combos:
        add(run(combos, ArtifactStore(args.cache_dir), args))
    if not results:
        parser.error("nothing to judge: give --combos and/or --from")
    summary = summarise(rejudge(results, args.threshold))
    atomic_write_text(args.out, json.dumps({
        "machine": environment.describe()["machine"], "valgrind": instructions.valgrind_version(),
        "threshold": args.threshold, "confirm": args.confirm, "summary": summary,
        "results": results},
        indent=1) + "\n")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
