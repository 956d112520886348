"""The GPU backends without a GPU: their precision -> configuration tables, optimisation
profiles, engine-cache keys, generated ids and skip reasons, and lazy imports."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from infergate.backends import all_backends
from infergate.backends.cuda import DeviceFeedCache
from infergate.backends.ort_gpu import (
    IOBINDING_ENV,
    cuda_provider_options,
    iobinding_mode,
    ort_trt_cache_key,
    trt_provider_options,
    trt_shape_option,
)
from infergate.backends.tensorrt_runner import (
    CONFIG_FLAGS,
    calibration_plan,
    create_config_kwargs,
    engine_key,
    profile_shapes,
)
from infergate.backends.torch_compile import DEVICE_ENV, compile_device
from infergate.matrix import Selection
from infergate.precision import PRECISIONS
from infergate.spec import Dim
from tests.conftest import make_tiny_spec

GPU_BACKENDS = ("torch_cuda", "ort_cuda", "ort_trt", "tensorrt")


def seq_inputs(batch, seed, seq):
    g = torch.Generator().manual_seed(seed)
    return {"ids": torch.randint(0, 100, (batch, seq), generator=g),
            "mask": torch.ones(batch, seq, dtype=torch.int64),
            "scale": torch.ones(1)}


def make_seq_spec():
    return make_tiny_spec(make_inputs=seq_inputs, dims={"batch": Dim(1, 8, 2),
                                                        "seq": Dim(4, 64, 16)},
                          dynamic_axes={"ids": {0: "batch", 1: "seq"},
                                        "mask": {0: "batch", 1: "seq"}})


@pytest.mark.parametrize("precision,flags", [
    ("fp32", {"tf32": False}),
    ("fp16", {"tf32": False, "fp16": True}),
    ("bf16", {"tf32": False, "bf16": True}),
    ("int8", {"tf32": False, "int8": True}),
    ("fp8", {"tf32": False, "fp8": True, "fp16": True}),
])
def test_tensorrt_create_config_kwargs(precision, flags):
    assert create_config_kwargs(precision) == flags


def test_tensorrt_precisions_are_infergate_ids_and_fp8_waits_for_one():
    backend = all_backends()["tensorrt"]
    assert set(backend.precisions) <= set(PRECISIONS)
    assert "fp8" in CONFIG_FLAGS and "fp8" not in backend.precisions


def test_profile_shapes_batch_only():
    shapes = profile_shapes(make_tiny_spec())  # batch Dim(1, 8, 3), x: (batch, 6)
    assert shapes == {"x": ((1, 6), (3, 6), (8, 6))}


def test_profile_shapes_batch_and_seq():
    shapes = profile_shapes(make_seq_spec())
    assert shapes["ids"] == ((1, 4), (2, 16), (8, 64))
    assert shapes["mask"] == shapes["ids"]
    assert shapes["scale"] == ((1,), (1,), (1,))  # static input: min = opt = max
    assert trt_shape_option(shapes, 0) == "ids:1x4,mask:1x4,scale:1"
    assert trt_shape_option(shapes, 2) == "ids:8x64,mask:8x64,scale:1"


def test_calibration_plan_takes_the_most_common_shape():
    a, b = np.zeros((8, 12)), np.zeros((8, 20))
    feeds = [{"ids": b}, {"ids": a}, {"ids": a}, {"ids": b}, {"ids": a}]
    shape, chosen = calibration_plan(feeds)
    assert shape == {"ids": (8, 12)} and len(chosen) == 3
    assert calibration_plan(feeds[:1])[0] == {"ids": (8, 20)}
    with pytest.raises(ValueError):
        calibration_plan([])


def test_tensorrt_engine_key_changes_with_what_built_it():
    shapes = profile_shapes(make_tiny_spec())
    base = dict(onnx_digest="abc", precision="fp16", trt_version="10.9.0", gpu="NVIDIA H100",
                profile=shapes)
    key = engine_key(**base)
    assert engine_key(**base) == key  # stable
    for change in ({"precision": "int8"}, {"trt_version": "10.10.0"},
                   {"gpu": "NVIDIA A100"}, {"onnx_digest": "abd"},
                   {"profile": profile_shapes(make_seq_spec())}):
        assert engine_key(**{**base, **change}) != key, change
    assert engine_key(**base, calibration="c1") != engine_key(**base, calibration="c2")


def test_ort_trt_cache_key_changes_with_what_built_it():
    base = dict(onnx_digest="abc", model="m1", precision="int8", ort_version="1.22.0",
                trt_version="10.9.0", gpu="NVIDIA H100", shapes=profile_shapes(make_tiny_spec()))
    key = ort_trt_cache_key(**base)
    assert ort_trt_cache_key(**base) == key
    for change in ({"precision": "fp16"}, {"trt_version": "10.8.0"}, {"gpu": "NVIDIA L4"},
                   {"onnx_digest": "abd"}, {"model": "m2"}, {"ort_version": "1.23.0"}):
        assert ort_trt_cache_key(**{**base, **change}) != key, change


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ort_cuda_provider_options_pin_tf32_and_the_arena(precision):
    options = cuda_provider_options(precision)
    assert options["use_tf32"] == 0
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["cudnn_conv_algo_search"] == "EXHAUSTIVE"


@pytest.mark.parametrize("precision,fp16,int8", [("fp16", True, False), ("int8", False, True)])
def test_ort_trt_provider_options(precision, fp16, int8, tmp_path):
    shapes = profile_shapes(make_seq_spec())
    options = trt_provider_options(precision, tmp_path, shapes)
    assert (options["trt_fp16_enable"], options["trt_int8_enable"]) == (fp16, int8)
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path)
    assert "trt_int8_calibration_table_name" not in options  # Q/DQ graphs carry their scales
    assert options["trt_profile_opt_shapes"] == "ids:2x16,mask:2x16,scale:1"


def test_iobinding_mode_from_the_environment(monkeypatch):
    monkeypatch.delenv(IOBINDING_ENV, raising=False)
    assert iobinding_mode() == "device"
    monkeypatch.setenv(IOBINDING_ENV, "host")
    assert iobinding_mode() == "host"
    monkeypatch.setenv(IOBINDING_ENV, "gpu")
    with pytest.raises(ValueError, match="device, host"):
        iobinding_mode()


def test_device_feed_cache_uploads_once_per_feed():
    uploads = []
    cache = DeviceFeedCache(lambda feed: uploads.append(dict(feed)) or len(uploads))
    feed = {"x": np.zeros(3)}
    assert cache.get(feed) == cache.get(feed) == 1
    assert cache.get({"x": np.zeros(3)}) == 2  # a new feed is uploaded again
    feed["x"] = np.ones(3)  # a replaced array too
    assert cache.get(feed) == 3


def test_torch_compile_device_choice(monkeypatch):
    backend = all_backends()["torch_compile"]
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert compile_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    assert backend.device == compile_device()
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert compile_device() == "cpu" and backend.unavailable_reason("fp32") is None
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    assert "not one of cpu, cuda" in backend.unavailable_reason("fp32")
    if not torch.cuda.is_available():
        monkeypatch.setenv(DEVICE_ENV, "cuda")
        assert "no CUDA device" in backend.unavailable_reason("fp32")


def test_gpu_combinations_are_generated_and_skip_with_a_reason():
    combos = {c.id: c for c in Selection.parse(None, None, None, "full").combinations()}
    for combo_id in ("mlp-tensorrt-int8", "minilm-ort_trt-fp16", "resnet50-torch_cuda-bf16",
                     "gpt2-ort_cuda-fp16", "digits_cnn-tensorrt-fp32"):
        assert combo_id in combos
    gpu = [c for c in combos.values() if c.backend.name in GPU_BACKENDS]
    assert {c.backend.device for c in gpu} == {"cuda"}
    if torch.cuda.is_available():
        return
    for combo in gpu:
        assert combo.skip and combo.skip.startswith(f"{combo.backend.name}: "), combo.id
        assert "CUDA" in combo.skip or "is not installed" in combo.skip, combo.skip


def test_importing_and_collecting_imports_no_gpu_framework():
    code = textwrap.dedent("""
        import sys
        from infergate.backends import all_backends
        from infergate.matrix import Selection
        Selection.parse(None, None, None, "full").combinations()
        for backend in all_backends().values():
            backend.unavailable_reason()
        print(sorted(m for m in ("tensorrt", "polygraphy", "onnxruntime", "pynvml")
                     if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
