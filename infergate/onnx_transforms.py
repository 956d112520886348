"""Derived ONNX artifacts (fp16, dynamic int8, static QDQ int8), each cached on disk.

Polygraphy-style lazy steps: nothing is converted until a runner asks for the path, and
each artifact's key is its parent's key plus its own parameters and library versions.
ORT's quantizer is used for both ONNX Runtime and OpenVINO int8 (OpenVINO runs QDQ models
as int8), so the two backends are judged on the same quantized graph.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from infergate.artifacts import code_digest, digest, versions

_CODE = code_digest(sys.modules[__name__])  # an edit here rebuilds every derived model
_DYNAMIC_INT8 = {
    # Same scope as torch's quantize_dynamic of nn.Linear: weight-constant MatMul/Gemm only,
    # so "no worse than PyTorch int8_dynamic" compares like with like.
    "op_types_to_quantize": ["MatMul", "Gemm"],
    "extra_options": {"MatMulConstBOnly": True},
}
_STATIC_INT8 = {"per_channel": True, "format": "QDQ", "activations": "QUInt8",
                "weights": "QInt8", "method": "MinMax",
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


def calibration_digest(feeds: list[dict[str, np.ndarray]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    return h.hexdigest()[:20]


def static_int8_onnx(subject) -> Path:
    """Static QDQ int8 with per-channel weights, calibrated on the model's own inputs."""
    feeds = subject.calibration_feeds
    key = {"step": "int8_qdq", "parent": digest(subject.onnx_key), "code": _CODE, **_STATIC_INT8,
           "calibration": calibration_digest(feeds), **versions("onnxruntime", "onnx")}

    def build(tmp: Path):
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        reader = type("Reader", (_FeedReader, CalibrationDataReader), {})(feeds)
        quantize_static(subject.onnx_path, tmp / "model.onnx", reader,
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=_STATIC_INT8["op_types_to_quantize"],
                        use_external_data_format=True)

    return subject.store.get("onnx_int8", key, build,
                             f"quantizing {subject.spec.name} (static QDQ int8, "
                             f"{len(feeds)} calibration batches)") / "model.onnx"
