"""PyTorch eager on CPU: the reference, and the "no worse than PyTorch" yardstick."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

from infergate.backends.base import Backend, Runner
from infergate.backends.warmup import FEATURES, tiny_feed
from infergate.build.model_outputs import check_inputs, named_outputs

if TYPE_CHECKING:  # torch and numpy load when a runner is built, not when the matrix is
    import numpy as np
    import torch

# precision -> the torch dtype's name (torch.float32, ...)
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype a module and its floating inputs take at ``precision``."""
    import torch

    return getattr(torch, DTYPE_NAMES[precision])


def convert_module(module: torch.nn.Module, precision: str) -> torch.nn.Module:
    """A copy of ``module`` at ``precision``; the original stays fp32 for the reference."""
    import torch

    module = copy.deepcopy(module)
    if precision == "int8_dynamic":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8).eval()
    return module.to(torch_dtype(precision)).eval()


def input_dtype(precision: str) -> torch.dtype:
    """The dtype floating inputs take at ``precision`` (int8_dynamic quantizes inside)."""
    return torch_dtype("fp32" if precision == "int8_dynamic" else precision)


def tiny_module(precision: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """``warmup.tiny_onnx``'s graph as a module at ``precision``, and an input for it: the
    trivial workload torch backends initialise their runtime with."""
    import torch

    with torch.random.fork_rng(devices=[]):  # a model's own seeding must see the same RNG
        module = torch.nn.Sequential(torch.nn.Linear(FEATURES, FEATURES), torch.nn.ReLU())
    return (convert_module(module.eval(), precision),
            torch.from_numpy(tiny_feed()["x"]).to(input_dtype(precision)))


def to_torch(feed: Mapping[str, np.ndarray], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating inputs follow the module's dtype; ids and masks keep theirs."""
    import numpy as np
    import torch

    tensors = {}
    for name, value in feed.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        tensors[name] = t.to(dtype) if t.is_floating_point() else t
    return tensors


def host_tensor(out: torch.Tensor) -> torch.Tensor:
    """An output numpy can take: half and bfloat16 widened to float32, float64, integers and
    bools kept (see ``base.host_array``)."""
    import torch

    return out.float() if out.is_floating_point() and out.dtype != torch.float64 else out


class TorchRunner(Runner):
    def __init__(self, label, output_names, module, input_dtype):
        super().__init__(label, output_names)
        self.module = module
        self.input_dtype = input_dtype

    def activate_impl(self):
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self.settings["threads"] = torch.get_num_threads()

    def run_impl(self, feed):
        import torch

        with torch.inference_mode():
            try:
                outputs = self.module(**to_torch(feed, self.input_dtype))
            except TypeError:
                check_inputs(self.label, self.module, feed, {})
                raise
        return {name: host_tensor(out).numpy()
                for name, out in named_outputs(self.label, self.output_names, outputs).items()}

    def deactivate_impl(self):
        self.module = None


class TorchEager(Backend):
    name = "torch"
    precisions = ("fp32", "fp16", "bf16", "int8_dynamic")
    requires = ("torch",)

    def prepare(self, subject, precision: str) -> Runner:
        module = convert_module(subject.module, precision)
        return TorchRunner(self.label(subject, precision), subject.spec.outputs, module,
                           input_dtype(precision))

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir=None) -> dict:
        """The intra-op pool at ``threads`` and a tiny Linear + ReLU at ``precision`` (the
        first matmul initialises the BLAS/oneDNN kernels; int8_dynamic, the quantized
        engine). Measured on an Intel Xeon 2-core guest: 3-4 MB, most of it libtorch_cpu's code
        paged in."""
        import torch

        del cache_dir
        if threads is not None:
            torch.set_num_threads(threads)
        module, x = tiny_module(precision)
        with torch.inference_mode():
            module(x)
        return {"workload": f"tiny Linear+ReLU at {precision}, eager",
                "threads": torch.get_num_threads()}
