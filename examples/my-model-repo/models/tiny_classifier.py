"""A small classifier whose forward returns one tensor, as most models do.

torch and the network are imported inside ``build`` and ``make_inputs``: the registry imports
this file to list the matrix, and a top-level ``import torch`` would add its 2 s to every
collection."""

from infergate.spec import Dim, ModelSpec, input_generator


def build(store):
    import torch
    from _layers import TinyClassifier

    torch.manual_seed(0)
    return TinyClassifier().eval()


def make_inputs(batch: int, seed: int) -> dict:
    import torch

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
