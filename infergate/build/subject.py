"""The model under test: a spec plus its built module, inputs and cached exports."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from infergate.build import onnx_export
from infergate.build.artifacts import ArtifactStore, code_digest, versions
from infergate.build.model_source import source_digest
from infergate.build.onnx_export import OPSET, export_onnx
from infergate.spec import ModelSpec

if TYPE_CHECKING:  # torch loads when the model is built or its inputs made (see feed_path)
    import torch


def to_numpy(inputs: dict) -> dict[str, np.ndarray]:
    """Tensors (torch's, by duck typing: torch need not be loaded) and arrays as numpy."""
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in inputs.items()}


class ModelUnderTest:
    """Built lazily: collecting the matrix never builds a model."""

    def __init__(self, spec: ModelSpec, store: ArtifactStore, fingerprint: str | None = None,
                 calibration_digest: str | None = None):
        self.spec = spec
        self.store = store
        # Known from another process: cached artifacts are found without building the torch
        # module (a performance probe must not hold weights it does not run) or making the
        # calibration feeds.
        if fingerprint is not None:
            self.__dict__["fingerprint"] = fingerprint
        if calibration_digest is not None:
            self.__dict__["calibration_digest"] = calibration_digest

    @cached_property
    def module(self) -> torch.nn.Module:
        return self.spec.build(self.store).eval()

    @cached_property
    def fingerprint(self) -> str:
        """Changes when the model's code (its module, the project modules it imports, and
        those defining the built module's layers, which ``build`` may import lazily), weights
        or declared shapes change."""
        h = hashlib.sha256(self.spec.name.encode())
        layers = dict.fromkeys(type(m) for m in self.module.modules())
        h.update(source_digest(self.spec.build, self.spec.make_inputs, *layers).encode())
        h.update(repr(sorted((k, repr(v)) for k, v in self.spec.dims.items())).encode())
        h.update(repr(sorted(self.spec.dynamic_axes.items())).encode())
        for name, tensor in self.module.state_dict().items():
            h.update(name.encode())
            h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        return h.hexdigest()[:20]

    def inputs(self, seed: int = 0, batch: int | None = None, **dims) -> dict[str, np.ndarray]:
        return to_numpy(self.spec.example_inputs(seed=seed, batch=batch, **dims))

    def feed_path(self, seed: int = 0, **dims) -> Path:
        """``inputs(seed, **dims)`` saved in the artifact cache, from which a performance
        probe loads its feed: a probe of an ONNX artifact then never imports torch (1.4 s of
        every fresh process here, and PyTorch's thread pools beside the runtime measured)."""
        key = {"model": self.spec.name, "fingerprint": self.fingerprint, "seed": seed,
               "dims": dims}

        def build(tmp: Path):
            np.savez(tmp / "feed.npz", **self.inputs(seed=seed, **dims))

        folder = self.store.get("feed", key, build, f"saving {self.spec.name}'s inputs")
        return folder / "feed.npz"

    @cached_property
    def onnx_key(self) -> dict:
        return {"model": self.spec.name, "fingerprint": self.fingerprint, "opset": OPSET,
                "exporter": code_digest(onnx_export), **versions("torch", "onnx", "onnxscript")}

    @cached_property
    def onnx_path(self) -> Path:
        def build(tmp: Path):
            torch_inputs = self.spec.example_inputs(seed=0)
            export_onnx(self.spec, self.module, torch_inputs, tmp / "model.onnx")

        folder = self.store.get("onnx", self.onnx_key, build,
                                f"exporting {self.spec.name} to ONNX")
        return folder / "model.onnx"

    @cached_property
    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        return [to_numpy(feed) for feed in self.spec.calibration_inputs()]

    @cached_property
    def calibration_digest(self) -> str:
        """The calibration data's digest, part of a quantized artifact's key. Like the
        fingerprint, a probe is handed it: computing the feeds would import torch."""
        h = hashlib.sha256()
        for feed in self.calibration_feeds:
            for name in sorted(feed):
                h.update(name.encode())
                h.update(np.ascontiguousarray(feed[name]).tobytes())
        return h.hexdigest()[:20]

    def batch_slice(self, arrays: dict[str, np.ndarray], row: int,
                    outputs: bool = False) -> dict[str, np.ndarray]:
        """Row ``row`` of a batch, batch axis kept. Inputs find their batch axis in the spec's
        dynamic_axes; outputs put batch first."""
        sliced = {}
        for name, value in arrays.items():
            axes = {} if outputs else self.spec.dynamic_axes.get(name, {})
            axis = next((a for a, dim in axes.items() if dim == "batch"), 0)
            sliced[name] = np.take(value, [row], axis=axis)
        return sliced
