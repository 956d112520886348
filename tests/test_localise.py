"""Localisation (issue 13, item 4): the first layer where a backend diverges from PyTorch
eager, named by its torch module path."""

import math
import os
import re

import onnx
import pytest
from onnx import TensorProto, helper

from infergate.accuracy.localise import (
    GROWTH,
    Layer,
    Localisation,
    divergence_limit,
    first_divergent,
    localise,
    module_taps,
    rel_rmse,
    shown_rows,
)
from infergate.accuracy.precision import Tolerance
from infergate.backends import all_backends
from infergate.build.subject import ModelUnderTest
from infergate.isolation import WorkerPool, localise_in_worker
from infergate.report.document import build_document
from infergate.report.html import render_html
from tests import planted
from tests.conftest import REPO


def test_rel_rmse_and_its_edge_cases():
    assert rel_rmse([1.001, 2.002], [1.0, 2.0]) == pytest.approx(1e-3)
    assert rel_rmse([0.0], [0.0]) == 0.0
    assert rel_rmse([1e-9], [0.0]) == math.inf


def test_the_limit_is_the_tightest_the_tolerance_implies():
    assert divergence_limit(Tolerance(rtol=1e-3, min_cosine=0.99999)) == pytest.approx(1e-3)
    assert divergence_limit(Tolerance(min_cosine=0.99, min_sqnr_db=80)) == pytest.approx(1e-4)
    assert divergence_limit(Tolerance(min_cosine=0.995)) == pytest.approx(0.1)


@pytest.mark.parametrize(("errors", "first", "why"), [
    ([1e-7, 2e-7, 1e-3, 5e-4], 2, "over the 1.0e-04"),  # over the limit
    ([1e-7, 2e-7, 5e-5, 5e-4], 2, "250x the largest before it"),  # a jump under the limit
    ([0.0, 0.0, 5e-7, 2e-6], None, ""),  # exact layers, then rounding: the floor holds
    ([1e-7, 3e-7, 9e-7, 2.7e-6, 8e-6], None, ""),  # rounding growing 3x a layer
    ([1e-7, math.nan], 1, "not finite"),
])
def test_first_divergent_by_limit_or_growth(errors, first, why):
    found, said = first_divergent(errors, limit=1e-4, noise=2.0 ** -24)
    assert found == first and why in said


def test_the_table_stays_short_and_keeps_the_divergent_layer():
    rows = shown_rows(60, 40)
    assert len(rows) <= 12 and 40 in rows and 41 in rows and rows[:3] == [0, 1, 2]
    assert rows[-1] == 59 and None in rows
    assert shown_rows(5, None) == [0, 1, 2, 3, 4]


def _node(op, inputs, outputs, scopes):
    node = helper.make_node(op, inputs, outputs, name=f"node_{outputs[0]}")
    node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", *scopes]))
    return node


