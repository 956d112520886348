"""TorchScript: ``torch.jit.trace`` then ``torch.jit.freeze``, run by the TorchScript
interpreter. Deprecated since PyTorch 2.x in favour of torch.export: kept because deployed
models still use it, and skipped with that reason once a torch release removes it."""

from __future__ import annotations

import warnings

import torch

from infergate.backends.base import Backend, Runner
from infergate.backends.torch_eager import DTYPES, TorchRunner, convert_module, to_torch
from infergate.progress import step

DEPRECATION = ("TorchScript is deprecated in PyTorch 2.x (torch.jit.trace warns: switch to "
               "torch.compile or torch.export)")


class TorchJit(Backend):
    name = "torch_jit"
    description = f"torch.jit.trace + freeze, CPU; {DEPRECATION}"
    precisions = ("fp32", "fp16", "bf16")
    tier = "full"
    requires = ("torch",)

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        reason = super().unavailable_reason(precision)
        if reason is None and not all(hasattr(torch.jit, f) for f in ("trace", "freeze")):
            reason = f"{self.name}: this torch ({torch.__version__}) has no torch.jit.trace/" \
                     f"freeze; {DEPRECATION}, and has been removed"
        return reason

    def prepare(self, subject, precision: str) -> Runner:
        label = self.label(subject, precision)
        module = convert_module(subject.module, precision)
        example = to_torch(subject.inputs(seed=0), DTYPES[precision])
        with step(f"{label}: torch.jit.trace + freeze"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is deprecated.*", category=Warning)
            # strict=False: a dict output is traced as it is; check_trace would run the
            # model twice more to compare, which the equivalence test does properly.
            traced = torch.jit.trace(module, example_kwarg_inputs=example, strict=False,
                                     check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
        runner = TorchRunner(label, subject.spec.outputs, frozen, DTYPES[precision])
        runner.settings["deprecated"] = DEPRECATION
        return runner
