"""The backend registry: one line per backend in ``all_backends``."""

from __future__ import annotations

from functools import cache

from infergate.backends.base import Backend, Runner, RunnerError
from infergate.backends.openvino_cpu import OpenVinoCpu
from infergate.backends.ort_cpu import OrtCpu
from infergate.backends.torch_compile import TorchCompile
from infergate.backends.torch_eager import TorchEager

__all__ = ["Backend", "Runner", "RunnerError", "all_backends"]


@cache
def all_backends() -> dict[str, Backend]:
    backends = (
        TorchEager(),
        TorchCompile(),
        OrtCpu(),
        OpenVinoCpu(),
    )
    return {b.name: b for b in backends}
