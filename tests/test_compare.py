"""infergate.accuracy.compare against hand-computed cases, plus a few properties."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infergate.accuracy.compare import (
    OutputMetrics,
    ShapeMismatch,
    judge,
    metrics,
    task_verdict,
)
from infergate.accuracy.precision import DEFAULT_TOLERANCES, Tolerance

FP32 = DEFAULT_TOLERANCES["fp32"]


def _dumps(obj) -> str:
    # allow_nan=False: the report must be strict JSON, not Python's Infinity/NaN extension.
    return json.dumps(obj, allow_nan=False)


# ------------------------------------------------------------------ metrics, by hand

def test_metrics_hand_computed():
    m = metrics(np.array([1, 2, 3], np.float32), np.array([1, 2, 4], np.float32), name="y")
    assert m.name == "y" and m.shape == (3,)
    assert m.max_abs == 1.0
    assert m.rmse == pytest.approx(math.sqrt(1 / 3), rel=1e-12)
    # dot = 1 + 4 + 12 = 17; |a|^2 = 14; |b|^2 = 21
    assert m.cosine == pytest.approx(17 / math.sqrt(14 * 21), rel=1e-12)
    assert m.sqnr_db == pytest.approx(10 * math.log10(21 / 1), rel=1e-12)
    # eps = 1e-6 * max|b| = 4e-6; the only error is at b=4
    assert m.max_rel == pytest.approx(1 / (4 + 4e-6), rel=1e-12)
    assert m.top1 is None and m.allclose_violations is None
    assert (m.nan_count, m.inf_count, m.expected_nonfinite) == (0, 0, 0)


def test_max_rel_eps_keeps_zeros_from_exploding():
    m = metrics([0.0, 1e-9, 10.0], [0.0, 0.0, 10.0])
    # eps = 1e-5, so 1e-9 off a zero reference is 1e-4 relative, not infinite
    assert m.max_rel == pytest.approx(1e-9 / 1e-5)


def test_top1_two_rows_one_disagreement():
    actual = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]])
    expected = np.array([[0.0, 5.0, 1.0], [0.0, 1.0, 2.0]])
    assert metrics(actual, expected, logits=True).top1 == 0.5
    assert metrics(actual, expected).top1 is None


def test_top1_uses_last_axis_over_all_leading_axes():
    expected = np.zeros((2, 3, 4))
    expected[..., 1] = 1.0
    actual = expected.copy()
    actual[1, 2, 3] = 5.0  # one row of six flips
    assert metrics(actual, expected, logits=True).top1 == pytest.approx(5 / 6)


def test_cosine_zero_conventions():
    assert metrics([0.0, 0.0], [0.0, 0.0]).cosine == 1.0
    assert metrics([0.0, 0.0], [1.0, 0.0]).cosine == 0.0
    assert metrics([1.0, 0.0], [0.0, 0.0]).cosine == 0.0


def test_identical_and_zero_reference_sqnr():
    x = np.array([1.0, -2.0, 3.0])
    assert metrics(x, x).sqnr_db == math.inf
    assert metrics([0.0, 0.0], [0.0, 0.0]).sqnr_db == math.inf
    assert metrics([1.0, 0.0], [0.0, 0.0]).sqnr_db == -math.inf
    assert metrics([1.0, 0.0], [0.0, 0.0]).max_rel == math.inf


def test_allclose_violations_count():
    # |a-b| <= 0.1 + 0.1*|b|: element 0 is within (0.15 <= 0.2), element 1 is not
    m = metrics([1.15, 2.5, 3.0], [1.0, 2.0, 3.0], atol=0.1, rtol=0.1)
    assert m.allclose_violations == 1
    assert metrics([1.0], [1.0], rtol=0.0).allclose_violations == 0


def test_nonfinite_counted_and_excluded_from_float_metrics():
    actual = np.array([np.nan, np.inf, -np.inf, 2.0])
    expected = np.array([1.0, 1.0, np.nan, 2.0])
    m = metrics(actual, expected)
    assert (m.nan_count, m.inf_count, m.expected_nonfinite) == (1, 2, 1)
    assert m.max_abs == 0.0 and m.cosine == 1.0  # only the last element is comparable


def test_float16_input_is_computed_in_float64():
    a = np.array([1.0, 2.0], np.float16)
    b = np.array([1.0, 2.0009765625], np.float64)  # not representable in fp16
    assert metrics(a, b).max_abs == pytest.approx(0.0009765625, rel=1e-12)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ShapeMismatch, match=r"\(2, 3\).*\(3, 2\)"):
        metrics(np.zeros((2, 3)), np.zeros((3, 2)), name="z")


def test_output_metrics_as_dict():
    m = metrics([1.0, 2.0], [1.0, 2.0], logits=True, atol=1e-3)
    d = m.as_dict()
    assert tuple(d) == OutputMetrics.fields
    assert d["sqnr_db"] == "inf" and d["shape"] == [2]
    _dumps(d)


# ------------------------------------------------------------------ judge

def test_identical_outputs_pass():
    x = {"y": np.arange(6, dtype=np.float32).reshape(2, 3)}
    v = judge(x, x, FP32, label="m-b-fp32", logits=("y",))
    assert v, str(v)
    assert v.status == "pass" and v.failures == [] and v.worst == "y"
    assert v.outputs["y"].sqnr_db == math.inf
    assert v.as_dict()["outputs"]["y"]["sqnr_db"] == "inf"


def test_perturbed_output_fails_naming_output_and_tolerance():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 32))
    expected = {"hidden": ref, "pooled": ref[:, 0]}
    actual = {"hidden": ref + 0.2 * rng.normal(size=ref.shape), "pooled": ref[:, 0]}
    v = judge(actual, expected, Tolerance(min_cosine=0.999, min_sqnr_db=30.0),
              label="minilm-ort_cpu-int8")
    assert not v and v.status == "fail"
    msg = str(v)
    headline = msg.splitlines()[0]
    assert "minilm-ort_cpu-int8" in headline and "'hidden'" in headline
    assert "min_cosine 0.999" in msg and "min_sqnr_db 30" in msg
    for key in ("max_abs", "max_rel", "rmse", "cosine", "sqnr", "top1"):
        assert key in msg
    assert v.worst == "hidden"
    assert any(f.startswith("hidden: cosine") for f in v.failures)
    assert not any(f.startswith("pooled") for f in v.failures)


def test_worst_is_lowest_cosine_failing_output():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=256)
    expected = {"a": ref, "b": ref, "c": ref}
    actual = {"a": ref + 0.1 * rng.normal(size=256), "b": ref + 0.5 * rng.normal(size=256),
              "c": ref}
    v = judge(actual, expected, Tolerance(min_cosine=0.9999), label="m")
    assert v.worst == "b"
    assert "also failing: a:" in str(v)


def test_allclose_failure_reports_count_and_errors():
    v = judge({"y": np.array([1.0, 2.0, 3.5])}, {"y": np.array([1.0, 2.0, 3.0])}, FP32,
              label="m-b-fp32")
    assert "1 of 3 elements violate" in str(v)
    assert "max_abs 0.5" in str(v)
    assert "atol=0.0001" in str(v)


def test_cosine_near_one_printed_with_enough_digits():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=4096)
    actual = ref + 0.005 * rng.normal(size=4096)  # cosine ~ 0.9999875
    v = judge({"y": actual}, {"y": ref}, Tolerance(min_cosine=0.99999), label="m")
    assert not v
    assert "cosine 0.99998" in str(v) and "cosine 1 " not in str(v)


def test_top1_checked_only_for_logits():
    actual = {"y": np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0]])}
    expected = {"y": np.array([[0.0, 5.0, 1.0], [0.0, 1.0, 2.0]])}
    tol = Tolerance(min_top1=0.9)
    assert judge(actual, expected, tol, label="m")
    v = judge(actual, expected, tol, label="m", logits=("y",))
    assert not v and "top1 0.5 < min_top1 0.9" in str(v)


def test_nan_is_its_own_verdict():
    expected = {"token_states": np.ones((2, 4, 8), np.float32)}
    bad = expected["token_states"].copy()
    bad.flat[:12] = np.nan
    v = judge({"token_states": bad}, expected, DEFAULT_TOLERANCES["fp16"],
              label="minilm-ort_cpu-fp16")
    assert not v and v.status == "nonfinite"
    assert str(v).splitlines()[0] == (
        "minilm-ort_cpu-fp16: output 'token_states' has 12 NaN and 0 Inf values (of 64)")
    assert v.outputs["token_states"].nan_count == 12
    _dumps(v.as_dict())


def test_nonfinite_reference_fails():
    expected = {"y": np.array([1.0, np.nan])}
    v = judge({"y": np.array([1.0, 2.0])}, expected, FP32, label="m")
    assert v.status == "fail" and "reference output 'y' has 1 NaN/Inf" in str(v)


def test_missing_and_extra_outputs_fail():
    expected = {"a": np.zeros(2), "b": np.zeros(2)}
    v = judge({"a": np.zeros(2), "c": np.zeros(2)}, expected, FP32, label="m")
    assert not v and v.status == "fail"
    assert "missing 'b'" in str(v) and "extra 'c'" in str(v)
    assert "a" in v.outputs  # the outputs that do match are still measured


def test_shape_mismatch_fails():
    v = judge({"y": np.zeros((2, 3))}, {"y": np.zeros((2, 4))}, FP32, label="m")
    assert not v and v.status == "fail"
    assert "shape mismatch" in str(v) and "(2, 3)" in str(v) and "(2, 4)" in str(v)
    assert v.worst == "y"


def test_override_reasons_in_message():
    v = judge({"y": np.array([1.0, 0.0])}, {"y": np.array([0.0, 1.0])},
              Tolerance(min_cosine=0.98), label="minilm-ort_cpu-int8",
              reasons=["int8 random-init weights quantize coarsely"])
    assert "(tolerance override: int8 random-init weights quantize coarsely)" in str(v)
    assert v.as_dict()["reasons"] == ["int8 random-init weights quantize coarsely"]


def test_unknown_logits_name_is_a_harness_error():
    with pytest.raises(ValueError, match="logits"):
        judge({"y": np.zeros(2)}, {"y": np.zeros(2)}, FP32, label="m", logits=("z",))


def test_as_dict_is_strict_json():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(3, 5))
    bad = ref.copy()
    bad[0, 0] = np.inf
    v = judge({"y": bad}, {"y": ref}, FP32, label="m", logits=("y",), reasons=["r"])
    d = json.loads(_dumps(v.as_dict()))
    assert d["status"] == "nonfinite" and d["passed"] is False
    assert d["tolerance"]["min_cosine"] == 0.99999 and d["tolerance"]["max_mismatch"] is None
    assert d["no_worse"]["note"].startswith("not applicable")


# ------------------------------------------------------------------ no worse than PyTorch

NO_WORSE = Tolerance(no_worse_factor=3.0)


def _no_worse_case(torch_err: float, backend_err: float):
    rng = np.random.default_rng(3)
    fp64 = rng.normal(size=1000)
    noise = rng.normal(size=1000)
    noise /= np.sqrt(np.mean(noise**2))  # unit RMS, so RMSE == the scale factor
    torch16 = fp64 + torch_err * noise
    backend = fp64 + backend_err * noise
    return judge({"y": backend}, {"y": fp64.astype(np.float32)}, NO_WORSE, label="m-b-fp16",
                 fp64={"y": fp64}, torch_same_precision={"y": torch16}, precision="fp16")


def test_no_worse_passes_at_twice_torch_error():
    v = _no_worse_case(1e-3, 2e-3)
    assert v, str(v)
    nw = v.no_worse["y"]
    assert nw.ratio == pytest.approx(2.0) and nw.passed
    assert v.as_dict()["no_worse"]["outputs"]["y"]["ratio"] == pytest.approx(2.0)


def test_no_worse_fails_at_four_times_torch_error():
    v = _no_worse_case(1e-3, 4e-3)
    assert not v and v.status == "fail"
    assert "4x PyTorch fp16's 0.001 (allowed 3x)" in str(v)
    assert "RMSE vs fp64 0.004" in str(v)


def test_no_worse_floor_when_torch_is_exact():
    assert _no_worse_case(0.0, 1e-9)  # under the 1e-7 * RMS floor
    v = _no_worse_case(0.0, 1e-5)
    assert not v and "matches fp64 exactly" in str(v)


def test_no_worse_not_applicable_without_references():
    ref = {"y": np.ones(4)}
    v = judge(ref, ref, NO_WORSE, label="m", fp64=ref)
    assert v and v.no_worse == {}
    note = v.as_dict()["no_worse"]["note"]
    assert note.startswith("not applicable") and "PyTorch same-precision" in note
    v = judge(ref, ref, Tolerance(), label="m", fp64=ref, torch_same_precision=ref)
    assert v.as_dict()["no_worse"] == {
        "applied": False, "note": "not applicable: tolerance has no no_worse_factor",
        "outputs": {}}


# ------------------------------------------------------------------ fp32 against fp64

def _fp32_case(change):
    """A (4, 384) output: fp64 truth, PyTorch fp32 = truth rounded to float32 plus the
    accumulation error a real fp32 run shows (~1e-7 relative), and a backend ``change(y)``."""
    rng = np.random.default_rng(7)
    fp64 = rng.normal(size=(4, 384))
    torch32 = (fp64 * (1 + 1e-7 * rng.normal(size=fp64.shape))).astype(np.float32)
    backend = change(fp64 * (1 + 1e-7 * rng.normal(size=fp64.shape))).astype(np.float32)
    return judge({"y": backend}, {"y": torch32}, FP32, label="m-b-fp32", fp64={"y": fp64},
                 torch_same_precision={"y": torch32}, precision="fp32")


def test_fp32_clean_backend_passes_against_fp64():
    v = _fp32_case(lambda y: y)
    assert v, str(v)
    assert v.no_worse["y"].ratio == pytest.approx(1.0, abs=0.5)


def test_fp32_uniform_scale_of_one_in_a_thousand_fails():
    v = _fp32_case(lambda y: y * 1.001)
    assert not v
    # Both the fp64 check and the SQNR floor see what allclose and cosine let through.
    assert not any("allclose" in f or "cosine" in f for f in v.failures)
    assert "x PyTorch fp32's" in str(v) and "(allowed 10x)" in str(v)
    assert "< min_sqnr_db 80" in str(v)


def test_fp32_one_channel_off_by_one_in_a_thousand_fails():
    def one_channel(y):
        y = y.copy()
        y[:, 5] *= 1.001
        return y
    v = _fp32_case(one_channel)
    assert not v
    assert v.no_worse["y"].ratio > 10 and "x PyTorch fp32's" in str(v)


# ------------------------------------------------------------------ integer outputs

def test_integer_output_compared_exactly_beside_a_float_one():
    ref = {"label": np.array([[3, 1, 4, 1]], np.int64), "score": np.ones((1, 4), np.float32)}
    got = {"label": np.array([[3, 1, 5, 1]], np.int32), "score": np.ones((1, 4), np.float32)}
    v = judge(got, ref, FP32, label="m-b-fp32")
    assert not v and v.worst == "label"
    assert "1 of 4 elements differ (allowed 0); first at index (0, 2): 5 vs 4" in str(v)
    d = v.as_dict()["outputs"]
    assert d["label"]["exact"] and "cosine" not in d["label"]  # no float metric on labels
    assert d["score"]["cosine"] == 1.0
    assert judge(ref, ref, FP32, label="m"), "equal labels pass"


def test_integer_mismatch_fraction_override():
    ref = {"label": np.arange(100)}
    got = {"label": np.where(np.arange(100) < 2, -1, np.arange(100))}
    assert judge(got, ref, Tolerance(max_mismatch=0.02), label="m")
    assert not judge(got, ref, Tolerance(max_mismatch=0.01), label="m")


def test_integer_output_of_another_kind_fails():
    ref = {"mask": np.array([True, False])}
    v = judge({"mask": np.array([1.0, 0.0], np.float32)}, ref, FP32, label="m")
    assert not v and "dtype float32 where PyTorch gives bool" in str(v)
    # int32 for int64 is the same output (OpenVINO narrows indices).
    assert judge({"i": np.array([1], np.int32)}, {"i": np.array([1])}, FP32, label="m")


def test_logits_naming_an_integer_output_is_a_harness_error():
    with pytest.raises(ValueError, match="not floating point: 'label' \\(int64\\)"):
        judge({"label": np.array([1])}, {"label": np.array([1])}, FP32, label="m",
              logits=("label",))


# ------------------------------------------------------------------ task verdict

def test_task_verdict():
    v = task_verdict(0.962, "accuracy 0.93 vs fp32 0.97", 0.99, label="digits_cnn-ort_cpu-int8",
                     description="held-out digit accuracy")
    assert not v and v.status == "fail"
    assert str(v) == ("digits_cnn-ort_cpu-int8: task 'held-out digit accuracy' score 0.962 "
                      "< 0.99 (accuracy 0.93 vs fp32 0.97)")
    assert task_verdict(0.99, "", 0.99, label="m", description="d")
    nan = task_verdict(float("nan"), "", 0.5, label="m", description="d")
    assert not nan and nan.status == "nonfinite"
    _dumps(nan.as_dict())


# ------------------------------------------------------------------ properties

finite_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    elements=st.floats(-1e4, 1e4, width=16),
)


@settings(max_examples=60, deadline=None)
@given(finite_arrays)
def test_identical_always_passes(a):
    tol = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0, min_sqnr_db=1e9, min_top1=1.0)
    v = judge({"y": a}, {"y": a.copy()}, tol, label="m", logits=("y",))
    assert v, str(v)
    _dumps(v.as_dict())


@settings(max_examples=60, deadline=None)
@given(finite_arrays, st.data())
def test_cosine_bounded_and_sign_aware(a, data):
    b = data.draw(hnp.arrays(np.float64, a.shape, elements=st.floats(-1e4, 1e4)))
    m = metrics(a, b)
    assert -1.0 <= m.cosine <= 1.0
    if np.any(a != 0):
        assert metrics(-a, a).cosine == pytest.approx(-1.0)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, 32, elements=st.floats(-10, 10)),
       hnp.arrays(np.float64, 32, elements=st.floats(-1, 1)))
def test_sqnr_falls_and_rmse_grows_with_noise(signal, noise):
    if np.sum(noise**2) < 1e-3 or np.sum(signal**2) == 0:
        return
    scales = [1e-3, 1e-2, 1e-1, 1.0]
    ms = [metrics(signal + s * noise, signal) for s in scales]
    sqnrs = [m.sqnr_db for m in ms]
    rmses = [m.rmse for m in ms]
    assert sqnrs == sorted(sqnrs, reverse=True)
    assert rmses == sorted(rmses)


def _classifier_logits():
    """4 rows x 10 classes; row 2 is a near-tie in the reference (gap 0.02)."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (4, 10))
    for row, winner in enumerate((3, 7, 1, 5)):
        ref[row, winner] = 6.0
    ref[2, 4] = 5.98
    return ref


def test_a_near_tie_row_that_flips_does_not_count_against_top1():
    ref = _classifier_logits()
    noisy = ref + np.random.default_rng(1).normal(0, 0.02, ref.shape)  # int8-sized error
    noisy[2, 4], noisy[2, 1] = 6.0, 5.97  # the near-tie flips
    m = metrics(noisy, ref, logits=True)
    assert m.top1 == 1.0 and m.near_ties == 1
    assert "1 near-tie row not counted" in m.summary()


def test_a_confident_row_that_flips_still_counts():
    ref = _classifier_logits()
    noisy = ref + np.random.default_rng(1).normal(0, 0.02, ref.shape)
    noisy[0, 3], noisy[0, 8] = 1.0, 6.5  # row 0's clear winner lost: a real defect
    m = metrics(noisy, ref, logits=True)
    assert m.top1 == pytest.approx(2 / 3) and m.near_ties == 1  # row 2 stays a near-tie
    verdict = judge({"logits": noisy}, {"logits": ref}, Tolerance(min_top1=0.8),
                    logits=("logits",), label="x")
    assert not verdict and "top1 0.6667" in str(verdict)
