"""Is it still fast? Latency against the stored baseline, measured in a fresh process."""

import pytest

from fixtures.performance import feed_benchmark

pytestmark = pytest.mark.matrix(performance=True)


def test_latency(combo, measurement, perf, benchmark, record):
    latency = measurement["latency"]
    feed_benchmark(benchmark, latency["samples_ms"], {
        **{k: latency[k] for k in ("p50_ms", "p90_ms", "p99_ms", "cov", "normalised",
                                   "calibration_p50_ms", "throughput_per_s")},
        "peak_rss_mb": measurement["memory"]["peak_rss_mb"],
        "cold_start": measurement["cold_start"], "threads": perf.threads})
    baseline = perf.baseline(combo)
    if baseline is None:
        record(latency={**latency, "verdict": "no-baseline"}, cold_start=measurement["cold_start"],
               settings=measurement["settings"])
        pytest.skip(perf.no_baseline(combo))
    verdict = perf.judge_latency(combo, baseline)
    record(latency={**latency, "verdict": verdict.status, **verdict.figures,
                    "baseline": {k: baseline["latency"][k] for k in ("p50_ms", "normalised")},
                    "processes": [{k: p["latency"][k] for k in ("p50_ms", "normalised")}
                                  for p in perf.processes(combo)]},
           cold_start=measurement["cold_start"], settings=measurement["settings"],
           perf_message=verdict.message)
    print(verdict.message)
    assert verdict, str(verdict)
