"""Is it still lean? Peak heap bytes counted under callgrind (portable: judged on any
runner), and where this machine has a baseline, the model's peak RSS above the initialised
runtime (the runtime's own overhead reported beside it, not gated)."""

import pytest

from infergate.perf.baselines import MEMORY_FIGURES
from infergate.perf.gate import OUTDATED, judge_memory
from infergate.plugin.performance import settle


@pytest.mark.matrix(performance=True)
def test_memory(combo, heap_counted, counts, perf, record, request):
    verdicts, undecided = [], []
    if isinstance(heap_counted, str):
        undecided.append(f"heap: {heap_counted}")
    elif (baseline := counts.baseline(combo)) is None or "heap" not in baseline:
        record(heap={**heap_counted[0]["heap"], "verdict": "no-baseline"})
        undecided.append(counts.no_baseline(combo) if baseline is None else counts.no_heap(combo))
    else:
        heap = counts.judge_heap(combo, baseline)
        record(heap={**heap.figures, "verdict": heap.status})
        verdicts.append(heap)
    if not perf.updating and perf.baseline(combo) is None:
        if not verdicts:  # resident memory would need this machine's own baseline
            undecided.append(perf.no_baseline())
    else:
        memory = request.getfixturevalue("measurement")["memory"]
        baseline = perf.baseline(combo)
        if baseline is None:
            record(memory={**{k: memory.get(k) for k in MEMORY_FIGURES},
                           "verdict": "no-baseline"})
        else:
            _, threshold, reason = perf.thresholds(combo)
            rss = judge_memory(combo.id, memory, baseline, threshold=threshold, reason=reason)
            record(memory={**rss.figures, "verdict": rss.status})
            (undecided.append(rss.message) if rss.status == OUTDATED else verdicts.append(rss))
    if verdicts:
        record(perf_message="\n".join(v.message for v in verdicts))
    settle(verdicts, undecided, strict=perf.strict, taking=perf.updating)
