"""The report gaps found reading it in Chromium (issue 15): the metric that broke in a failed
cell, each message once, threshold marks, Δ under the latency floor, lean JUnit XML."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from infergate.plugin.results import _slim
from infergate.report.document import build_document
from infergate.report.html import render_html
from infergate.report.markdown import render_markdown
from tests.test_report import ENV, entry

MESSAGE = ("mlp-ort_cpu-int8: fail; 'logits': max_abs 0.2, rmse 0.05, cosine 0.99912, "
           "sqnr 12.3 dB, top1 1; broke sqnr 12.3 dB < min_sqnr_db 20")


def failed_on_sqnr():
    return entry("test_equivalence", "mlp", "ort_cpu", "int8", "failed",
                 f"AssertionError: {MESSAGE}\nassert <AccuracyVerdict fail>",
                 accuracy={"status": "fail", "message": MESSAGE,
                           "failures": ["logits: sqnr 12.3 dB < min_sqnr_db 20"],
                           "outputs": {"logits": {"cosine": 0.99912, "max_abs": 0.2}}})


def perf_entries():
    latency = {"p50_ms": 12.0, "min_ms": 11.0, "p99_ms": 14.0, "normalised": 3.1,
               "baseline": {"p50_ms": 10.0, "normalised": 3.0}, "delta_pct": 3.3,
               "threshold_pct": 10.0, "mode": "normalised", "verdict": "pass"}
    under_floor = {"p50_ms": 0.03, "baseline": {"p50_ms": 0.02, "normalised": 0.1},
                   "delta_pct": 50.0, "verdict": "insufficient"}
    return [entry("test_latency", "minilm_short", "ort_cpu", "fp32", "passed", latency=latency),
            entry("test_latency", "mlp", "ort_cpu", "fp32", "passed", latency=under_floor),
            entry("test_memory", "minilm_short", "ort_cpu", "fp32", "passed",
                  memory={"model_peak_mb": 75.0, "baseline_mb": 74.8, "limit_mb": 86.3,
                          "delta_pct": 0.3, "verdict": "pass"})]


def document(results):
    return build_document(results, {"tier": "smoke"}, ENV)


def test_a_failed_cell_names_the_metric_that_broke():
    doc = document([failed_on_sqnr()])
    html = render_html(doc)
    cell = re.search(r'<td class="c failed"[^>]*><a [^>]*>([^<]*)</a>', html).group(1)
    assert cell == "FAIL sqnr 12.3 dB"  # not the cosine, which passed
    assert "❌ sqnr 12.3 dB" in render_markdown(doc)


def test_each_failure_message_is_shown_once():
    html = render_html(document([failed_on_sqnr()]))
    details = html[html.index('<section id="details"'):]
    assert details.count("broke sqnr 12.3 dB &lt; min_sqnr_db 20") == 1


def test_plots_mark_the_thresholds():
    html = render_html(document(perf_entries()))
    marks = re.findall(r'<line class="threshold"[^>]*><title>threshold ([^<]*)</title>', html)
    assert "11 (+10 %; gated on the normalised figure)" in marks  # 10 ms baseline + 10 %
    assert "86.3 MB (the gate&#x27;s limit)" in marks


def test_delta_under_the_latency_floor_is_not_shown_as_gated():
    doc = document(perf_entries())
    for text in (render_html(doc), render_markdown(doc)):
        assert "not gated (under the latency floor)" in text
        assert "+50.0 %" not in text
        assert "+3.3 %" in text


def test_junit_properties_leave_the_raw_samples_to_results_json():
    data = json.dumps({"latency": {"p50_ms": 1.0, "samples_ms": [1.0] * 500,
                                   "processes": [{"p50_ms": 1.0}] * 5}})
    slim = json.loads(_slim(data))
    assert slim["latency"]["samples_ms"] == "[500 values: see results.json]"
    assert slim["latency"]["processes"] == [{"p50_ms": 1.0}] * 5 and len(_slim(data)) < 200


def test_junit_xml_is_lean_and_results_json_keeps_every_sample(project, pytester):
    pytester.makepyfile(test_samples="""
        def test_samples(combo, record):
            record(latency={"p50_ms": 1.0, "samples_ms": [1.25] * 500})
    """)
    junit = pytester.path / "junit.xml"
    result, data = project("--models", "mlp", "--backends", "torch", "--precisions", "fp32",
                           f"--junitxml={junit}", tests=("test_samples.py",))
    assert result.ret == 0
    assert data["results"][0]["latency"]["samples_ms"] == [1.25] * 500
    properties = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    recorded = json.loads(properties["infergate.data"])
    assert recorded["latency"] == {"p50_ms": 1.0,
                                   "samples_ms": "[500 values: see results.json]"}
    assert junit.stat().st_size < 3000
