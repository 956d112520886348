"""What machine and software a run happened on, for reports (and later, baselines)."""

from __future__ import annotations

import os
import platform
from functools import cache

from infergate.build.artifacts import versions

LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu",
             "openvino", "transformers", "numpy", "pytest")


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use (a container's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_model() -> str | None:
    """The first CUDA device's name, or None. Asks torch only when it is already imported
    with CUDA built in, so describing a CPU machine never initialises CUDA."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.version.cuda:
        return None
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken driver reads as "no GPU", not as a crash in reporting
        return None


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe() -> dict:
    from infergate.machine_id import this_machine  # it builds on this module

    flags = cpu_flags()
    return {
        "machine": this_machine(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": cpu_count(),
        "gpu": gpu_model(),
        "cpu_features": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                                        "amx_bf16", "amx_int8", "avx_vnni"}),
        "libraries": {k: v for k, v in versions(*LIBRARIES).items() if v != "absent"},
    }
