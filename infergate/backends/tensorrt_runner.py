"""Native TensorRT through Polygraphy: ONNX -> network -> engine (built once, cached) -> runner.

Polygraphy's lazy loaders: ``NetworkFromOnnxPath`` -> ``CreateConfig`` (precision flags, one
optimisation profile from the spec's dims, a ``Calibrator`` for int8) -> ``EngineBytesFromNetwork``
at cache-miss time; ``EngineFromBytes(BytesFromPath(engine))`` -> ``TrtRunner`` at activate.
The engine is keyed by the ONNX digest, precision, TensorRT version and GPU model (engines are
not portable across any of those). TF32 is pinned off (``tf32=False``): fp32 means fp32.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infergate.artifacts import digest, versions
from infergate.backends.base import Runner
from infergate.backends.cuda import CudaBackend, device_facts, gpu_name
from infergate.backends.gpu_memory import nvml_process_mb, trt_engine_mb
from infergate.backends.warmup import FEATURES, tiny_feed, tiny_onnx

# precision -> CreateConfig flags. fp8 is ready for when infergate has an fp8 precision id
# (TensorRT's fp8 needs an explicitly quantized, Q/DQ graph rather than a calibrator).
CONFIG_FLAGS: dict[str, dict[str, bool]] = {
    "fp32": {},
    "fp16": {"fp16": True},
    "bf16": {"bf16": True},
    "int8": {"int8": True},
    "fp8": {"fp8": True, "fp16": True},
}

Shape = tuple[int, ...]


def create_config_kwargs(precision: str) -> dict[str, Any]:
    """Keyword arguments for Polygraphy's ``CreateConfig`` at ``precision`` (less the
    profiles and the int8 calibrator, which need the model and its data)."""
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


def calibration_plan(feeds: Sequence[Mapping[str, np.ndarray]]
                     ) -> tuple[dict[str, Shape], list[Mapping[str, np.ndarray]]]:
    """TensorRT calibrates at one fixed shape: the most common input shapes among the
    calibration feeds (the first such on a tie), and the feeds that have them."""
    if not feeds:
        raise ValueError("int8 calibration needs at least one calibration feed")

    def signature(feed):
        return tuple(sorted((name, tuple(np.shape(v))) for name, v in feed.items()))

    counts = Counter(signature(f) for f in feeds)  # in order of first appearance
    best = max(counts, key=counts.get)  # max() keeps the first of equals
    return dict(best), [f for f in feeds if signature(f) == best]


def engine_key(onnx_digest: str, precision: str, trt_version: str, gpu: str,
               profile: Mapping[str, Any], calibration: str | None = None) -> dict[str, Any]:
    """What a serialized engine depends on; any change gives a new cache entry."""
    key = {"step": "tensorrt_engine", "onnx": onnx_digest, "precision": precision,
           "tensorrt": trt_version, "gpu": gpu, "config": create_config_kwargs(precision),
           "profile": {name: [list(s) for s in shapes] for name, shapes in profile.items()}}
    if calibration is not None:
        key["calibration"] = calibration
    return key


def build_engine(onnx_path: Path, precision: str, shapes, calibration_feeds, out: Path,
                 calibration_cache: Path) -> None:
    """Build and serialize the engine into ``out`` (an ArtifactStore build step)."""
    from polygraphy.backend.trt import (
        Calibrator,
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    def profile_of(ranges):
        profile = Profile()
        for name, (low, opt, high) in ranges.items():
            profile.add(name, min=low, opt=opt, max=high)
        return profile

    profiles = [profile_of(shapes)]
    kwargs = create_config_kwargs(precision)
    if calibration_feeds is not None:
        fixed, batches = calibration_plan(calibration_feeds)
        # Polygraphy calibrates with the last profile: one pinned at the calibration shape.
        profiles.append(profile_of({n: (s, s, s) for n, s in fixed.items()}))
        kwargs["calibrator"] = Calibrator([dict(b) for b in batches],
                                          cache=str(calibration_cache))
    config = CreateConfig(profiles=profiles, **kwargs)
    engine = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path)), config=config)()
    with open(out, "wb") as f:
        f.write(engine)


class TensorRtRunner(Runner):
    """Polygraphy's TrtRunner on a deserialized engine (profile 0: the spec's range)."""

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

    def run_impl(self, feed):
        outputs = self._runner.infer(dict(feed))
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
    # fp8 (CONFIG_FLAGS) waits for an fp8 precision id in infergate.precision.
    precisions = ("fp32", "fp16", "bf16", "int8")
    requires = ("tensorrt", "polygraphy")

    def prepare(self, subject, precision: str) -> Runner:
        shapes = profile_shapes(subject.spec)
        feeds = subject.calibration_feeds if precision == "int8" else None
        calibration = None
        if feeds is not None:
            from infergate.onnx_transforms import calibration_digest

            calibration = calibration_digest(feeds)
        trt_version = versions("tensorrt")["tensorrt"]
        key = engine_key(digest(subject.onnx_key), precision, trt_version, gpu_name(), shapes,
                         calibration)
        onnx_path = subject.onnx_path

        def build(tmp: Path):
            build_engine(onnx_path, precision, shapes, feeds, tmp / "model.engine",
                         tmp / "calibration.cache")

        folder = subject.store.get("tensorrt", key, build,
                                   f"building a TensorRT {precision} engine for "
                                   f"{subject.spec.name}")
        settings = {"config": create_config_kwargs(precision),
                    "profile": {n: [list(s) for s in r] for n, r in shapes.items()}}
        if calibration is not None:
            fixed, batches = calibration_plan(feeds)
            settings["calibration"] = (f"{len(batches)} of {len(feeds)} batches at "
                                       f"{fixed} (EntropyCalibrator2)")
        return TensorRtRunner(self.label(subject, precision), subject.spec.outputs,
                              folder / "model.engine", settings)

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """An engine of the tiny graph (Q/DQ for int8) built from ONNX bytes with the
        precision's config and run through Polygraphy's TrtRunner: TensorRT's libraries, the
        ONNX parser, the builder and the CUDA context. Nothing cached: it builds in seconds."""
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
        engine = EngineFromNetwork(NetworkFromOnnxBytes(tiny_onnx(precision == "int8")),
                                   config=config)
        with TrtRunner(engine, name="infergate-warmup") as runner:
            runner.infer(feed)
        return {"workload": f"tiny ONNX graph engine at {precision}, built and run"}
