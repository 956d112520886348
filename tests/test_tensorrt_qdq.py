"""TensorRT int8/fp8 by explicit quantization, without TensorRT: the engine is configured from a
Q/DQ graph (fake Polygraphy loaders record the calls), no calibrator at any precision, the
graphs themselves are what TensorRT takes (ONNX Runtime's quantizer runs here), and fp8 skips
with a reason below Ada/Hopper."""

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, numpy_helper

from infergate.backends import all_backends
from infergate.backends import tensorrt_runner as trt_runner
from infergate.backends.cuda import CudaBackend
from infergate.build.onnx_transforms import (
    qdq_int8_symmetric_onnx,
    static_fp8_onnx,
    static_int8_onnx,
)
from infergate.build.subject import ModelUnderTest


@pytest.fixture
def polygraphy(monkeypatch):
    """``polygraphy.backend.trt`` stand-ins that record what they were built with."""
    built = SimpleNamespace(profiles=[], configs=[], networks=[])

    class Profile(dict):
        def add(self, name, min, opt, max):
            self[name] = (min, opt, max)
            return self

    def CreateConfig(**kwargs):
        built.configs.append(kwargs)
        return ("config", kwargs)

    def NetworkFromOnnxPath(path):
        built.networks.append(path)
        return ("network", path)

    def EngineBytesFromNetwork(network, config):
        return lambda: b"engine:" + network[1].encode()

    module = ModuleType("polygraphy.backend.trt")
    module.Profile, module.CreateConfig = Profile, CreateConfig
    module.NetworkFromOnnxPath, module.EngineBytesFromNetwork = (NetworkFromOnnxPath,
                                                                 EngineBytesFromNetwork)
    for name in ("polygraphy", "polygraphy.backend"):
        monkeypatch.setitem(sys.modules, name, ModuleType(name))
    monkeypatch.setitem(sys.modules, "polygraphy.backend.trt", module)
    return built


SHAPES = {"x": ((1, 6), (3, 6), (8, 6))}


@pytest.mark.parametrize("precision,flags", [
    ("int8", {"tf32": False, "int8": True}),
    ("fp8", {"tf32": False, "fp8": True, "fp16": True}),
    ("fp16", {"tf32": False, "fp16": True}),
])
def test_engine_is_configured_without_a_calibrator(polygraphy, tmp_path, precision, flags):
    graph = tmp_path / "qdq" / "model.onnx"
    trt_runner.build_engine(graph, precision, SHAPES, tmp_path / "model.engine")
    (config,) = polygraphy.configs
    profiles = config.pop("profiles")
    assert config == flags  # tf32 pinned off, the precision's flags, no calibrator
    assert profiles == [{"x": SHAPES["x"]}]  # one profile: the spec's range
    assert polygraphy.networks == [str(graph)]
    assert (tmp_path / "model.engine").read_bytes() == f"engine:{graph}".encode()


class FakeStore:
    def __init__(self, root):
        self.root, self.keys = Path(root), []

    def get(self, kind, key, build, describe):
        self.keys.append((kind, key))
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        return folder


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_tensorrt_prepare_builds_from_the_qdq_graph(polygraphy, monkeypatch, tmp_path,
                                                    tiny_spec, precision):
    qdq = tmp_path / f"onnx_{precision}" / "abc123" / "model.onnx"
    monkeypatch.setitem(trt_runner.ONNX_FOR_PRECISION, precision, lambda subject: qdq)
    monkeypatch.setattr(trt_runner, "gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    subject = SimpleNamespace(spec=tiny_spec, onnx_key={"k": 1}, store=FakeStore(tmp_path))
    runner = all_backends()["tensorrt"].prepare(subject, precision)
    (kind, key), = subject.store.keys
    assert kind == "tensorrt" and key["graph"] == "abc123" and key["precision"] == precision
    assert polygraphy.networks == [str(qdq)]
    assert "calibrator" not in polygraphy.configs[0]
    assert runner.settings["quantization"] == f"explicit: Q/DQ graph {qdq} (no calibrator)"
    assert "calibration" not in runner.settings


def test_tensorrt_reads_the_graph_each_precision_needs():
    table = trt_runner.ONNX_FOR_PRECISION
    assert table["int8"] is qdq_int8_symmetric_onnx and table["fp8"] is static_fp8_onnx
    assert set(table) == set(all_backends()["tensorrt"].precisions)
    assert not hasattr(trt_runner, "calibration_plan")  # the calibrator path is gone


@pytest.mark.parametrize("capability,reason", [
    ((9, 0), None), ((8, 9), None), ((10, 0), None),
    ((8, 0), "fp8 needs compute capability 8.9 or newer (Ada, Hopper); NVIDIA A100 is 8.0"),
])
def test_fp8_needs_ada_or_hopper(capability, reason):
    assert trt_runner.fp8_unavailable_reason(capability, "NVIDIA A100") == reason


def test_tensorrt_fp8_skips_below_ada_with_the_reason(monkeypatch):
    import torch

    backend = all_backends()["tensorrt"]
    monkeypatch.setattr(CudaBackend, "unavailable_reason", lambda self, precision=None: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(trt_runner, "gpu_name", lambda: "NVIDIA A100-SXM4-80GB")
    assert backend.unavailable_reason("fp8") == (
        "tensorrt: fp8 needs compute capability 8.9 or newer (Ada, Hopper); "
        "NVIDIA A100-SXM4-80GB is 8.0")
    assert backend.unavailable_reason("int8") is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert backend.unavailable_reason("fp8") is None


def _qdq_zero_points(path: Path) -> list[tuple[str, int, list]]:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = inits[node.input[2]]
            values = (numpy_helper.to_array(zero).ravel().tolist()
                      if zero.data_type in (TensorProto.INT8, TensorProto.UINT8,
                                            TensorProto.INT32) else None)
            found.append((node.op_type, zero.data_type, values))
    return found


def test_qdq_graphs_are_what_tensorrt_takes(tiny_spec, store):
    subject = ModelUnderTest(tiny_spec, store)
    ort_cpu = _qdq_zero_points(static_int8_onnx(subject))
    symmetric = _qdq_zero_points(qdq_int8_symmetric_onnx(subject))
    # ORT CPU's graph: uint8 activations with zero points, int32 bias - TensorRT rejects both
    assert any(t == TensorProto.UINT8 for _, t, _ in ort_cpu)
    assert any(t == TensorProto.INT32 for _, t, _ in ort_cpu)
    # TensorRT's: int8 everywhere, every zero point 0, both activations and weights quantized
    assert symmetric and {t for _, t, _ in symmetric} == {TensorProto.INT8}
    assert all(set(values) == {0} for _, _, values in symmetric)
    assert {op for op, _, _ in symmetric} == {"QuantizeLinear", "DequantizeLinear"}
    fp8_path = static_fp8_onnx(subject)
    fp8 = _qdq_zero_points(fp8_path)
    assert fp8 and {t for _, t, _ in fp8} == {TensorProto.FLOAT8E4M3FN}
    opsets = {o.domain: o.version for o in onnx.load(str(fp8_path)).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) >= 19  # float8 Q/DQ needs opset 19
    assert not (fp8_path.parent / "source").exists()  # the opset-19 copy is not kept
