"""Is it still fast? Latency against the stored baseline, measured in a fresh process."""

import pytest

from infergate.perf import baselines
from infergate.plugin.performance import REPLAY, feed_benchmark, settle


@pytest.mark.matrix(performance=True, wall_time=True)
@pytest.mark.benchmark(timer=REPLAY)
def test_latency(combo, measurement, perf, counts, benchmark, record):
    # The block means are pytest-benchmark's; results.json keeps the gate's samples.
    latency = {k: v for k, v in measurement["latency"].items() if k != "block_means_ms"}
    feed_benchmark(benchmark, measurement["latency"], {
        **{k: latency[k] for k in ("p50_ms", "p90_ms", "p99_ms", "cov", "normalised",
                                   "calibration_p50_ms", "throughput_per_s")},
        **{k: measurement["memory"].get(k) for k in baselines.MEMORY_FIGURES},
        "cold_start": measurement["cold_start"], "threads": perf.threads,
        # test_instructions runs first (file order): its count, where this session took one.
        "instructions_per_inference": counts.counted(combo)})
    if perf.against:
        verdict = perf.judge_against(combo)
        if verdict is None:
            pytest.skip(f"{combo.id}: {perf.against.label} has no such combination to A/B")
        # None when nothing was compared (under the latency floor)
        compared = baselines.middle_process([p["latency"]
                                             for p in perf.reference_processes(combo)])
    else:
        baseline = perf.baseline(combo)
        if baseline is None:
            record(latency={**latency, "verdict": "no-baseline"},
                   cold_start=measurement["cold_start"], settings=measurement["settings"])
            pytest.skip(perf.no_baseline())
        verdict = perf.judge_latency(combo, baseline)
        compared = baseline["latency"]
    record(latency={**latency, "verdict": verdict.status, **verdict.figures,
                    "against": perf.against.label if perf.against else "baseline",
                    "baseline": compared and _figures(compared),
                    "processes": [_figures(p["latency"]) for p in perf.processes(combo)]},
           cold_start=measurement["cold_start"], settings=measurement["settings"],
           perf_message=verdict.message)
    if not perf.gates_wall_time and not perf.updating:
        print(verdict.message)
        pytest.skip(f"wall time reported, not gated in the {perf.tier} tier "
                    f"(--infergate-perf-wall-time): "
                    f"{verdict.status}: {verdict.message}")
    settle([verdict], [], strict=perf.strict, taking=perf.updating)


def _figures(latency: dict) -> dict:
    return {k: latency[k] for k in ("p50_ms", "normalised")}
