"""torch_export's package loads where the model's Python is absent (issue 24, defect 1): a
Hugging Face model returning a ``ModelOutput`` is flattened at export, so a probe that never
imported transformers can load it."""

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("transformers")

from infergate.backends.torch_export import exported  # noqa: E402
from infergate.build.artifacts import ArtifactStore  # noqa: E402
from infergate.build.subject import ModelUnderTest  # noqa: E402
from infergate.spec import Dim, ModelSpec, input_generator  # noqa: E402


def build(store):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32)
    return BertModel(config).eval()


def make_inputs(batch: int, seed: int) -> dict:
    ids = torch.randint(0, 64, (batch, 8), generator=input_generator(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


SPEC = ModelSpec(name="tiny_bert", build=build, make_inputs=make_inputs,
                 outputs=("last_hidden_state", "pooler_output"),
                 dims={"batch": Dim(1, 8, 2)},
                 dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}})


def test_a_model_output_is_flattened_so_the_program_loads_without_transformers(tmp_path):
    subject = ModelUnderTest(SPEC, ArtifactStore(tmp_path / "cache"))
    program = exported(subject, "fp32")
    assert "transformers" not in str(program.call_spec.out_spec)
    torch.export.save(program, tmp_path / "program.pt2")
    feed = subject.inputs(seed=1, batch=3)
    torch.save({k: torch.from_numpy(v) for k, v in feed.items()}, tmp_path / "feed.pt")
    expected = subject.module(**torch.load(tmp_path / "feed.pt"))
    script = textwrap.dedent(f"""
        import sys, torch
        program = torch.export.load({str(tmp_path / "program.pt2")!r})
        outputs = program.module()(**torch.load({str(tmp_path / "feed.pt")!r}))
        assert "transformers" not in sys.modules
        torch.save(outputs, {str(tmp_path / "out.pt")!r})
        """)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    hidden, pooled = torch.load(tmp_path / "out.pt")
    torch.testing.assert_close(hidden, expected.last_hidden_state)
    torch.testing.assert_close(pooled, expected.pooler_output)
