"""A project's own models (issue 14): model files and folders, the ini key, the entry-point
group; they replace the built-in models in the default selection and reach worker processes."""

from __future__ import annotations

import importlib.metadata
import textwrap
from dataclasses import replace

import pytest
import torch

from infergate import models
from infergate.matrix import Selection
from infergate.spec import SpecError

MODEL = textwrap.dedent('''
    import torch
    from infergate.spec import Dim, ModelSpec, input_generator

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.linear(x)

    def build(store):
        torch.manual_seed(0)
        return Affine().eval()

    def make_inputs(batch, seed):
        return {"x": torch.randn(batch, 6, generator=input_generator(seed))}

    SPEC = ModelSpec(name=NAME, build=build, make_inputs=make_inputs, outputs=("y",),
                     dims={"batch": Dim(1, 8, 2)}, dynamic_axes={"x": {0: "batch"}})
    ''')


def model_file(folder, name: str, stem: str | None = None):
    path = folder / f"{stem or name}.py"
    path.write_text(f"NAME = {name!r}\n" + MODEL)
    return path


@pytest.fixture(autouse=True)
def _registry_as_it_was():
    yield
    models.use_model_files([])


def test_a_folder_of_model_files_replaces_the_built_in_models_by_default(tmp_path):
    model_file(tmp_path, "alpha")
    model_file(tmp_path, "beta")
    (tmp_path / "_helpers.py").write_text("raise RuntimeError('a helper is not a model')\n")
    models.use_model_files([tmp_path])
    assert models.project_models() == ("alpha", "beta")
    assert {"alpha", "beta", "mlp"} <= set(models.all_models())
    default = {c.spec.name for c in Selection.parse(None, "torch", "fp32", "smoke").combinations()}
    assert default == {"alpha", "beta"}
    named = {c.spec.name for c in Selection.parse("mlp,alpha", "torch", "fp32",
                                                  "smoke").combinations()}
    assert named == {"mlp", "alpha"}  # a built-in model is still there by name


def test_a_model_named_like_a_built_in_one_is_an_error_naming_both(tmp_path):
    path = model_file(tmp_path, "mlp", stem="my_mlp")
    models.use_model_files([path])
    with pytest.raises(SpecError, match=rf"{path}: model name 'mlp' is already taken by "
                                        rf"infergate's built-in 'mlp'"):
        models.all_models()


def test_a_missing_model_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(SpecError, match=rf"{tmp_path / 'nope.py'}: model file not found"):
        models.use_model_files([tmp_path / "nope.py"])


def test_a_model_from_the_entry_point_group(tmp_path, monkeypatch):
    model_file(tmp_path, "gamma", stem="gamma_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [importlib.metadata.EntryPoint("gamma", "gamma_pkg:SPEC", models.ENTRY_POINTS),
              importlib.metadata.EntryPoint("gamma_module", "gamma_pkg", models.ENTRY_POINTS)]
    monkeypatch.setattr(models.importlib.metadata, "entry_points",
                        lambda group: points[:1] if group == models.ENTRY_POINTS else [])
    models.use_model_files([])
    assert models.project_models() == ("gamma",)
    # A module defining SPEC does as well; the same model twice is an error naming both.
    monkeypatch.setattr(models.importlib.metadata, "entry_points",
                        lambda group: points if group == models.ENTRY_POINTS else [])
    models.use_model_files([])
    with pytest.raises(SpecError, match=r"entry point gamma_module = 'gamma_pkg'.*already taken "
                                        r"by entry point gamma = 'gamma_pkg:SPEC'"):
        models.all_models()


