"""A model whose forward returns a dict: its outputs are taken by name."""

import torch
from _layers import classifier_head
from torch import nn

from infergate.spec import Dim, ModelSpec, input_generator


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(16, 48), nn.Tanh())
        self.classes = classifier_head(48, 3)
        self.score = nn.Linear(48, 1)

    def forward(self, features):
        hidden = self.encoder(features)
        return {"score": self.score(hidden), "logits": self.classes(hidden)}


def build(store) -> nn.Module:
    torch.manual_seed(1)
    return TwoHeads().eval()


def make_inputs(batch: int, seed: int) -> dict:
    return {"features": torch.randn(batch, 16, generator=input_generator(seed))}


SPEC = ModelSpec(
    name="two_heads",
    description="16-48 encoder with a class head and a score head, returning a dict",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits", "score"),
    logits=("logits",),
    dims={"batch": Dim(1, 16, 4)},
    dynamic_axes={"features": {0: "batch"}},
)
