"""Embedding -> GRU -> linear sequence classifier, seeded random init: the recurrent case,
where exporters must keep the sequence length dynamic through a loop. (torch is imported
inside the functions: see ``mlp``.)"""

from infergate.models import ORT_DYNAMIC_INT8_WITHOUT_VNNI
from infergate.spec import Dim, ModelSpec, input_generator

VOCAB, EMBED, HIDDEN, CLASSES = 1000, 32, 64, 4


def build(store):
    import torch
    from torch import nn

    class GruClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMBED)
            self.gru = nn.GRU(EMBED, HIDDEN, num_layers=1, batch_first=True)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, tokens):
            _, last = self.gru(self.embed(tokens))  # last: (num_layers, batch, hidden)
            return (self.head(last[-1]),)

    torch.manual_seed(0)
    return GruClassifier().eval()


def make_inputs(batch: int, seed: int, seq: int) -> dict:
    import torch

    gen = input_generator(seed)
    return {"tokens": torch.randint(0, VOCAB, (batch, seq), generator=gen)}


SPEC = ModelSpec(
    name="gru",
    description="embedding -> 1-layer GRU (64) -> linear, 4 classes, seeded init",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 16, 4), "seq": Dim(2, 64, 16)},
    dynamic_axes={"tokens": {0: "batch", 1: "seq"}},
    tier="smoke",
    unsupported={("torch_export", p): "torch.export specializes nn.GRU's sequence length to "
                                      "the example's (16): 'Constraints violated (seq)', so no "
                                      "package serves the declared seq range (torch 2.13)"
                 for p in ("fp32", "bf16")},
    known_failures={("ort_cpu", "int8_dynamic"): ORT_DYNAMIC_INT8_WITHOUT_VNNI},
)
