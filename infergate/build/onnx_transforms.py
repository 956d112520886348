"""Derived ONNX artifacts (fp16, dynamic int8, static QDQ int8), each cached on disk.

Polygraphy-style lazy steps: nothing is converted until a runner asks for the path, and
each artifact's key is its parent's key plus its own parameters and library versions.
ORT's quantizer is used for both ONNX Runtime and OpenVINO int8 (OpenVINO runs QDQ models
as int8), so the two backends are judged on the same quantized graph.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from infergate.build.artifacts import code_digest, digest, versions

if TYPE_CHECKING:  # numpy loads with the first quantization, not with the backend registry
    import numpy as np

_CODE = code_digest(sys.modules[__name__])  # an edit here rebuilds every derived model
_DYNAMIC_INT8 = {
    # Same scope as torch's quantize_dynamic of nn.Linear: weight-constant MatMul/Gemm only,
    # so "no worse than PyTorch int8_dynamic" compares like with like.
    "op_types_to_quantize": ["MatMul", "Gemm"],
    "extra_options": {"MatMulConstBOnly": True},
}
# 7-bit weights (reduce_range): on x86 CPUs without VNNI, ORT's fused u8s8 kernels saturate
# full-range int8 products (ORT's quantization docs); the graph is the same on every CPU.
_STATIC_INT8 = {"per_channel": True, "format": "QDQ", "activations": "QUInt8",
                "weights": "QInt8", "method": "MinMax", "reduce_range": True,
                # Only the compute-heavy ops. Quantizing everything puts QDQ on the attention
                # mask's -3.4e38 fill (MiniLM cosine 0.45 with ORT, NaN with OpenVINO) and on
                # GRU weights, which OpenVINO's CPU plugin rejects.
                "op_types_to_quantize": ["Conv", "MatMul", "Gemm"]}


def _onnx_dir(subject) -> Path:
    return subject.onnx_path.parent


def fp16_onnx(subject) -> Path:
    """All-fp16 graph with fp32 inputs/outputs.

    ONNX Runtime's converter rather than onnxconverter-common's: on dynamo exports the latter
    leaves Cast and Clip nodes typed inconsistently (MiniLM would not load).
    """
    key = {"step": "fp16", "parent": digest(subject.onnx_key), "code": _CODE, "keep_io_types": True,
           **versions("onnx", "onnxruntime")}

    def build(tmp: Path):
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(subject.onnx_path))
        converted = convert_float_to_float16(model, keep_io_types=True,
                                             disable_shape_infer=True)
        onnx.save(converted, str(tmp / "model.onnx"), save_as_external_data=True,
                  location="model.onnx.data")

    return subject.store.get("onnx_fp16", key, build,
                             f"converting {subject.spec.name} to fp16 ONNX") / "model.onnx"


def dynamic_int8_onnx(subject) -> Path:
    key = {"step": "int8_dynamic", "parent": digest(subject.onnx_key), "code": _CODE,
           **_DYNAMIC_INT8, **versions("onnxruntime", "onnx")}

    def build(tmp: Path):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(subject.onnx_path, tmp / "model.onnx", weight_type=QuantType.QInt8,
                         use_external_data_format=True, **_DYNAMIC_INT8)

    return subject.store.get("onnx_int8_dynamic", key, build,
                             f"quantizing {subject.spec.name} (dynamic int8)") / "model.onnx"


class _FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over the model's calibration inputs."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


# TensorRT's explicit quantization takes signed int8 with zero point 0 only, and no int32
# bias Q/DQ (it fuses the bias itself): the same calibration, ops and per-channel weights as
# _STATIC_INT8, activations symmetric int8, biases left float.
_FOR_TENSORRT = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
# TensorRT has no u8s8 kernels to saturate: full-range weights.
_SYMMETRIC_INT8 = {**_STATIC_INT8, "activations": "QInt8", "reduce_range": False,
                   "extra_options": _FOR_TENSORRT}
# fp8 (E4M3) Q/DQ for TensorRT on Ada/Hopper. ORT's quantizer calibrates float8 only with
# the Distribution method; per-tensor scales; QuantizeLinear takes float8 from opset 19.
_STATIC_FP8 = {"per_channel": False, "format": "QDQ", "activations": "QFLOAT8E4M3FN",
               "weights": "QFLOAT8E4M3FN", "method": "Distribution",
               "op_types_to_quantize": ["Conv", "MatMul", "Gemm"],
               "extra_options": {"QuantizeBias": False}, "opset": 19}


def _static_qdq(subject, kind: str, step: str, params: dict, what: str) -> Path:
    """A static Q/DQ model quantized by ONNX Runtime's quantizer with ``params`` (one of the
    tables above), calibrated on the model's own calibration inputs."""
    key = {"step": step, "parent": digest(subject.onnx_key), "code": _CODE, **params,
           "calibration": subject.calibration_digest, **versions("onnxruntime", "onnx")}

    def build(tmp: Path):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        source = subject.onnx_path
        if params.get("opset"):
            source = _at_opset(source, params["opset"], tmp / "source")
        reader = type("Reader", (_FeedReader, CalibrationDataReader), {})(
            subject.calibration_feeds)
        quantize_static(source, tmp / "model.onnx", reader,
                        quant_format=QuantFormat.QDQ, per_channel=params["per_channel"],
                        activation_type=getattr(QuantType, params["activations"]),
                        weight_type=getattr(QuantType, params["weights"]),
                        calibrate_method=getattr(CalibrationMethod, params["method"]),
                        op_types_to_quantize=params["op_types_to_quantize"],
                        reduce_range=params.get("reduce_range", False),
                        extra_options=params.get("extra_options"),
                        use_external_data_format=True)
        if params.get("opset"):
            import shutil

            shutil.rmtree(tmp / "source")

    return subject.store.get(kind, key, build,
                             f"quantizing {subject.spec.name} ({what})") / "model.onnx"


def _at_opset(path: Path, opset: int, folder: Path) -> Path:
    """``path``'s model converted to ``opset`` by ONNX's version converter, saved in
    ``folder`` (with external data, like every export here)."""
    import onnx
    from onnx import version_converter

    folder.mkdir()
    converted = version_converter.convert_version(onnx.load(str(path)), opset)
    out = folder / "model.onnx"
    onnx.save(converted, str(out), save_as_external_data=True, location="model.onnx.data")
    return out


def static_int8_onnx(subject) -> Path:
    """Static QDQ int8 with per-channel weights, calibrated on the model's own inputs."""
    return _static_qdq(subject, "onnx_int8", "int8_qdq", _STATIC_INT8, "static QDQ int8")


def qdq_int8_symmetric_onnx(subject) -> Path:
    """``static_int8_onnx``'s quantization with symmetric int8 activations: the Q/DQ graph
    TensorRT builds int8 engines from (explicit quantization)."""
    return _static_qdq(subject, "onnx_int8_symmetric", "int8_qdq_symmetric", _SYMMETRIC_INT8,
                       "static QDQ int8, symmetric")


def static_fp8_onnx(subject) -> Path:
    """Static QDQ fp8 (E4M3, per-tensor), calibrated on the model's own inputs: the graph
    TensorRT builds fp8 engines from."""
    return _static_qdq(subject, "onnx_fp8", "fp8_qdq", _STATIC_FP8, "static QDQ fp8 E4M3")
