"""GPU memory figures the GPU runners report after a measurement (``Runner.memory_stats``).

Each helper imports its library lazily and answers {} when a figure cannot be read: a
missing figure must never fail the measurement it accompanies.
"""

from __future__ import annotations

import contextlib
import os

MB = 2**20


def torch_cuda_mb() -> dict[str, float]:
    """The torch caching allocator's peaks on the current device, since the last
    ``torch.cuda.reset_peak_memory_stats()`` (the runner resets them at activate)."""
    try:
        import torch

        return {"cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / MB,
                "cuda_max_reserved_mb": torch.cuda.max_memory_reserved() / MB}
    except Exception:
        return {}


def trt_engine_mb(engine) -> dict[str, float]:
    """Device memory an execution context of ``engine`` (a ``tensorrt.ICudaEngine``) needs:
    activations and scratch, weights excluded."""
    try:
        # device_memory_size is deprecated since TensorRT 10.1 and gone in 11; the v2
        # figure also accounts for a weight-streaming budget.
        size = getattr(engine, "device_memory_size_v2", None)
        if size is None:
            size = engine.device_memory_size
        return {"trt_device_memory_mb": size / MB}
    except Exception:
        return {}


def nvml_process_mb() -> dict[str, float]:
    """This process's GPU memory as the driver sees it (every allocator, CUDA context
    included), from NVML (package ``nvidia-ml-py``).

    Summed over every device NVML lists: NVML indices ignore ``CUDA_VISIBLE_DEVICES``, so
    CUDA's device 0 need not be NVML's. {} where this pid is not listed (a container
    without the host's pid namespace) or the driver withholds the figure.
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        pid, used = os.getpid(), []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            used += [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                     if p.pid == pid and p.usedGpuMemory is not None]
        return {"nvml_process_used_mb": sum(used) / MB} if used else {}
    except Exception:
        return {}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def device_memory_figures(nvml: dict[str, float], allocator: dict[str, float],
                          allocator_figure: str | None) -> dict:
    """The probe's device-memory figures from NVML's reading of this process at each phase
    (``before`` the runtime, after the ``runtime``'s start, after ``load`` and first
    inference, after the ``run``s) and the runner's ``memory_stats()``.

    ``model_device_mb``: the larger of the load and run readings above the runtime's (CUDA
    context, libraries, pools), as the host figure is the model's above the initialised
    runtime. NVML reads memory the driver handed out (allocator reserves included, in 2 MB
    pages), so a model that only reuses the runtime's pools reads 0. ``allocator_peak_mb``:
    the framework allocator's own peak, where it exposes one (``allocator_figure``)."""
    figures: dict = {"nvml_mb": dict(nvml)}
    after = [nvml[p] for p in ("load", "run") if p in nvml]
    if "runtime" in nvml and after:
        figures["model_device_mb"] = max(0.0, max(after) - nvml["runtime"])
        figures["runtime_device_mb"] = nvml["runtime"] - nvml.get("before", 0.0)
    if allocator_figure and allocator_figure in allocator:
        figures["allocator_peak_mb"] = allocator[allocator_figure]
    figures["allocator"] = dict(allocator)
    return figures
