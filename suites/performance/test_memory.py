"""Is it still lean? Peak host RSS above the pre-load state, against the stored baseline."""

import pytest

from infergate.baselines import judge_memory

pytestmark = pytest.mark.matrix(performance=True)


def test_memory(combo, measurement, perf, record):
    peak = measurement["memory"]["peak_rss_mb"]
    baseline = perf.baseline(combo)
    if baseline is None:
        record(memory={"peak_rss_mb": peak, "verdict": "no-baseline"})
        pytest.skip(perf.no_baseline(combo))
    _, threshold, reason = perf.thresholds(combo)
    verdict = judge_memory(combo.id, peak, baseline, threshold=threshold, reason=reason)
    record(memory={**verdict.figures, "verdict": verdict.status}, perf_message=verdict.message)
    print(verdict.message)
    assert verdict, str(verdict)
