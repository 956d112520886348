"""torch.compile (inductor) on CPU. Compiles are slow here (~47 s for ResNet-50 on 2 cores),
so this backend runs in the full tier and points inductor's own on-disk cache at ours."""

from __future__ import annotations

import os

import torch

from infergate.backends.base import Backend, Runner
from infergate.backends.torch_eager import DTYPES, TorchRunner, convert_module
from infergate.progress import step


class CompiledRunner(TorchRunner):
    def __init__(self, label, output_names, module, input_dtype, warmup_feed):
        super().__init__(label, output_names, module, input_dtype)
        self.warmup_feed = warmup_feed
        self.settings["inductor_cache"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

    def activate_impl(self):
        # The first call compiles; do it here so run() is warm inference only.
        with step(f"{self.label}: torch.compile (inductor)"):
            self.run_impl(self.warmup_feed)


class TorchCompile(Backend):
    name = "torch_compile"
    precisions = ("fp32", "bf16")
    tier = "full"
    requires = ("torch",)

    def prepare(self, subject, precision: str) -> Runner:
        # Inductor's FX-graph and kernel caches are content-keyed; keeping them in our cache
        # dir makes a warm run skip codegen. A user's own setting wins.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(subject.store.root / "inductor"))
        module = torch.compile(convert_module(subject.module, precision), backend="inductor")
        return CompiledRunner(self.label(subject, precision), subject.spec.outputs, module,
                              DTYPES[precision], subject.inputs(seed=0))
