"""Is it still lean? The model's peak host RSS above the initialised runtime, against the
stored baseline; the runtime's own overhead is reported beside it, not gated."""

import pytest

from infergate.perf.baselines import MEMORY_FIGURES
from infergate.perf.gate import OUTDATED, judge_memory


@pytest.mark.matrix(performance=True)
def test_memory(combo, measurement, perf, record):
    memory = measurement["memory"]
    baseline = perf.baseline(combo)
    if baseline is None:
        record(memory={**{k: memory.get(k) for k in MEMORY_FIGURES}, "verdict": "no-baseline"})
        pytest.skip(perf.no_baseline())
    _, threshold, reason = perf.thresholds(combo)
    verdict = judge_memory(combo.id, memory, baseline, threshold=threshold, reason=reason)
    record(memory={**verdict.figures, "verdict": verdict.status}, perf_message=verdict.message)
    if verdict.status == OUTDATED:
        pytest.skip(verdict.message)
    print(verdict.message)
    assert verdict, str(verdict)
