"""Self-test helpers: a tiny model spec, and a throwaway artifact store."""

import pytest
import torch
from torch import nn

from infergate.artifacts import ArtifactStore
from infergate.spec import Dim, ModelSpec


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h), h.sum(dim=-1, keepdim=True)


def build_tiny(store):
    torch.manual_seed(0)
    return Tiny().eval()


def tiny_inputs(batch, seed):
    return {"x": torch.randn(batch, 6, generator=torch.Generator().manual_seed(seed))}


def make_tiny_spec(**changes):
    fields = dict(name="tiny", build=build_tiny, make_inputs=tiny_inputs,
                  outputs=("logits", "energy"), logits=("logits",),
                  dims={"batch": Dim(1, 8, 3)}, dynamic_axes={"x": {0: "batch"}})
    fields.update(changes)
    return ModelSpec(**fields)


@pytest.fixture(scope="session")
def tiny_spec():
    return make_tiny_spec()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))
