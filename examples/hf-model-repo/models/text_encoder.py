"""A 2-layer DistilBERT sentence classifier: token ids and an attention mask in (int64, both
with a dynamic batch and sequence length), its SequenceClassifierOutput out."""

from infergate.spec import Dim, ModelSpec, input_generator

VOCAB = 1000


def build(store):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=VOCAB, dim=64, hidden_dim=128, n_layers=2, n_heads=4,
                              max_position_embeddings=64, num_labels=3)
    return DistilBertForSequenceClassification(config).eval()


def make_inputs(batch: int, seed: int, sequence: int) -> dict:
    import torch

    ids = torch.randint(0, VOCAB, (batch, sequence), generator=input_generator(seed))
    mask = torch.ones_like(ids)
    mask[:, sequence * 3 // 4:] = 0  # padded tails: the mask changes the answer
    return {"input_ids": ids, "attention_mask": mask}


SPEC = ModelSpec(
    name="text_encoder",
    description="2-layer DistilBERT (dim 64) classifying a padded 16-token batch into 3 classes",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 8, 2), "sequence": Dim(4, 32, 16)},
    dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                  "attention_mask": {0: "batch", 1: "sequence"}},
)
