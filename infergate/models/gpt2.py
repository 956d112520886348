"""GPT-2 small (12 layers, 768 wide, transformers' GPT2LMHeadModel), seeded random init:
next-token logits of a decoder-only LM without a KV cache. (torch is imported inside the
functions: see ``mlp``.)"""

from infergate.models import ZOO
from infergate.spec import Dim, ModelSpec, input_generator

VOCAB = 50257  # GPT2Config's default vocabulary


def build(store):
    import torch
    from torch import nn
    from transformers import GPT2Config, GPT2LMHeadModel

    class NextTokenLogits(nn.Module):
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids):
            # Only the last position: the full (batch, seq, 50257) logits would dominate time
            # and memory of every comparison while adding nothing a decoder step uses.
            return (self.lm(input_ids=input_ids, use_cache=False).logits[:, -1, :],)

    # Eager attention: explicit MatMul/Softmax in the exported graph, and it runs in float64.
    config = GPT2Config(use_cache=False, attn_implementation="eager")
    torch.manual_seed(0)
    return NextTokenLogits(GPT2LMHeadModel(config)).eval()


def make_inputs(batch: int, seed: int, seq: int) -> dict:
    import torch

    gen = input_generator(seed)
    return {"input_ids": torch.randint(0, VOCAB, (batch, seq), generator=gen)}


SPEC = ModelSpec(
    name="gpt2",
    requires={"transformers": ZOO},
    description="GPT-2 small LM head, seeded init, next-token logits, no KV cache",
    build=build,
    make_inputs=make_inputs,
    outputs=("next_token_logits",),
    logits=("next_token_logits",),
    dims={"batch": Dim(1, 8, 2), "seq": Dim(4, 128, 16)},
    dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
    tier="full",
)
