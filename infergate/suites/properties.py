"""Do dynamic shapes hold? Hypothesis draws shapes inside each model's declared ranges.

``@given_data`` is ``@given(data=st.data())`` applied when the test runs: hypothesis is
imported then, not when the matrix is collected (see ``infergate.plugin.properties``)."""

import pytest

from infergate.accuracy.precision import tolerance_for
from infergate.plugin.properties import given_data
from infergate.plugin.verdicts import hold

# Cap draws so one example stays well under a second on 2 cores.
MAX_DRAW = {"batch": 8, "seq": 64}


def draw_int(data, low: int, high: int, label: str) -> int:
    from hypothesis import strategies as st

    return data.draw(st.integers(low, high), label=label)


def draw_sizes(data, spec) -> dict[str, int]:
    return {name: draw_int(data, dim.min, min(dim.max, MAX_DRAW.get(name, dim.max)), name)
            for name, dim in spec.dims.items()}


def fp32_check(combo, actual, expected, label, feed, expected_as="reference output"):
    from infergate.accuracy.compare import judge  # numpy: when a test judges, not at collection

    tolerance, reasons = tolerance_for(combo.spec.tolerances, combo.backend.name, "fp32")
    return judge(actual, expected, tolerance, label=label, logits=combo.spec.logits,
                 reasons=reasons, expected_as=expected_as, feed=feed)


ON_ORT_FP32 = pytest.mark.matrix(backends=("ort_cpu",), precisions=("fp32",))


@ON_ORT_FP32
@given_data
def test_dynamic_shapes_match_pytorch(combo, runner, subject, reference, data):
    sizes = draw_sizes(data, combo.spec)
    seed = draw_int(data, 0, 2**16, "seed")
    feed = subject.inputs(seed=seed, **sizes)
    verdict = fp32_check(combo, runner.run(feed), reference.eager(feed),
                         label=f"{combo.id} {sizes} seed={seed}", feed=feed)
    hold(verdict)


@ON_ORT_FP32
@given_data
def test_batch_invariance(combo, runner, subject, data):
    sizes = draw_sizes(data, combo.spec)
    if sizes["batch"] < 2:
        sizes["batch"] = 2
    row = draw_int(data, 0, sizes["batch"] - 1, "row")
    feed = subject.inputs(seed=draw_int(data, 0, 2**16, "seed"), **sizes)
    batched = runner.run(feed)
    alone = runner.run(subject.batch_slice(feed, row))
    verdict = fp32_check(combo, alone, subject.batch_slice(batched, row, outputs=True),
                         label=f"{combo.id} row {row} of {sizes}", feed=feed,
                         expected_as="the batched run's output")
    hold(verdict)
