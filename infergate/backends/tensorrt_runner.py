"""Native TensorRT through Polygraphy: ONNX -> network -> engine (built once, cached) -> runner.

Polygraphy's lazy loaders: ``NetworkFromOnnxPath`` -> ``CreateConfig`` (precision flags, one
optimisation profile from the spec's dims) -> ``EngineBytesFromNetwork`` at cache-miss time;
``EngineFromBytes(BytesFromPath(engine))`` -> ``TrtRunner`` at activate. The engine is keyed by
the ONNX digest, precision, TensorRT version and GPU model (engines are not portable across
any of those). TF32 is pinned off (``tf32=False``): fp32 means fp32.

int8 and fp8 are explicit quantization: the network is parsed from a Q/DQ ONNX graph whose
scales were calibrated once by ONNX Runtime's quantizer (``onnx_transforms``), so TensorRT
runs the same quantized model ONNX Runtime and OpenVINO run, and no calibrator is involved.
TensorRT deprecated its implicit-quantization calibrators in 10.1; they calibrated at one
fixed shape, with TensorRT's own entropy method, a different model from ORT's int8.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infergate.backends.base import ONNX_EXPORT, Runner
from infergate.backends.cuda import CudaBackend, device_facts, gpu_name
from infergate.backends.device_time import DeviceFigures
from infergate.backends.gpu_memory import nvml_process_mb, trt_engine_mb
from infergate.backends.warmup import FEATURES, tiny_feed, tiny_onnx
from infergate.build.artifacts import digest, versions
from infergate.build.onnx_transforms import qdq_int8_symmetric_onnx, static_fp8_onnx

# precision -> CreateConfig flags. A Q/DQ graph needs its precision's flag too: the flag
# allows int8/fp8 kernels, the graph's Q/DQ nodes say where they run. fp16 beside fp8 lets
# TensorRT fuse the layers between quantized ones in half precision rather than fp32.
CONFIG_FLAGS: dict[str, dict[str, bool]] = {
    "fp32": {},
    "fp16": {"fp16": True},
    "bf16": {"bf16": True},
    "int8": {"int8": True},
    "fp8": {"fp8": True, "fp16": True},
}

# precision -> the ONNX graph TensorRT parses. int8: symmetric Q/DQ (TensorRT takes only
# zero-point 0 and signed int8; ORT CPU's graph has uint8 activations with a zero point).
ONNX_FOR_PRECISION: dict[str, Callable[[Any], Path]] = {
    "fp32": lambda subject: subject.onnx_path,
    "fp16": lambda subject: subject.onnx_path,
    "bf16": lambda subject: subject.onnx_path,
    "int8": qdq_int8_symmetric_onnx,
    "fp8": static_fp8_onnx,
}
QUANTIZED = ("int8", "fp8")
# fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards.
FP8_CAPABILITY = (8, 9)

Shape = tuple[int, ...]


def create_config_kwargs(precision: str) -> dict[str, Any]:
    """Keyword arguments for Polygraphy's ``CreateConfig`` at ``precision`` (less the
    profiles, which need the model)."""
    return {"tf32": False, **CONFIG_FLAGS[precision]}


def profile_shapes(spec) -> dict[str, tuple[Shape, Shape, Shape]]:
    """``{input: (min, opt, max)}`` for one optimisation profile: opt is the shape of the
    spec's default inputs, min/max put each dynamic axis at its declared range's ends."""
    shapes = {}
    for name, tensor in spec.example_inputs(seed=0).items():
        opt = tuple(int(n) for n in tensor.shape)
        low, high = list(opt), list(opt)
        for axis, dim in spec.dynamic_axes.get(name, {}).items():
            low[axis], high[axis] = spec.dims[dim].min, spec.dims[dim].max
        shapes[name] = (tuple(low), opt, tuple(high))
    return shapes


def engine_key(onnx_digest: str, precision: str, trt_version: str, gpu: str,
               profile: Mapping[str, Any], graph: str = "") -> dict[str, Any]:
    """What a serialized engine depends on; any change gives a new cache entry. ``graph``
    names the derived ONNX parsed (a Q/DQ model's artifact folder, i.e. its key's digest)."""
    return {"step": "tensorrt_engine", "onnx": onnx_digest, "graph": graph,
            "precision": precision, "tensorrt": trt_version, "gpu": gpu,
            "config": create_config_kwargs(precision),
            "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()}}


def config_loader(precision: str, shapes):
    """Polygraphy's ``CreateConfig`` for ``precision`` with one profile over ``shapes``:
    no calibrator at any precision (Q/DQ graphs carry their scales)."""
    from polygraphy.backend.trt import CreateConfig, Profile

    profile = Profile()
    for name, (low, opt, high) in shapes.items():
        profile.add(name, min=low, opt=opt, max=high)
    return CreateConfig(profiles=[profile], **create_config_kwargs(precision))


def build_engine(onnx_path: Path, precision: str, shapes, out: Path) -> None:
    """Build and serialize the engine into ``out`` (an ArtifactStore build step)."""
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath

    engine = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path)),
                                    config=config_loader(precision, shapes))()
    with open(out, "wb") as f:
        f.write(engine)


def fp8_unavailable_reason(capability: tuple[int, int], gpu: str) -> str | None:
    """Why TensorRT cannot run fp8 on a GPU of ``capability``, or None."""
    if tuple(capability) >= FP8_CAPABILITY:
        return None
    return (f"fp8 needs compute capability {'.'.join(map(str, FP8_CAPABILITY))} or newer "
            f"(Ada, Hopper); {gpu} is {'.'.join(map(str, capability))}")


class TensorRtRunner(DeviceFigures, Runner):
    """Polygraphy's TrtRunner on a deserialized engine (profile 0: the spec's range)."""

    synchronization = ("Polygraphy's infer() copies the inputs in, executes and copies the "
                       "outputs out on its stream, then synchronises it; device time brackets "
                       "all of infer() on that stream, copies included, so it is close to "
                       "host time by construction")
    allocator_figure = "trt_device_memory_mb"

    def __init__(self, label, output_names, engine_path: Path, settings: dict[str, Any]):
        super().__init__(label, output_names)
        self.engine_path = engine_path
        self.settings = dict(settings)
        self._runner = None

    def activate_impl(self):
        import tensorrt as trt
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine_path))),
                                 name=self.label)
        self._runner.activate()
        self.settings.update({**device_facts(), "tensorrt": trt.__version__,
                              "engine": str(self.engine_path),
                              "inputs": "copied to the device inside each run (timed)"})

    def device_stream(self):
        import torch

        # TrtRunner keeps its polygraphy.cuda.Stream as .stream while active.
        return torch.cuda.ExternalStream(self._runner.stream.ptr)

    def run_impl(self, feed):
        import numpy as np

        self._device_begin()
        outputs = self._runner.infer(dict(feed))
        self._device_end()
        # TrtRunner reuses its host buffers on the next infer(): keep our own copies.
        return {name: np.array(outputs[name], copy=True) for name in self.output_names}

    def memory_stats(self) -> dict[str, float]:
        # TrtRunner holds the deserialized engine as .engine while active.
        return {**trt_engine_mb(getattr(self._runner, "engine", None)), **nvml_process_mb()}

    def deactivate_impl(self):
        if self._runner is not None:
            self._runner.deactivate()
        self._runner = None


class TensorRt(CudaBackend):
    name = "tensorrt"
    precisions = tuple(ONNX_FOR_PRECISION)
    requires = (*ONNX_EXPORT, "tensorrt", "polygraphy")
    # Q/DQ graphs come from ONNX Runtime's quantizer (calibration runs on its CPU provider).
    precision_requires = {"int8": ("onnxruntime",), "fp8": ("onnxruntime",)}

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        reason = super().unavailable_reason(precision)
        if reason or precision != "fp8":
            return reason
        import torch

        fp8 = fp8_unavailable_reason(torch.cuda.get_device_capability(0), gpu_name())
        return f"{self.name}: {fp8}" if fp8 else None

    def prepare(self, subject, precision: str) -> Runner:
        shapes = profile_shapes(subject.spec)
        onnx_path = ONNX_FOR_PRECISION[precision](subject)
        trt_version = versions("tensorrt")["tensorrt"]
        graph = onnx_path.parent.name if precision in QUANTIZED else ""
        key = engine_key(digest(subject.onnx_key), precision, trt_version, gpu_name(), shapes,
                         graph)

        def build(tmp: Path):
            build_engine(onnx_path, precision, shapes, tmp / "model.engine")

        folder = subject.store.get("tensorrt", key, build,
                                   f"building a TensorRT {precision} engine for "
                                   f"{subject.spec.name}")
        settings = {"config": create_config_kwargs(precision),
                    "profile": {n: [list(s) for s in r] for n, r in shapes.items()}}
        if precision in QUANTIZED:
            settings["quantization"] = f"explicit: Q/DQ graph {onnx_path} (no calibrator)"
        return TensorRtRunner(self.label(subject, precision), subject.spec.outputs,
                              folder / "model.engine", settings)

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """An engine of the tiny graph (symmetric Q/DQ for int8; the float graph for fp8)
        built from ONNX bytes with the precision's config and run through Polygraphy's
        TrtRunner: TensorRT's libraries, the ONNX parser, the builder and the CUDA context.
        Nothing cached: it builds in seconds."""
        del threads, cache_dir
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineFromNetwork,
            NetworkFromOnnxBytes,
            Profile,
            TrtRunner,
        )

        feed = tiny_feed()
        shape = feed["x"].shape
        profile = Profile().add("x", min=(1, FEATURES), opt=shape, max=shape)
        config = CreateConfig(profiles=[profile], **create_config_kwargs(precision))
        engine = EngineFromNetwork(NetworkFromOnnxBytes(tiny_onnx(precision == "int8",
                                                                    symmetric=True)),
                                   config=config)
        with TrtRunner(engine, name="infergate-warmup") as runner:
            runner.infer(feed)
        return {"workload": f"tiny ONNX graph engine at {precision}, built and run"}
