"""A model whose forward returns a dict: its outputs are taken by name."""

from infergate.spec import Dim, ModelSpec, input_generator


def build(store):
    import torch
    from _layers import TwoHeads

    torch.manual_seed(1)
    return TwoHeads().eval()


def make_inputs(batch: int, seed: int) -> dict:
    import torch

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