def test_model_files_from_the_command_line_and_the_ini_run_in_worker_processes(project,
                                                                               pytester):
    """The default isolation runs each combination in a worker process, which finds the model
    by its file; the ini key and the option add up."""
    model_file(pytester.path, "from_ini", stem="ini_model")
    (pytester.path / "elsewhere").mkdir()
    given = model_file(pytester.path / "elsewhere", "from_option", stem="model")
    pytester.makeini("[pytest]\ninfergate_model_files = ini_model.py\n")
    result, data = project("--infergate-model-file", str(given), "--infergate-backends",
                           "torch,ort_cpu", "--infergate-precisions", "fp32")
    assert result.ret == 0, result.stdout.str()[-3000:]
    outcomes = {e["id"]: e["outcome"] for e in data["results"]}
    assert outcomes == dict.fromkeys(
        [f"{m}-{b}-fp32" for m in ("from_ini", "from_option") for b in ("torch", "ort_cpu")],
        "passed")


def _usage_errors(project, path, isolation) -> tuple[list[str], dict]:
    """The run of the model file ``path`` on three backends, which must end in a usage error:
    its ERROR lines and results.json."""
    result, data = project("--infergate-model-file", str(path), "--infergate-backends",
                           "torch,ort_cpu,openvino", "--infergate-precisions", "fp32",
                           "--infergate-isolation", isolation)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-3000:]
    return [line for line in result.stderr.lines if line.startswith("ERROR:")], data


@pytest.mark.parametrize("isolation", ["process", "off"])
def test_outputs_not_matching_forward_end_the_run_with_one_usage_error(project, pytester,
                                                                       isolation):
    """Only running the model shows it: the first test that does ends the session with one
    usage error naming the file and the field, not a failure per combination."""
    path = model_file(pytester.path, "two_for_one")
    path.write_text(path.read_text().replace("return self.linear(x)",
                                             "return self.linear(x), x"))
    errors, data = _usage_errors(project, path, isolation)
    assert errors == [f"ERROR: {path}: ModelSpec 'two_for_one': outputs: the model's forward "
                      "returned a tuple of 2 tensors; its ModelSpec declares outputs ['y']: "
                      "forward must return one tensor, a tuple of tensors in that order, or a "
                      "dict with exactly those names (nested levels joined with '.')"], errors
    assert len(data["results"]) == 1  # the first combination showed it; the rest never ran


@pytest.mark.parametrize("isolation", ["process", "off"])
def test_inputs_forward_does_not_take_end_the_run_with_one_usage_error(project, pytester,
                                                                       isolation):
    """A make_inputs key the model does not take ('feature' for 'features') was 4 failures
    and 36 errors, each a TypeError from forward (issue 24, defect 4)."""
    path = model_file(pytester.path, "misnamed")
    path.write_text(path.read_text().replace('return {"x": torch', 'return {"feature": torch')
                    .replace('dynamic_axes={"x"', 'dynamic_axes={"feature"'))
    errors, data = _usage_errors(project, path, isolation)
    assert errors == [f"ERROR: {path}: ModelSpec 'misnamed': make_inputs: make_inputs gives "
                      "'feature', which forward(x) does not take; forward(x) needs 'x', which "
                      "make_inputs does not give"], errors
    assert len(data["results"]) == 1


def test_dynamic_axes_naming_an_input_make_inputs_lacks_is_named(tmp_path):
    from infergate.build.model_outputs import InputsMismatch, check_inputs

    class Model(torch.nn.Module):
        def forward(self, features, mask=None):
            return features

    with pytest.raises(InputsMismatch, match=r"m: dynamic_axes names 'feature', which "
                                             r"make_inputs does not give \(it gives "
                                             r"'features'\)"):
        check_inputs("m", Model(), ["features"], {"feature": {0: "batch"}})
    check_inputs("m", Model(), ["features", "mask"], {"features": {0: "batch"}})


def test_a_spec_is_said_to_be_defined_where_it_was_registered_or_where_its_build_is(tmp_path):
    path = model_file(tmp_path, "registered")
    models.use_model_files([path])
    assert models.defined_in(models.all_models()["registered"]) == str(path)
    built_in = models.all_models()["mlp"]
    assert models.defined_in(built_in).endswith("infergate/models/mlp.py")
    # A spec the registry does not hold (a planted or replaced one) names its build's file.
    assert models.defined_in(replace(built_in, name="elsewhere")).endswith("models/mlp.py")
