"""ONNX Runtime on an NVIDIA GPU: the CUDA execution provider (``ort_cuda``) and the TensorRT
execution provider (``ort_trt``).

``ort_cuda`` binds inputs and outputs on the device (IOBinding), so timed runs exclude the
host-to-device input copies; ``INFERGATE_ORT_IOBINDING=host`` runs plain ``session.run``
instead, copies included. Both pin TF32 off in the CUDA provider (``use_tf32=0``) and record
the provider options ONNX Runtime actually applied (arena strategy, cuDNN search, ...).
A session that silently fell back to the CPU provider is an error, never a pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infergate.backends.base import ONNX_EXPORT, Runner
from infergate.backends.cuda import CudaBackend, DeviceFeedCache, device_facts, gpu_name
from infergate.backends.device_time import DeviceFigures
from infergate.backends.gpu_memory import nvml_process_mb
from infergate.backends.ort_cpu import OrtRunner, warm_session
from infergate.backends.tensorrt_runner import profile_shapes
from infergate.build.artifacts import digest, versions
from infergate.build.onnx_transforms import fp16_onnx, qdq_int8_symmetric_onnx

IOBINDING_ENV = "INFERGATE_ORT_IOBINDING"
IOBINDING_MODES = ("device", "host")


def iobinding_mode() -> str:
    mode = os.environ.get(IOBINDING_ENV, "device").strip().lower() or "device"
    if mode not in IOBINDING_MODES:
        raise ValueError(f"{IOBINDING_ENV}={mode!r}: expected one of {', '.join(IOBINDING_MODES)}")
    return mode


def cuda_provider_options(precision: str, device_id: int = 0) -> dict[str, Any]:
    """CUDAExecutionProvider options. The same at every precision: TF32 off (fp32 is fp32;
    fp16 graphs are unaffected), an arena grown by what is asked so peak memory reflects the
    model, exhaustive cuDNN convolution search (ORT's default, pinned)."""
    del precision  # nothing differs today; the argument keeps every backend's table alike
    return {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True,
            "use_tf32": 0}


def trt_shape_option(shapes: Mapping[str, tuple], which: int) -> str:
    """``"a:1x16,b:1x16"``: the TensorRT EP's profile-shape syntax; ``which`` is 0/1/2 for
    min/opt/max."""
    return ",".join(f"{name}:{'x'.join(map(str, r[which]))}" for name, r in shapes.items())


def trt_provider_options(precision: str, cache_dir: Path | str, shapes: Mapping[str, tuple],
                         device_id: int = 0) -> dict[str, Any]:
    """TensorrtExecutionProvider options. int8 runs a Q/DQ graph (TensorRT takes the scales
    from it; no calibration table), with the unquantized layers in fp32 as on ``ort_cpu``."""
    return {"device_id": device_id,
            "trt_fp16_enable": precision == "fp16",
            "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir),
            "trt_profile_min_shapes": trt_shape_option(shapes, 0),
            "trt_profile_opt_shapes": trt_shape_option(shapes, 1),
            "trt_profile_max_shapes": trt_shape_option(shapes, 2)}


def ort_trt_cache_key(onnx_digest: str, model: str, precision: str, ort_version: str,
                      trt_version: str, gpu: str, shapes: Mapping[str, tuple]) -> dict[str, Any]:
    """What the TensorRT EP's engine cache depends on: the exported ONNX (and the derived
    graph ``model`` actually run), precision, ONNX Runtime and TensorRT versions, GPU model
    and profile shapes."""
    return {"step": "ort_trt_engines", "onnx": onnx_digest, "model": model,
            "precision": precision, "onnxruntime": ort_version, "tensorrt": trt_version,
            "gpu": gpu, "profile": {n: [list(s) for s in r] for n, r in shapes.items()}}


def with_compute_stream(providers: list, stream_ptr: int) -> list:
    """``providers`` with the CUDA and TensorRT providers running on the CUDA stream at
    ``stream_ptr`` (their ``user_compute_stream`` option, the pointer as a decimal string):
    the stream the device-time events are recorded on."""
    gpu = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    return [(name, {**options, "user_compute_stream": str(stream_ptr)}) if name in gpu
            else (name, options) for name, options in providers]


class OrtGpuRunner(DeviceFigures, OrtRunner):
    """An ONNX Runtime session on CUDA; ``iobinding="device"`` keeps inputs on the device
    (copied once per feed) and outputs allocated there, copied to the host after the run.
    The session runs on a stream of its own, created at activate and handed to ONNX Runtime,
    so CUDA events can bracket its kernels."""

    synchronization = ("session.run returns once ONNX Runtime synchronised its compute "
                       "stream; device time brackets the run on that stream, the outputs' "
                       "copy to the host after it is host time")
    # ONNX Runtime's Python API exposes no arena statistics: NVML's figure covers the arena.
    allocator_figure = None

    def __init__(self, label, output_names, model_path, providers, iobinding="device"):
        super().__init__(label, output_names, model_path, providers)
        self.iobinding = iobinding
        self._inputs = DeviceFeedCache(self._upload)
        self._stream = None

    @staticmethod
    def _upload(feed):
        import numpy as np
        from onnxruntime import OrtValue

        return {name: OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", 0)
                for name, value in feed.items()}

    def device_stream(self):
        return self._stream

    def activate_impl(self):
        import torch

        # A stream of its own: ONNX Runtime reads 0 (torch's default stream) as "none given".
        self._stream = torch.cuda.Stream()
        self.providers = with_compute_stream(self.providers, self._stream.cuda_stream)
        super().activate_impl()
        wanted = self.providers[0][0]
        if wanted not in self.session.get_providers():
            raise RuntimeError(f"{self.label}: ONNX Runtime fell back to "
                               f"{self.session.get_providers()} instead of {wanted} (missing "
                               f"CUDA/cuDNN/TensorRT libraries? see its log above)")
        self.settings.update(device_facts())
        self.settings["provider_options"] = self.session.get_provider_options()
        self.settings["iobinding"] = self.iobinding

    def run_impl(self, feed):
        if self.iobinding == "host":  # the inputs' copies are inside the bracket
            self._device_begin()
            outputs = super().run_impl(feed)
            self._device_end()
            return outputs
        binding = self.session.io_binding()
        for name, value in self._inputs.get(feed).items():
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self._device_begin()
        self.session.run_with_iobinding(binding)
        self._device_end()
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def memory_stats(self) -> dict[str, float]:
        return nvml_process_mb()

    def deactivate_impl(self):
        self._inputs.clear()
        super().deactivate_impl()
        self._stream = None


class OrtCuda(CudaBackend):
    name = "ort_cuda"
    precisions = ("fp32", "fp16")
    requires = (*ONNX_EXPORT, "onnxruntime")
    ort_provider = "CUDAExecutionProvider"

    def prepare(self, subject, precision: str) -> Runner:
        path = subject.onnx_path if precision == "fp32" else fp16_onnx(subject)
        providers = [("CUDAExecutionProvider", cuda_provider_options(precision))]
        return OrtGpuRunner(self.label(subject, precision), subject.spec.outputs, path,
                            providers, iobinding_mode())

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """A tiny session on the CUDA provider: CUDA context, cuBLAS/cuDNN loaded, the
        provider's arena created."""
        del cache_dir
        providers = [("CUDAExecutionProvider", cuda_provider_options(precision))]
        self._runtime, done = warm_session(providers, precision, threads)
        return done


# precision -> the graph the TensorRT EP reads: fp16 is TensorRT's own choice of fp16
# kernels on the fp32 export; int8 is the symmetric Q/DQ graph the tensorrt backend builds
# from (TensorRT takes zero point 0 only; ort_cpu's graph has uint8 activations).
ORT_TRT_ONNX = {"fp16": lambda subject: subject.onnx_path, "int8": qdq_int8_symmetric_onnx}


class OrtTrt(CudaBackend):
    name = "ort_trt"
    precisions = tuple(ORT_TRT_ONNX)
    requires = (*ONNX_EXPORT, "onnxruntime", "tensorrt")  # the EP loads the TensorRT libraries
    ort_provider = "TensorrtExecutionProvider"

    def prepare(self, subject, precision: str) -> Runner:
        path = ORT_TRT_ONNX[precision](subject)
        shapes = profile_shapes(subject.spec)
        found = versions("onnxruntime-gpu", "onnxruntime", "tensorrt")
        ort_version = next(v for v in (found["onnxruntime-gpu"], found["onnxruntime"])
                           if v != "absent")
        # path.parent.name: an ArtifactStore folder is named by its key's digest.
        key = ort_trt_cache_key(digest(subject.onnx_key), path.parent.name, precision,
                                ort_version, found["tensorrt"], gpu_name(), shapes)
        cache_dir = subject.store.path_for("ort_trt", key)
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1))
        providers = [("TensorrtExecutionProvider",
                      trt_provider_options(precision, cache_dir, shapes)),
                     ("CUDAExecutionProvider", cuda_provider_options(precision))]
        return OrtGpuRunner(self.label(subject, precision), subject.spec.outputs, path,
                            providers, iobinding_mode())

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """A tiny session on the TensorRT provider (its engine built at the feed's shape, not
        cached) with CUDA behind it: TensorRT's libraries and builder, the CUDA context."""
        del cache_dir
        trt_options = {"device_id": 0, "trt_fp16_enable": precision == "fp16",
                       "trt_int8_enable": precision == "int8"}
        providers = [("TensorrtExecutionProvider", trt_options),
                     ("CUDAExecutionProvider", cuda_provider_options(precision))]
        self._runtime, done = warm_session(providers, precision, threads)
        return done
