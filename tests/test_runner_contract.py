"""One contract, checked the same way against every backend available here."""

import json

import numpy as np
import pytest

from infergate.accuracy.compare import ExactMetrics
from infergate.accuracy.reference import Reference
from infergate.backends import Backend, RunnerError, all_backends
from infergate.build.subject import ModelUnderTest
from infergate.environment import cpu_flags
from tests.conftest import build_dict_tiny, build_labelled_tiny, make_tiny_spec

CASES = [(b, p) for b in all_backends().values() for p in b.precisions]


@pytest.fixture(scope="module")
def subject(tiny_spec, store):
    return ModelUnderTest(tiny_spec, store)


FLOORED = [(b, p) for b, p in CASES if b.device == "cpu" and b.name in ("ort_cpu", "openvino")]


@pytest.mark.parametrize("backend,precision", FLOORED, ids=[f"{b.name}-{p}" for b, p in FLOORED])
def test_a_floor_runner_runs_the_warm_up_graph_on_the_backend_s_own_call_path(backend,
                                                                            precision, subject):
    """What the instruction gate counts as the runtime's fixed cost of a call
    (``Backend.floor_runner``): the tiny graph, run the way the model's runner runs."""
    from infergate.backends.warmup import FEATURES, OUTPUT, tiny_feed

    reason = backend.unavailable_reason(precision)
    if reason:
        pytest.skip(reason)
    runner = backend.floor_runner(precision, subject.store.root)
    runner.threads = 1
    with runner:
        outputs = runner.run(tiny_feed())
    assert outputs[OUTPUT].shape == (2, FEATURES) and (outputs[OUTPUT] >= 0).all()  # a Relu
    assert type(runner) is type(backend.prepare(subject, precision))  # the model's own path


@pytest.mark.parametrize("backend,precision", CASES,
                         ids=[f"{b.name}-{p}" for b, p in CASES])
def test_runner_contract(backend, precision, subject):
    reason = backend.unavailable_reason(precision)
    if reason:
        pytest.skip(reason)
    runner = backend.prepare(subject, precision)
    feed = subject.inputs(seed=1, batch=3)
    with pytest.raises(RunnerError, match="before activate"):
        runner.run(feed)
    with runner:
        with pytest.raises(RunnerError, match="twice"):
            runner.activate()
        outputs = runner.run(feed)
        assert list(outputs) == list(subject.spec.outputs)
        assert outputs["logits"].shape == (3, 3)
        assert outputs["energy"].shape == (3, 1)
        for value in outputs.values():
            assert value.dtype == np.float32
            assert np.isfinite(value).all()
        # A second batch size through the same runner: dynamic batch is part of the contract.
        assert runner.run(subject.inputs(seed=2, batch=5))["logits"].shape == (5, 3)
        assert isinstance(runner.settings, dict)
        stats = runner.memory_stats()
        assert all(isinstance(v, float) for v in stats.values()), stats
        if backend.device == "cpu":
            assert stats == {}
    assert not runner.is_active
    with pytest.raises(RunnerError):
        runner.run(feed)


@pytest.mark.parametrize("backend,precision", CASES,
                         ids=[f"{b.name}-{p}" for b, p in CASES])
def test_runtime_initialises_apart_from_any_model(backend, precision, subject):
    """``initialise_runtime`` (what the memory probe charges to the runtime, not the model)
    runs its trivial workload at the precision, says what it ran, and leaves the runtime
    ready for a model's runner."""
    reason = backend.unavailable_reason(precision)
    if reason:
        pytest.skip(reason)
    done = backend.initialise_runtime(precision, threads=1, cache_dir=subject.store.root)
    json.dumps(done)  # recorded in the probe's reply
    assert done.get("workload") or type(backend).initialise_runtime is Backend.initialise_runtime
    with backend.prepare(subject, precision) as runner:
        assert runner.run(subject.inputs(seed=1, batch=2))["logits"].shape == (2, 3)


