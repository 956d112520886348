"""784 -> 128 -> 10 ReLU classifier: the classic seed example, seeded random init.

torch is imported inside the functions, as in every model here: the registry imports each
model file to list the matrix, and collecting it must not wait a second for torch."""

from infergate.models import ORT_DYNAMIC_INT8_WITHOUT_VNNI
from infergate.spec import Dim, ModelSpec, input_generator


def build(store):
    import torch
    from torch import nn

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

        def forward(self, pixels):
            return (self.net(pixels),)

    torch.manual_seed(0)
    return Mlp().eval()


def make_inputs(batch: int, seed: int) -> dict:
    import torch

    gen = input_generator(seed)
    # Normalised pixels in [0, 1], like flattened MNIST.
    return {"pixels": torch.rand(batch, 784, generator=gen)}


SPEC = ModelSpec(
    name="mlp",
    description="784-128-10 ReLU MLP, seeded init",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 64, 8)},
    dynamic_axes={"pixels": {0: "batch"}},
    tier="smoke",
    known_failures={("ort_cpu", "int8_dynamic"): ORT_DYNAMIC_INT8_WITHOUT_VNNI},
)
