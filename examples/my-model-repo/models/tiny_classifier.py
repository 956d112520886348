"""A small classifier whose forward returns one tensor, as most models do."""

import torch
from _layers import classifier_head
from torch import nn

from infergate.spec import Dim, ModelSpec, input_generator


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(32, 64), nn.ReLU())
        self.head = classifier_head(64, 5)

    def forward(self, features):
        return self.head(self.body(features))


def build(store) -> nn.Module:
    torch.manual_seed(0)
    return TinyClassifier().eval()


def make_inputs(batch: int, seed: int) -> dict:
    return {"features": torch.randn(batch, 32, generator=input_generator(seed))}


SPEC = ModelSpec(
    name="tiny_classifier",
    description="32-64-64-5 classifier returning a tensor",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 16, 4)},
    dynamic_axes={"features": {0: "batch"}},
)
