"""Do dynamic shapes hold? Hypothesis draws shapes inside each model's declared ranges."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infergate.compare import judge
from infergate.precision import tolerance_for

# Cap draws so one example stays well under a second on 2 cores.
MAX_DRAW = {"batch": 8, "seq": 64}


def draw_sizes(data, spec) -> dict[str, int]:
    return {name: data.draw(st.integers(dim.min, min(dim.max, MAX_DRAW.get(name, dim.max))),
                            label=name)
            for name, dim in spec.dims.items()}


def fp32_check(combo, actual, expected, label):
    tolerance, reasons = tolerance_for(combo.spec.tolerances, combo.backend.name, "fp32")
    return judge(actual, expected, tolerance, label=label, logits=combo.spec.logits,
                 reasons=reasons)


ON_ORT_FP32 = pytest.mark.matrix(backends=("ort_cpu",), precisions=("fp32",))


@ON_ORT_FP32
@given(data=st.data())
def test_dynamic_shapes_match_pytorch(combo, runner, subject, reference, data):
    sizes = draw_sizes(data, combo.spec)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    feed = subject.inputs(seed=seed, **sizes)
    verdict = fp32_check(combo, runner.run(feed), reference.eager(feed),
                         label=f"{combo.id} {sizes} seed={seed}")
    assert verdict, str(verdict)


@ON_ORT_FP32
@given(data=st.data())
def test_batch_invariance(combo, runner, subject, data):
    sizes = draw_sizes(data, combo.spec)
    if sizes["batch"] < 2:
        sizes["batch"] = 2
    row = data.draw(st.integers(0, sizes["batch"] - 1), label="row")
    feed = subject.inputs(seed=data.draw(st.integers(0, 2**16), label="seed"), **sizes)
    batched = runner.run(feed)
    alone = runner.run(subject.batch_slice(feed, row))
    verdict = fp32_check(combo, alone, subject.batch_slice(batched, row, outputs=True),
                         label=f"{combo.id} row {row} of {sizes}")
    assert verdict, str(verdict)