def test_a_modules_output_is_the_last_tensor_leaving_its_scope():
    """fc's scope ends at its Mul (consumed outside); block's at its Add; a node no scope
    tagged belongs to none."""
    nodes = [_node("MatMul", ["x", "w"], ["mm"], ["block", "block.fc", "mm"]),
             _node("Mul", ["mm", "s"], ["scaled"], ["block", "block.fc", "mul"]),
             _node("Tanh", ["scaled"], ["t"], ["block", "tanh"]),
             _node("Add", ["x", "t"], ["y"], ["block", "add"]),
             helper.make_node("Identity", ["y"], ["out"], name="untagged")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "g", [value("x", TensorProto.FLOAT, [2, 2])],
                              [value("out", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor("w", TensorProto.FLOAT, [2, 2], [1] * 4),
                               helper.make_tensor("s", TensorProto.FLOAT, [], [1.0])])
    onnx.checker.check_graph(graph)
    taps = module_taps(graph)
    assert {p: (t.tensor, t.node) for p, t in taps.items()} == {
        "block.fc": ("scaled", "node_scaled"), "block": ("y", "node_y")}


def test_the_message_names_the_layer_its_node_and_how_earlier_layers_agreed():
    layers = (Layer("embed", "node_linear", 1e-7), Layer("blocks.1.fc", "node_mul_14", 1e-3),
              Layer("output features", "", 3e-4))
    found = Localisation("m-ort_cpu-fp32", layers, 1, "over the 1.0e-04 ...", 1e-4, "ORT")
    text = str(found)
    assert text.startswith("first divergent layer: blocks.1.fc (onnx node node_mul_14): "
                           "rel RMSE 1.0e-03 (SQNR 60.0 dB), <= 1.0e-07 before it")
    assert re.search(r"\n  blocks\.1\.fc +node_mul_14 +1\.0e-03 +60\.0  <- first divergent\n", text)
    assert found.as_dict()["layers"][1] == ["blocks.1.fc", "node_mul_14", 1e-3]


def test_the_html_report_plots_the_error_curve_of_a_failed_combination():
    layers = (Layer("embed", "node_linear", 0.0), Layer("blocks.1.fc", "node_mul_14", 1e-3),
              Layer("output features", "", math.inf))
    found = Localisation("m-ort_cpu-fp32", layers, 1, "over the limit", 1e-4, "ORT")
    entry = {"test": "test_equivalence", "id": "m-ort_cpu-fp32", "model": "m",
             "backend": "ort_cpu", "precision": "fp32", "tier": "smoke", "outcome": "failed",
             "reason": "out of tolerance", "duration_s": 1.0, "localisation": found.as_dict()}
    page = render_html(build_document([entry], {"tier": "smoke"}, {}))
    plot = re.search(r'<svg class="localisation".*?</svg>', page).group(0)
    assert plot.count("<circle") == 3 and "<polyline" in plot
    assert 'r="5" fill="#c62828"><title>blocks.1.fc: 0.001</title>' in plot  # the divergent
    assert "first divergent: blocks.1.fc" in plot


def test_other_backends_say_localisation_is_not_available(store):
    subject = ModelUnderTest(planted.CLEAN, store)
    found = localise(subject, all_backends()["torch"], "fp32", {})
    assert found.note == "localisation not available for torch" and not found.layers


def test_a_failure_in_the_worker_is_a_line_not_an_exception(store, tiny_spec):
    ort = all_backends()["ort_cpu"]
    pool = WorkerPool()
    try:
        # The worker cannot find a spec that is not at a module's top level: it raises there.
        raised = localise_in_worker(pool, ModelUnderTest(tiny_spec, store), ort, "fp32", {},
                                    limit_s=60, label="tiny-ort_cpu-fp32")
        # A worker past its limit is killed: the same as one that crashed.
        killed = localise_in_worker(pool, ModelUnderTest(planted.CLEAN, store), ort, "fp32",
                                    {}, limit_s=0.01, label="clean-ort_cpu-fp32")
    finally:
        pool.close()
    assert raised.note.startswith("localisation failed: tiny-ort_cpu-fp32: localisation raised "
                                  "LookupError: no ModelSpec named 'tiny'")
    # Whether the worker said what it was doing before it was killed is a race: both read.
    assert re.fullmatch(r"localisation failed: timeout during localisation(, at '.*')?: no answer "
                        r"within its limit of 0\.01 s; the worker was killed.*", killed.note), \
        killed.note


PLANTED = {s.name: s for s in (planted.EXPORT_SCALE, planted.COMPILE_SCALE, planted.CLEAN)}


@pytest.mark.nightly  # 42-49 s on 2 cores: the pull-request CI's budget
def test_planted_divergences_are_named_by_module_path_end_to_end(project, monkeypatch):
    """A 0.1 % scale in ``blocks.1.fc`` only while exporting (ORT, OpenVINO) or only while
    compiling (torch.compile) fails fp32 (judged against fp64: allclose and cosine let it
    through) and is found there, through the worker; its clean twin passes."""
    for module in ("infergate.matrix", "infergate.workspace"):
        monkeypatch.setattr(f"{module}.all_models", lambda: PLANTED)
    wanted = ("planted_export_scale-ort_cpu-fp32", "planted_export_scale-openvino-fp32",
              "planted_compile_scale-torch_compile-fp32")
    clean = ("planted_clean-ort_cpu-fp32", "planted_clean-openvino-fp32")
    # The repo's artifact cache (exports, inductor's kernels): a cold run costs ~100 s here,
    # ~70 of them compiling, a warm one a fraction of that.
    cache = os.environ.get("INFERGATE_CACHE_DIR", str(REPO / ".cache/infergate"))
    result, data = project("--cache-dir", cache, "--models", ",".join(PLANTED),
                           "--precisions", "fp32",
                           "--backends", "ort_cpu,openvino,torch_compile",
                           "--infergate-localise", "-k", " or ".join(wanted + clean))
    results = {r["id"]: r for r in data["results"]}
    assert sorted(results) == sorted(wanted + clean)
    for combo in clean:
        assert results[combo]["outcome"] == "passed", results[combo].get("reason")
    for combo in wanted:
        found = results[combo]["localisation"]
        assert found["first"]["module"] == planted.PLANTED_AT, found["message"]
        assert found["first"]["rel_rmse"] == pytest.approx(planted.SCALE - 1, rel=0.05)
        errors = {module: error for module, _, error in found["layers"]}
        before = list(errors)[:list(errors).index(planted.PLANTED_AT)]
        # No false alarm before it: the layers up to it agree to rounding.
        assert before and max(errors[m] for m in before) < (planted.SCALE - 1) / GROWTH
        assert results[combo]["outcome"] == "failed"
        reason = results[combo]["reason"]
        assert "x PyTorch fp32's" in reason and "(allowed 10x)" in reason, reason
        assert f"first divergent layer: {planted.PLANTED_AT}" in reason
    assert results[wanted[0]]["localisation"]["first"]["node"].startswith("node_mul")
