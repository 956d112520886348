"""A model spec that is wrong fails with one message naming the file or the model."""

import re
from dataclasses import replace

import pytest
import torch

from infergate.build.model_outputs import OutputsMismatch, named_outputs
from infergate.models import _load, all_models
from infergate.spec import SpecError


def test_a_spec_missing_a_field_names_its_file(tmp_path, monkeypatch):
    (tmp_path / "broken_model.py").write_text(
        "from infergate.spec import ModelSpec\nSPEC = ModelSpec(name='broken', build=None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError, match=r"broken_model.py: importing it raised TypeError: .*"
                                        r"missing .*'make_inputs'"):
        _load("broken_model")


@pytest.mark.parametrize(("returned", "got"), [
    (lambda: {"logits": torch.zeros(2, 3)}, "outputs named ['logits']"),
    (lambda: {"logits": torch.zeros(1), "energy": (torch.zeros(1), torch.zeros(1))},
     "outputs named ['logits', 'energy.0', 'energy.1']"),
    (lambda: torch.zeros(4, 3), "one tensor of shape (4, 3)"),
    (lambda: (torch.zeros(1), 3), "int at '1', not a tensor"),
])
def test_a_forward_that_does_not_return_the_declared_tuple_is_one_clear_error(returned, got):
    with pytest.raises(OutputsMismatch, match=r"m-torch-fp32: the model's forward returned "
                                              rf"{re.escape(got)}.*"
                                              r"declares outputs \['logits', 'energy'\]"):
        named_outputs("m-torch-fp32", ("logits", "energy"), returned())


def test_one_tensor_for_one_declared_output_is_taken_as_it():
    out = named_outputs("m", ("logits",), torch.ones(2))
    assert list(out) == ["logits"]


def test_a_dict_is_taken_by_name_and_nested_outputs_by_flattened_name():
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    out = named_outputs("m", ("logits", "energy"), {"energy": b, "logits": a})
    assert list(out) == ["logits", "energy"] and out["logits"] is a
    out = named_outputs("m", ("logits", "hidden.0", "hidden.1"),
                        {"logits": a, "hidden": (b, c)})
    assert out["hidden.1"] is c
    assert list(named_outputs("m", ("x", "y", "z"), ((a, b), c))) == ["x", "y", "z"]


@pytest.mark.parametrize("where", ["build", "make_inputs"])
def test_a_spec_raising_in_build_or_make_inputs_errors_its_tests_naming_the_model(project,
                                                                                  monkeypatch,
                                                                                  where):
    def explode(*args, **kwargs):
        raise ValueError(f"{where} exploded")

    spec = replace(all_models()["mlp"], **{where: explode})
    for module in ("infergate.matrix", "infergate.workspace"):
        monkeypatch.setattr(f"{module}.all_models", lambda: {"mlp": spec})
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu", "--precisions",
                           "fp32", "--isolation", "off")
    assert {r["outcome"] for r in data["results"]} == {"error"}
    assert all(f"{where} exploded" in r["reason"] for r in data["results"])


def test_a_model_file_exiting_at_import_is_one_usage_error(project, pytester):
    """An unguarded `sys.exit(main())` in a model file was an INTERNALERROR with a traceback
    through the plugin (issue 25, fault 10)."""
    (pytester.path / "exits_model.py").write_text(
        "import sys\n\ndef main():\n    return 3\n\nsys.exit(main())\n")
    result = pytester.runpytest("--infergate-model-file", "exits_model.py",
                                "test_equivalence.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*exits_model.py: importing it called sys.exit(3); a script's "
                                 "entry point belongs under `if __name__ == \"__main__\":`"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
