"""A 2-layer ViT classifier on 32x32 RGB images (8x8 patches), its ImageClassifierOutput out."""

from infergate.spec import Dim, ModelSpec, input_generator


def build(store):
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
                       num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                       num_labels=10)
    return ViTForImageClassification(config).eval()


def make_inputs(batch: int, seed: int) -> dict:
    import torch

    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=input_generator(seed))}


SPEC = ModelSpec(
    name="image_classifier",
    description="2-layer ViT (hidden 64, 8x8 patches) classifying 32x32 RGB images into 10",
    build=build,
    make_inputs=make_inputs,
    outputs=("logits",),
    logits=("logits",),
    dims={"batch": Dim(1, 8, 2)},
    dynamic_axes={"pixel_values": {0: "batch"}},
)
