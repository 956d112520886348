"""The pytest plugin end to end, in a scratch project: options, ids, outcomes, results.json."""

import json
from dataclasses import replace

import pytest

from infergate.backends import all_backends
from infergate.models import all_models
from infergate.revision import PROJECT


def test_unknown_model_is_a_usage_error_listing_valid_names(project):
    result, data = project("--models", "mlp,resnet51")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--models: unknown 'resnet51'; valid: mlp, *resnet50*"])
    assert data is None


def test_ids_outcomes_and_results_json(project):
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32,int8", "-v")
    # torch has no static int8: that combination is not generated at all.
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*test_equivalence?mlp-torch-fp32? PASSED*",
                                 "*test_equivalence?mlp-ort_cpu-fp32? PASSED*",
                                 "*test_equivalence?mlp-ort_cpu-int8? PASSED*"])
    assert data["schema"] == "infergate.results/1"
    assert {r["id"] for r in data["results"]} == {"mlp-torch-fp32", "mlp-ort_cpu-fp32",
                                                  "mlp-ort_cpu-int8"}
    entry = next(r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32")
    assert entry["outcome"] == "passed" and entry["backend"] == "ort_cpu"
    assert entry["accuracy"]["outputs"]["logits"]["cosine"] > 0.9999
    assert entry["settings"]["providers"] == ["CPUExecutionProvider"]
    assert "torch" in data["environment"]["libraries"]


def test_unavailable_backend_is_a_skip_with_its_reason(project, monkeypatch):
    monkeypatch.setattr(type(all_backends()["ort_cpu"]), "requires", ("onnxruntime_nope",))
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*'onnxruntime_nope' is not installed*"])
    assert data["results"][0]["outcome"] == "skipped"
    assert "onnxruntime_nope" in data["results"][0]["reason"]


def test_prepare_failure_is_an_error_naming_the_artifacts(project, monkeypatch):
    def broken(self, subject, precision):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(type(all_backends()["ort_cpu"]), "prepare", broken)
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")
    result.assert_outcomes(errors=1)
    entry = data["results"][0]
    assert entry["outcome"] == "error"
    assert "exporter exploded" in entry["reason"] and "artifacts" in entry["reason"]


def test_known_failure_is_strict_xfail(project, monkeypatch):
    spec = replace(all_models()["mlp"], known_failures={("torch", "fp32"): "pretend regression"})
    for module in ("infergate.matrix", "infergate.workspace"):
        monkeypatch.setattr(f"{module}.all_models", lambda: {"mlp": spec})
    result, data = project("--models", "mlp", "--backends", "torch", "--precisions", "fp32")
    # It passes, so the strict xfail turns into a failure: a fix must surface.
    result.assert_outcomes(failed=1)
    assert data["results"][0]["outcome"] == "failed"
    assert "XPASS(strict)" in data["results"][0]["reason"]


def test_performance_gate_end_to_end(project, pytester):
    """No baseline: skip + candidate. Update, rerun: pass. Slowed runner: fail with numbers."""
    select = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
              "--perf-min-time", "0.5", "--perf-threshold", "0.3", "--perf-latency-floor-ms", "0",
              "--baseline-processes", "3", "--perf-confirm", "2", "--benchmark-disable", "-rs")
    perf_tests = ("test_latency.py", "test_memory.py")
    result, _ = project(*select, tests=perf_tests)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no baseline for machine*--update-baselines*"])
    assert list((pytester.path / "out").glob("baseline-candidate-*.json"))

    result, _ = project(*select, "--update-baselines", tests=perf_tests)
    # Progress reaches the terminal past pytest's capture.
    result.stdout.fnmatch_lines(["[[]infergate[]] baseline round 3/3: mlp-ort_cpu-fp32"])
    stored = list((pytester.path / "baselines").glob("*.json"))
    assert len(stored) == 1
    entry = json.loads(stored[0].read_text())["entries"]["mlp/ort_cpu/fp32"]
    assert len(entry["latency"]["processes"]) == 3

    # Unchanged code: never a failure (a microsecond MLP may scatter too much to decide).
    result, data = project(*select, tests=perf_tests)
    result.assert_outcomes(passed=2)
    latency = next(r for r in data["results"] if r["test"] == "test_latency")
    assert latency["latency"]["verdict"] in ("pass", "improved", "insufficient")

    result, _ = project(*select, "--perf-slowdown", "1.0", tests=("test_latency.py",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlp-ort_cpu-fp32 normalised p50 +*% CI +*p=*threshold 30 %*"
                                 "(3 fresh processes vs 3 in the baseline)*"])


@pytest.mark.skipif(not (PROJECT / ".git").exists(), reason="not a git checkout")
def test_a_b_against_a_revision_end_to_end(project):
    """--perf-against: no stored baseline needed; a slowed tree fails against HEAD."""
    select = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
              "--perf-min-time", "0.5", "--perf-threshold", "0.3", "--perf-latency-floor-ms", "0",
              "--perf-confirm", "2", "--benchmark-disable", "-rs")
    result, _ = project(*select, "--perf-against", "no-such-rev", tests=("test_latency.py",))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-against 'no-such-rev': not a commit*"])

    # Under the default 1 ms floor: reported, not gated, and nothing of HEAD is measured.
    floored = [a for a in select if a not in ("--perf-latency-floor-ms", "0")]
    result, data = project(*floored, "--perf-against", "HEAD", tests=("test_latency.py",))
    result.assert_outcomes(passed=1)
    latency = data["results"][0]["latency"]
    assert latency["verdict"] == "insufficient" and latency["baseline"] is None
    assert "under the 1 ms floor" in data["results"][0]["perf_message"]

    result, data = project(*select, "--perf-against", "HEAD", "--perf-slowdown", "1.0",
                           tests=("test_latency.py",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlp-ort_cpu-fp32 normalised p50 +*% CI +*threshold 30 %*"
                                 "(3 fresh processes vs 3 of HEAD (*), alternating in this run)*"])
    assert data["results"][0]["latency"]["against"].startswith("HEAD (")
