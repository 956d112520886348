"""The backend registry: one line per backend in ``all_backends``."""

from __future__ import annotations

from functools import cache

from infergate.backends.base import Backend, Runner, RunnerError
from infergate.backends.openvino_cpu import OpenVinoCpu
from infergate.backends.ort_cpu import OrtCpu
from infergate.backends.ort_gpu import OrtCuda, OrtTrt
from infergate.backends.tensorrt_runner import TensorRt
from infergate.backends.torch_compile import TorchCompile
from infergate.backends.torch_cuda import TorchCuda
from infergate.backends.torch_eager import TorchEager
from infergate.backends.torch_export import TorchExport
from infergate.backends.torch_jit import TorchJit

__all__ = ["Backend", "Runner", "RunnerError", "all_backends"]


@cache
def all_backends() -> dict[str, Backend]:
    backends = (
        TorchEager(),
        TorchCompile(),
        OrtCpu(),
        OpenVinoCpu(),
        TorchJit(),
        TorchExport(),
        TorchCuda(),
        OrtCuda(),
        OrtTrt(),
        TensorRt(),
    )
    return {b.name: b for b in backends}
