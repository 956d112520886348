"""Is it still fast, on any runner? Instructions per inference counted under callgrind:
deterministic and portable, so a 2 % change is decidable on a shared 2-core runner."""

import pytest

from infergate.plugin.performance import settle


@pytest.mark.matrix(performance=True)
def test_instructions(combo, counted, counts, perf, record):
    baseline = counts.baseline(combo)
    figures = counted[0]["instructions"]
    if baseline is None:
        record(instructions={**figures, "verdict": "no-baseline"})
        pytest.skip(counts.no_baseline(combo))
    verdict = counts.judge(combo, baseline)
    record(instructions={**figures, **verdict.figures, "verdict": verdict.status,
                         "processes": [r["instructions"]["per_inference"] for r in counted]},
           perf_message=verdict.message)
    settle([verdict], [], strict=perf.strict, taking=perf.updating)