FP32_CPU = [b for b in all_backends().values() if b.device == "cpu" and "fp32" in b.precisions]


# torch_export compiles a C++ package per model (~25 s each on 2 cores): its output path is
# checked by the contract and the dict test; integers take the same path.
EXACT_CASES = [b for b in FP32_CPU if b.name != "torch_export"]


@pytest.mark.parametrize("backend", EXACT_CASES, ids=[b.name for b in EXACT_CASES])
def test_integer_outputs_keep_their_dtype_and_are_judged_exactly(backend, store):
    if backend.unavailable_reason("fp32"):
        pytest.skip(backend.unavailable_reason("fp32"))
    spec = make_tiny_spec(name="labelled_tiny", build=build_labelled_tiny,
                          outputs=("logits", "label"))
    subject = ModelUnderTest(spec, store)
    reference = Reference(subject)
    with backend.prepare(subject, "fp32") as runner:
        outputs = runner.run(reference.feed)
    assert outputs["logits"].dtype == np.float32 and outputs["label"].dtype.kind == "i"
    label = f"labelled_tiny-{backend.name}-fp32"
    verdict = reference.judge(outputs, backend.name, "fp32", label=label)
    assert verdict, str(verdict)
    assert isinstance(verdict.outputs["label"], ExactMetrics)
    assert verdict.outputs["label"].mismatches == 0

    outputs["label"][1] = (outputs["label"][1] + 1) % 3
    verdict = reference.judge(outputs, backend.name, "fp32", label=label)
    assert not verdict and verdict.worst == "label"
    assert "first at index (1,)" in str(verdict)


@pytest.mark.parametrize("backend", FP32_CPU, ids=[b.name for b in FP32_CPU])
def test_a_model_returning_a_dict_is_taken_by_name(backend, store, subject):
    """Its keys come in another order than the spec's outputs; every backend (the ONNX export
    included) must still give each name its own tensor: the same as the tuple twin's."""
    if backend.unavailable_reason("fp32"):
        pytest.skip(backend.unavailable_reason("fp32"))
    spec = make_tiny_spec(name="dict_tiny", build=build_dict_tiny)
    feed = subject.inputs(seed=1, batch=3)
    with backend.prepare(ModelUnderTest(spec, store), "fp32") as runner:
        got = runner.run(feed)
    with all_backends()["torch"].prepare(subject, "fp32") as runner:
        want = runner.run(feed)
    assert list(got) == ["logits", "energy"]
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_initialising_the_runtime_is_optional():
    class Bare(Backend):
        name = "bare"

    assert Bare().initialise_runtime("fp32", threads=1) == {}


def test_backend_ids_are_the_documented_ones():
    assert list(all_backends()) == ["torch", "torch_compile", "ort_cpu", "openvino",
                                    "torch_jit", "torch_export", "torch_cuda", "ort_cuda",
                                    "ort_trt", "tensorrt"]


def test_unavailable_backend_reports_why(monkeypatch):
    backend = all_backends()["ort_cpu"]
    monkeypatch.setattr(type(backend), "requires", ("no_such_module_xyz",))
    assert "no_such_module_xyz" in backend.unavailable_reason()


@pytest.mark.parametrize("precision,hint", [("fp32", "f32"), ("bf16", "bf16")])
def test_openvino_pins_and_records_its_precision(precision, hint, subject):
    # On avx512_bf16/AMX CPUs the plugin runs bf16 unless told otherwise (measured here:
    # ResNet-50 logits max error 0.37 vs 5.6e-5 pinned), so the effective hint is recorded.
    backend = all_backends()["openvino"]
    if backend.unavailable_reason(precision):
        pytest.skip(backend.unavailable_reason(precision))
    with backend.prepare(subject, precision) as runner:
        assert runner.settings["INFERENCE_PRECISION_HINT"] == hint
        if precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & cpu_flags():
            pytest.skip("this CPU has no bf16: OpenVINO falls back to f32")
        assert runner.settings["INFERENCE_PRECISION_HINT(effective)"] == hint
