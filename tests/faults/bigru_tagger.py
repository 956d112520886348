"""A real native crash, not a planted one: a bidirectional GRU sequence tagger exported to
ONNX and converted to fp16 segfaults inside ONNX Runtime's CPU provider (1.32, measured:
SIGSEGV on its first inference). fp32 runs fine."""

import torch
from torch import nn

from infergate.spec import Dim, ModelSpec, input_generator

VOCAB, EMBED, HIDDEN, TAGS = 1000, 32, 64, 9


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.gru = nn.GRU(EMBED, HIDDEN, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * HIDDEN, TAGS)

    def forward(self, tokens):
        states, _ = self.gru(self.embed(tokens))
        return (self.head(states),)


def build(store):
    torch.manual_seed(0)
    return Tagger().eval()


def make_inputs(batch: int, seed: int, seq: int) -> dict:
    return {"tokens": torch.randint(0, VOCAB, (batch, seq), generator=input_generator(seed))}


SPEC = ModelSpec(name="bigru_tagger", build=build, make_inputs=make_inputs, outputs=("tags",),
                 description="embedding -> bidirectional GRU (64) -> per-token tags",
                 dims={"batch": Dim(1, 16, 4), "seq": Dim(2, 64, 16)},
                 dynamic_axes={"tokens": {0: "batch", 1: "seq"}})
