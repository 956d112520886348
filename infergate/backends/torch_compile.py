"""torch.compile (inductor), on CUDA when there is a GPU, else on CPU.

One run uses one device, so the id stays ``torch_compile``; ``INFERGATE_TORCH_COMPILE_DEVICE``
(``cpu`` | ``cuda``) overrides the choice and ``runner.settings["device"]`` records it.
Compiles are slow on CPU (~47 s for ResNet-50 on 2 cores), so this backend runs in the full
tier and points inductor's own on-disk cache at ours.
"""

from __future__ import annotations

import os
from pathlib import Path

from infergate.backends.base import Backend, Runner
from infergate.backends.cuda import cuda_unavailable_reason
from infergate.backends.torch_cuda import TorchCudaRunner
from infergate.backends.torch_eager import TorchRunner, convert_module, tiny_module, torch_dtype
from infergate.progress import step

DEVICE_ENV = "INFERGATE_TORCH_COMPILE_DEVICE"
DEVICES = ("cpu", "cuda")


def use_inductor_cache(cache_dir: Path) -> None:
    """Inductor's FX-graph and kernel caches are content-keyed; keeping them in our cache dir
    makes a warm run skip codegen. A user's own setting wins. Before inductor first runs: it
    fixes its cache dir then."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir) / "inductor"))


def compile_device() -> str:
    """The device torch_compile runs on: the override if set, else cuda when available."""
    chosen = os.environ.get(DEVICE_ENV, "").strip().lower()
    if chosen:
        return chosen
    return "cpu" if cuda_unavailable_reason() else "cuda"


class _CompilesOnActivate:
    def __init__(self, label, output_names, module, input_dtype, warmup_feed):
        super().__init__(label, output_names, module, input_dtype)
        self.warmup_feed = warmup_feed

    def activate_impl(self):
        super().activate_impl()
        self.settings["inductor_cache"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        self.settings.setdefault("device", "cpu")
        # The first call compiles; do it here so run() is warm inference only.
        with step(f"{self.label}: torch.compile (inductor, {self.settings['device']})"):
            self.run_impl(self.warmup_feed)


class CompiledRunner(_CompilesOnActivate, TorchRunner):
    pass


class CompiledCudaRunner(_CompilesOnActivate, TorchCudaRunner):
    """TF32 pinned off before the compile, so inductor's fp32 kernels are fp32."""


RUNNERS = {"cpu": CompiledRunner, "cuda": CompiledCudaRunner}


class TorchCompile(Backend):
    name = "torch_compile"
    precisions = ("fp32", "bf16")
    tier = "full"
    requires = ("torch",)

    @property
    def device(self) -> str:
        return compile_device()

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        device = compile_device()
        if device not in DEVICES:
            return (f"{self.name}: {DEVICE_ENV}={device!r} is not one of "
                    f"{', '.join(DEVICES)}")
        reason = super().unavailable_reason(precision)
        if not reason and device == "cuda" and cuda_unavailable_reason():
            reason = f"{self.name}: {DEVICE_ENV}=cuda but {cuda_unavailable_reason()}"
        return reason

    def prepare(self, subject, precision: str) -> Runner:
        import torch

        device = compile_device()
        use_inductor_cache(subject.store.root)
        module = convert_module(subject.module, precision).to(device)
        module = torch.compile(module, backend="inductor")
        return RUNNERS[device](self.label(subject, precision), subject.spec.outputs, module,
                               torch_dtype(precision), subject.inputs(seed=0))

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir: Path | None = None) -> dict:
        """A tiny Linear + ReLU compiled by inductor and run on the compile device: dynamo
        and inductor imported, their caches and compile workers set up. Measured on an Intel
        Xeon 2-core guest (CPU): 135-150 MB and 4 s with inductor's cache warm (13 s cold),
        which the model's first compile paid before; the MLP then costs 33 MB."""
        import torch

        if cache_dir is not None:
            use_inductor_cache(cache_dir)
        if threads is not None:
            torch.set_num_threads(threads)
        device = compile_device()
        module, x = tiny_module(precision)
        compiled = torch.compile(module.to(device), backend="inductor")
        with torch.inference_mode():
            compiled(x.to(device))
        if device == "cuda":
            torch.cuda.synchronize()
        self._runtime = compiled
        return {"workload": f"tiny Linear+ReLU at {precision}, inductor on {device}",
                "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
