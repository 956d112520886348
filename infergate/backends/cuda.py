"""What the GPU backends share: is there a CUDA device, which one, and its hidden knobs.

Every check here is cheap on a CPU machine and imports nothing heavy: where no GPU driver is
loaded the answer is no without asking torch (importing it would cost the collection of the
matrix a second); elsewhere ``torch.cuda.is_available()`` answers, and the answers are cached
for the session. ONNX Runtime, TensorRT and Polygraphy are only imported by a backend once a
device is known to be there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from infergate.backends.base import Backend

NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
# What a Linux host with a GPU torch could use has: NVIDIA's driver, WSL's GPU bridge, or
# AMD's (ROCm builds of torch answer torch.cuda too).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def no_gpu_driver() -> bool:
    """True where torch.cuda.is_available() can only be False: Linux with no GPU driver."""
    return sys.platform == "linux" and not any(Path(p).exists() for p in GPU_DRIVER_PATHS)


@cache
def cuda_unavailable_reason() -> str | None:
    """Why nothing can run on CUDA here, or None."""
    if no_gpu_driver():
        return NO_CUDA
    import torch

    return None if torch.cuda.is_available() else NO_CUDA


@cache
def bf16_unavailable_reason() -> str | None:
    reason = cuda_unavailable_reason()
    if reason:
        return reason
    import torch

    return None if torch.cuda.is_bf16_supported() else f"{gpu_name()} has no bf16 support"


@cache
def gpu_name() -> str:
    """The GPU model (part of every engine-cache key: engines are not portable)."""
    import torch

    return torch.cuda.get_device_name(0)


def device_facts() -> dict[str, Any]:
    import torch

    return {"device": "cuda", "gpu": gpu_name(), "torch.version.cuda": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}


@cache
def ort_provider_unavailable_reason(provider: str) -> str | None:
    """Whether the installed onnxruntime has ``provider`` (the CPU wheel has not).
    Imports onnxruntime: call it only once a CUDA device is known to be present."""
    import onnxruntime as ort

    if provider in ort.get_available_providers():
        return None
    return (f"onnxruntime {ort.__version__} has no {provider} (the CPU wheel is installed? "
            f"install onnxruntime-gpu instead, never both)")


# torch's TF32 switches. Off means fp32 matmuls and convolutions really run in fp32, so
# torch_cuda fp32 is a true fp32 reference (on Ampere and newer cuDNN convolutions default
# to TF32, i.e. a 10-bit mantissa).
TF32_OFF = {"matmul.allow_tf32": False, "cudnn.allow_tf32": False,
            "float32_matmul_precision": "highest"}


def tf32_state() -> dict[str, Any]:
    import torch

    return {"matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def set_tf32(state: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``state`` (like TF32_OFF); returns the previous one, to restore later."""
    import torch

    previous = tf32_state()
    torch.backends.cuda.matmul.allow_tf32 = state["matmul.allow_tf32"]
    torch.backends.cudnn.allow_tf32 = state["cudnn.allow_tf32"]
    torch.set_float32_matmul_precision(state["float32_matmul_precision"])
    return previous


class DeviceFeedCache:
    """Inputs copied to the device once per feed, so timed runs exclude host-to-device copies.

    A feed passed again (the same dict holding the same arrays, as a benchmark loop does) is
    treated as unchanged and reuses its device copies; pass a new dict to change inputs.
    """

    def __init__(self, upload: Callable[[Mapping[str, Any]], Any]):
        self._upload = upload
        self._key: tuple | None = None
        self._held = None  # the feed and its arrays, kept alive so their ids stay unique
        self._device = None

    def get(self, feed: Mapping[str, Any]):
        key = (id(feed), tuple((name, id(value)) for name, value in feed.items()))
        if key != self._key:
            self._device = self._upload(feed)
            self._key, self._held = key, (feed, tuple(feed.values()))
        return self._device

    def clear(self) -> None:
        self._key = self._held = self._device = None


class CudaBackend(Backend):
    """A backend that needs an NVIDIA GPU: skipped with a reason where there is none."""

    device = "cuda"
    extra = "gpu"
    # GPU runs are the nightly's (`--infergate-tier full`); a CPU PR run is spared ~150 skip lines.
    tier = "full"
    ort_provider: str | None = None  # an ONNX Runtime execution provider it needs

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        reason = (super().unavailable_reason(precision) or cuda_unavailable_reason()
                  or (bf16_unavailable_reason() if precision == "bf16" else None)
                  or (self.ort_provider and ort_provider_unavailable_reason(self.ort_provider)))
        if reason and not reason.startswith(f"{self.name}:"):
            return f"{self.name}: {reason}"
        return reason or None
