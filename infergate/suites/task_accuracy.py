"""Does it still do the job? Task accuracy on real data, relative to PyTorch fp32."""

import pytest

from infergate.plugin.verdicts import hold


@pytest.mark.matrix(task=True)
def test_task_accuracy(combo, runner, reference, record):
    verdict = reference.judge_task(runner, label=combo.id)
    record(task=verdict)
    hold(verdict)
