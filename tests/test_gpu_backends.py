"""The GPU backends without a GPU: their precision -> configuration tables, optimisation
profiles, engine-cache keys, generated ids and skip reasons, and lazy imports."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from infergate.accuracy.precision import PRECISIONS
from infergate.backends import Runner, all_backends
from infergate.backends.cuda import DeviceFeedCache
from infergate.backends.gpu_memory import MB, nvml_process_mb, torch_cuda_mb, trt_engine_mb
from infergate.backends.ort_gpu import (
    IOBINDING_ENV,
    cuda_provider_options,
    iobinding_mode,
    ort_trt_cache_key,
    trt_provider_options,
    trt_shape_option,
)
from infergate.backends.tensorrt_runner import (
    create_config_kwargs,
    engine_key,
    profile_shapes,
)
from infergate.backends.torch_compile import DEVICE_ENV, compile_device
from infergate.matrix import Selection
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


def test_tensorrt_precisions_are_infergate_ids_fp8_included():
    backend = all_backends()["tensorrt"]
    assert set(backend.precisions) <= set(PRECISIONS)
    assert "fp8" in backend.precisions
    # fp8 is TensorRT's alone: no other backend claims what it cannot run.
    assert [b.name for b in all_backends().values() if "fp8" in b.precisions] == ["tensorrt"]


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
    # a Q/DQ graph quantized otherwise (another calibration, another scheme) is another engine
    assert engine_key(**base, graph="qdq1") != engine_key(**base, graph="qdq2")


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


def test_a_runner_reports_no_allocator_figures_by_default():
    assert Runner("tiny-cpu-fp32", ("y",)).memory_stats() == {}


def test_torch_cuda_figures_in_mb(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * MB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 8 * MB + MB // 2)
    assert torch_cuda_mb() == {"cuda_max_allocated_mb": 3.0, "cuda_max_reserved_mb": 8.5}


def test_torch_cuda_figures_are_empty_when_torch_cannot_read_them(monkeypatch):
    def no_cuda(device=None):
        raise RuntimeError("no CUDA")

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", no_cuda)
    assert torch_cuda_mb() == {}


def fake_nvml(*devices, fail=None):
    """A pynvml stand-in: ``devices`` are lists of (pid, bytes); ``fail`` names a call
    that raises."""
    calls = []

    def call(name, result=None):
        def f(*args):
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} failed")
            return result(*args) if callable(result) else result
        return f

    module = SimpleNamespace(
        nvmlInit=call("nvmlInit"), nvmlShutdown=call("nvmlShutdown"),
        nvmlDeviceGetCount=call("nvmlDeviceGetCount", len(devices)),
        nvmlDeviceGetHandleByIndex=call("nvmlDeviceGetHandleByIndex", lambda i: i),
        nvmlDeviceGetComputeRunningProcesses=call(
            "nvmlDeviceGetComputeRunningProcesses",
            lambda i: [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in devices[i]]))
    return module, calls


def test_nvml_reports_this_process_only(monkeypatch):
    me = os.getpid()
    nvml, calls = fake_nvml([(me + 1, 900 * MB), (me, 64 * MB)], [(me, None)], [(me, 16 * MB)])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert nvml_process_mb() == {"nvml_process_used_mb": 80.0}
    assert calls[-1] == "nvmlShutdown"


def test_nvml_figures_are_empty_when_unavailable(monkeypatch):
    me = os.getpid()
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed: import raises
    assert nvml_process_mb() == {}
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([(me + 1, MB)])[0])
    assert nvml_process_mb() == {}  # this pid not listed (another pid namespace)
    for fail in ("nvmlInit", "nvmlDeviceGetComputeRunningProcesses"):
        nvml, calls = fake_nvml([(me, MB)], fail=fail)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        assert nvml_process_mb() == {}, fail
        assert ("nvmlShutdown" in calls) == (fail != "nvmlInit"), fail


def test_tensorrt_device_memory_prefers_the_v2_figure():
    both = SimpleNamespace(device_memory_size_v2=48 * MB, device_memory_size=64 * MB)
    assert trt_engine_mb(both) == {"trt_device_memory_mb": 48.0}
    assert trt_engine_mb(SimpleNamespace(device_memory_size=64 * MB)) == {
        "trt_device_memory_mb": 64.0}
    assert trt_engine_mb(None) == {}  # runner not active: no engine
