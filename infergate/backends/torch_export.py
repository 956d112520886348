"""torch.export then AOTInductor: the model compiled ahead of time into a ``.pt2`` package,
loaded and run without the Python model (what PyTorch recommends for deployment without
Python). Compiles take a minute or more on 2 cores, so it runs in the full tier; the package
is cached like an ONNX export."""

from __future__ import annotations

import hashlib
import sys

from infergate.backends.base import Backend, Runner
from infergate.backends.torch_compile import use_inductor_cache
from infergate.backends.torch_eager import TorchRunner, convert_module, to_torch, torch_dtype
from infergate.build.artifacts import code_digest, versions
from infergate.environment import cpu_flags
from infergate.progress import step

PACKAGE = "model.pt2"


def flat_outputs(module, inputs, names: tuple[str, ...], label: str):
    """``module`` returning its outputs as a tuple in the spec's order, called by its input
    names. The package's output tree is then a builtin tuple, so it loads where the model's
    Python was never imported: a Hugging Face model's ``ModelOutput`` once made every probe
    (a fresh process without transformers) fail to load the package it had built."""
    import inspect

    import torch

    from infergate.build.model_outputs import named_outputs

    def forward(self, **feed):
        found = named_outputs(label, names, self.inner(**feed))
        return tuple(found[name] for name in names)

    # torch.export binds inputs and their dynamic shapes by the signature it reads.
    keyword = inspect.Parameter.KEYWORD_ONLY
    forward.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, keyword) for name in inputs])
    flat = type("FlatOutputs", (torch.nn.Module,), {"forward": forward})()
    flat.inner = module
    return flat


def exported(subject, precision: str):
    """The model at ``precision`` as torch.export traces it for the package."""
    import torch

    from infergate.build.onnx_export import dynamic_shapes

    feed = subject.inputs(seed=0)
    module = flat_outputs(convert_module(subject.module, precision), feed,
                          subject.spec.outputs, f"{subject.spec.name}-torch_export-{precision}")
    return torch.export.export(module, (), kwargs=to_torch(feed, torch_dtype(precision)),
                               dynamic_shapes=dynamic_shapes(subject.spec, feed))


def aoti_package(subject, precision: str):
    """The cached AOTInductor package of ``subject`` at ``precision``. Its kernels are built
    for this CPU's vector ISA, so the key has the CPU's flags."""
    def build(tmp):
        import torch

        torch._inductor.aoti_compile_and_package(exported(subject, precision),
                                                 package_path=str(tmp / PACKAGE))

    isa = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    key = {"model": subject.spec.name, "fingerprint": subject.fingerprint,
           "precision": precision, "builder": code_digest(sys.modules[__name__]), "cpu_flags": isa,
           **versions("torch")}
    use_inductor_cache(subject.store.root)
    folder = subject.store.get("aoti", key, build,
                               f"compiling {subject.spec.name} ({precision}) with AOTInductor")
    return folder / PACKAGE


class TorchExport(Backend):
    name = "torch_export"
    description = "torch.export + AOTInductor package (.pt2), CPU, run without the Python model"
    precisions = ("fp32", "bf16")
    tier = "full"
    requires = ("torch",)
    # Packages are compiled for the host's ISA (AVX-512 here), which valgrind's virtual CPU
    # lacks; not measured under callgrind yet.
    uncountable = ("an AOTInductor package is compiled for this CPU's vector ISA, which "
                   "valgrind's virtual CPU may not have (not yet measured under callgrind)")

    def prepare(self, subject, precision: str) -> Runner:
        import torch

        label = self.label(subject, precision)
        path = aoti_package(subject, precision)
        with step(f"{label}: loading the AOTInductor package"):
            loaded = torch._inductor.aoti_load_package(str(path))
        runner = TorchRunner(label, subject.spec.outputs, loaded, torch_dtype(precision))
        runner.settings["package"] = str(path)
        return runner
