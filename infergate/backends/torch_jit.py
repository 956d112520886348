"""TorchScript: ``torch.jit.trace`` then ``torch.jit.freeze``, run by the TorchScript
interpreter. Deprecated since PyTorch 2.x in favour of torch.export: kept because deployed
models still use it, and skipped with that reason once a torch release removes it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings
from pathlib import Path

from infergate.backends.base import Backend, Runner
from infergate.backends.torch_eager import TorchRunner, convert_module, to_torch, torch_dtype
from infergate.progress import step

DEPRECATION = ("TorchScript is deprecated in PyTorch 2.x (torch.jit.trace warns: switch to "
               "torch.compile or torch.export)")


# Where torch defines them; read from its files, since importing torch to look would cost the
# collection of the whole matrix a second.
_JIT_SOURCES = ("_trace.py", "_freeze.py")


def _jit_removed() -> bool:
    """Whether the installed torch no longer ships torch.jit.trace and torch.jit.freeze."""
    found = importlib.util.find_spec("torch")
    folder = Path(found.origin).parent / "jit"
    return not all((folder / name).is_file() for name in _JIT_SOURCES)


class TorchJit(Backend):
    name = "torch_jit"
    description = f"torch.jit.trace + freeze, CPU; {DEPRECATION}"
    precisions = ("fp32", "fp16", "bf16")
    tier = "full"
    requires = ("torch",)

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        reason = super().unavailable_reason(precision)
        if reason is None and _jit_removed():
            reason = (f"{self.name}: this torch ({importlib.metadata.version('torch')}) has no "
                      f"torch.jit.trace/freeze; {DEPRECATION}, and has been removed")
        return reason

    def prepare(self, subject, precision: str) -> Runner:
        import torch

        label = self.label(subject, precision)
        module = convert_module(subject.module, precision)
        example = to_torch(subject.inputs(seed=0), torch_dtype(precision))
        with step(f"{label}: torch.jit.trace + freeze"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is deprecated.*", category=Warning)
            # strict=False: a dict output is traced as it is; check_trace would run the
            # model twice more to compare, which the equivalence test does properly.
            traced = torch.jit.trace(module, example_kwarg_inputs=example, strict=False,
                                     check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
        runner = TorchRunner(label, subject.spec.outputs, frozen, torch_dtype(precision))
        runner.settings["deprecated"] = DEPRECATION
        return runner
