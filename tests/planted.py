"""Planted divergences: small models, clean in eager mode, that go wrong in one inner module
only while exported or only while compiled (issue 13). Module-level specs, so worker
processes find them by (module, name).

Every model has the same architecture and seeded weights; only ``blocks.1.fc`` differs, and
only in the traced code path:

    embed (Linear 8->32) -> blocks.0 -> blocks.1 -> blocks.2 -> head (Linear 32->4)
    block: x + tanh(fc(norm(x)))   (norm: LayerNorm, fc: Linear 32->32)
"""

import torch
from torch import nn

from infergate.spec import Dim, ModelSpec, input_generator

PLANTED_AT = "blocks.1.fc"
SCALE = 1.001  # a 0.1 % error: what a wrong epsilon or a dropped scale does
WIDTH = 32


# torch.export traces with is_compiling() true too: "compile" excludes exporting, so the
# compile-only twin exports clean.
_TRACING = {"export": torch.compiler.is_exporting,
            "compile": lambda: torch.compiler.is_compiling() and not torch.compiler.is_exporting()}


class PlantedLinear(nn.Linear):
    """A Linear whose output is scaled while ``when`` holds: "export" or "compile"."""

    def __init__(self, features: int, when: str | None):
        super().__init__(features, features)
        self.when = when

    def forward(self, x):
        y = super().forward(x)
        return y * SCALE if self.when is not None and _TRACING[self.when]() else y


class Block(nn.Module):
    def __init__(self, when: str | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.fc = PlantedLinear(WIDTH, when)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


class PlantedNet(nn.Module):
    def __init__(self, when: str | None):
        super().__init__()
        self.embed = nn.Linear(8, WIDTH)
        self.blocks = nn.Sequential(Block(), Block(when), Block())
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x):
        return (self.head(self.blocks(self.embed(x))),)


def _build(when: str | None) -> nn.Module:
    torch.manual_seed(0)  # the same weights in every twin
    return PlantedNet(when).eval()


def build_clean(store):
    return _build(None)


def build_export_scale(store):
    return _build("export")


def build_compile_scale(store):
    return _build("compile")


def make_inputs(batch: int, seed: int) -> dict:
    return {"x": torch.randn(batch, 8, generator=input_generator(seed))}


def _spec(name: str, build, description: str) -> ModelSpec:
    return ModelSpec(name=name, build=build, make_inputs=make_inputs, outputs=("features",),
                     dims={"batch": Dim(1, 16, 4)}, dynamic_axes={"x": {0: "batch"}},
                     description=description)


CLEAN = _spec("planted_clean", build_clean,
              "planted-divergence twin: the same network with nothing planted")
EXPORT_SCALE = _spec("planted_export_scale", build_export_scale,
                     f"{PLANTED_AT} x{SCALE} only while exporting (torch.compiler.is_exporting)")
COMPILE_SCALE = _spec("planted_compile_scale", build_compile_scale,
                      f"{PLANTED_AT} x{SCALE} only while compiling "
                      f"(torch.compiler.is_compiling)")
