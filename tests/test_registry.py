"""Model registry, spec validation, matrix selection and test ids."""

import sys

import pytest

from infergate import models
from infergate.accuracy.precision import PRECISIONS, Override
from infergate.matrix import Selection, SelectionError, _host_isa
from infergate.models import all_models
from infergate.spec import Dim, SpecError, WithoutIsa
from tests.conftest import make_tiny_spec


def test_registry_has_the_issue_models():
    names = set(all_models())
    assert {"mlp", "digits_cnn", "minilm", "resnet50", "gpt2", "gru"} <= names
    assert {s.tier for s in all_models().values()} == {"smoke", "full"}


@pytest.mark.parametrize("changes,problem", [
    ({"name": "Bad-Name"}, "lower_snake_case"),
    ({"tier": "nightly"}, "tier 'nightly'"),
    ({"dims": {"seq": Dim(1, 4, 2)}}, "'batch'"),
    ({"dims": {"batch": Dim(4, 2, 3)}}, "min <= default <= max"),
    ({"dynamic_axes": {"x": {1: "seq"}}}, "undeclared dim 'seq'"),
    ({"logits": ("nope",)}, "unknown output 'nope'"),
    ({"tolerances": {"int8": Override(reason=" ")}}, "with a reason"),
    ({"tolerances": {"int4": Override(reason="x")}}, "unknown precision"),
    ({"tolerances": {"int8": Override(reason="x", max_mismatch=2)}}, "fraction of elements"),
    ({"make_inputs": lambda n, seed: {}}, "cannot be called as make_inputs(batch=, seed=)"),
    ({"make_inputs": lambda batch, seed: {}, "dims": {"batch": Dim(1, 2, 1), "seq": Dim(1, 2, 1)},
      "dynamic_axes": {}}, "make_inputs(batch=, seed=, seq=): got an unexpected keyword"),
    ({"known_failures": {("ort_cpu", "fp16"): ""}}, "needs a reason"),
    ({"known_failures": {"ort_cpu": "x"}}, "(backend, precision)"),
])
def test_malformed_spec_is_a_clear_error(changes, problem):
    with pytest.raises(SpecError, match="ModelSpec") as info:
        make_tiny_spec(**changes)
    assert problem in str(info.value)


def test_malformed_spec_error_names_its_file(monkeypatch, tmp_path):
    package = tmp_path / "infergate_fake_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(
        "from tests.conftest import make_tiny_spec\nSPEC = make_tiny_spec(tier='weekly')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError) as info:
        models._load("infergate_fake_models.broken")
    assert str(package / "broken.py") in str(info.value)
    assert "tier 'weekly'" in str(info.value)
    sys.modules.pop("infergate_fake_models.broken", None)
    sys.modules.pop("infergate_fake_models", None)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(SelectionError, match="--infergate-models: unknown 'resnet51'.*"
                                                "valid: .*resnet50"):
        Selection.parse("mlp,resnet51", None, None, "smoke")
    with pytest.raises(SelectionError, match="--infergate-backends: unknown 'trt'"):
        Selection.parse(None, "trt", None, "smoke")
    with pytest.raises(SelectionError, match="--infergate-precisions: unknown 'int4'"):
        Selection.parse(None, None, "int4", "smoke")
    with pytest.raises(SelectionError, match="--infergate-tier"):
        Selection.parse(None, None, None, "nightly")


def test_ids_and_tiers():
    smoke = Selection.parse(None, None, None, "smoke").combinations()
    full = Selection.parse(None, None, None, "full").combinations()
    ids = [c.id for c in full]
    assert len(ids) == len(set(ids))
    assert "minilm-ort_cpu-int8_dynamic" in ids
    assert all(c.tier == "smoke" for c in smoke)
    assert {c.id for c in smoke} < set(ids)
    assert not any(c.backend.name == "torch_compile" for c in smoke)
    for combo in full:
        model, backend, precision = combo.id.split("-")
        assert (model, backend, precision) == (combo.spec.name, combo.backend.name,
                                               combo.precision)
        assert precision in PRECISIONS and precision in combo.backend.precisions


def test_explicit_selection_overrides_tier():
    combos = Selection.parse("resnet50", "torch_compile", "fp32", "smoke").combinations()
    assert [c.id for c in combos] == ["resnet50-torch_compile-fp32"]


def test_known_failures_become_xfail_and_unsupported_are_not_generated(monkeypatch):
    spec = make_tiny_spec(known_failures={("ort_cpu", "fp16"): "no fp16 kernel"},
                          unsupported={("torch", "fp16"): "no CPU kernel"})
    monkeypatch.setattr("infergate.matrix.all_models", lambda: {"tiny": spec})
    combos = {c.id: c for c in Selection.parse(None, None, None, "full").combinations()}
    assert combos["tiny-ort_cpu-fp16"].xfail == "no fp16 kernel"
    assert "tiny-torch-fp16" not in combos
    assert combos["tiny-torch-fp32"].xfail is None


@pytest.mark.parametrize("vnni, xfail", [
    (" avx512_vnni", None),  # the combination must pass there
    ("", "saturates without VNNI"),
])
def test_a_known_failure_of_cpus_without_an_isa_is_an_xfail_only_there(
        monkeypatch, tmp_path, vnni, xfail):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(
        f"processor\t: {n}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        f"model name\t: AMD EPYC\nstepping\t: 1\ncache size\t: 1024 KB\n"
        f"flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl{vnni}\n\n"
        for n in range(2)))
    monkeypatch.setenv("INFERGATE_CPUINFO", str(cpuinfo))
    monkeypatch.setattr("infergate.matrix._host_isa", _host_isa.__wrapped__)  # uncached
    spec = make_tiny_spec(known_failures={("ort_cpu", "int8_dynamic"): WithoutIsa(
        isa=("avx512_vnni", "avx_vnni"), reason="saturates without VNNI")})
    monkeypatch.setattr("infergate.matrix.all_models", lambda: {"tiny": spec})
    combos = {c.id: c for c in Selection.parse(None, "ort_cpu", "int8_dynamic", "full")
              .combinations()}
    assert combos["tiny-ort_cpu-int8_dynamic"].xfail == xfail
