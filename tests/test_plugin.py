"""The pytest plugin end to end, in a scratch project: options, ids, outcomes, results.json."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from infergate.backends import all_backends
from infergate.models import all_models
from infergate.perf import instructions
from infergate.perf.deterministic import NOISE_TARGET, NOISE_TARGET_INSTRUCTIONS
from infergate.perf.revision import PROJECT
from tests.test_model_files import model_file


def test_unknown_model_is_a_usage_error_listing_valid_names(project):
    result, data = project("--models", "mlp,resnet51")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-models: unknown 'resnet51'; valid: mlp, *resnet50*"])
    assert data is None


def test_every_option_is_prefixed_and_help_renders(project, pytester):
    del project  # only its conftest, which loads the plugins
    result = pytester.runpytest("--help")
    assert result.ret == 0
    group = result.stdout.str().split("infergate: model x backend x precision matrix:", 1)[1]
    group = group.split("\n\n", 1)[0]
    first_names = [line.split()[0] for line in group.splitlines() if line.startswith("  --")]
    assert len(first_names) > 20
    assert all(n.startswith("--infergate-") for n in first_names), first_names


def test_ids_outcomes_and_results_json(project):
    # --infergate-models, and the unprefixed --backends of earlier releases, said as deprecated.
    result, data = project("--infergate-models", "mlp", "--backends", "torch,ort_cpu",
                           "--infergate-precisions", "fp32,int8", "-v")
    result.stdout.fnmatch_lines(["infergate: --backends is deprecated, use "
                                 "--infergate-backends*"])
    assert "--models is deprecated" not in result.stdout.str()
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
    # In this process: a worker would import the unpatched backend (tests/faults covers it).
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "--isolation", "off")
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


def test_performance_gate_end_to_end(project, pytester, controlled_timings):
    """No baseline: skip + candidate. Update, rerun: pass. Slowed by +60 %: fail with numbers.

    Real fresh probe processes and baseline files, controlled timings (conftest.py): the
    verdicts are the gate's on known figures, not the shared runner's load of the moment."""
    controlled_timings()
    # 5 baseline processes (the default): with fewer, a single current process cannot rule
    # out +30 % at 99.9 % once the 3 % run spread is added, and the verdict stays undecided.
    select = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
              "--perf-min-time", "0.1", "--perf-threshold", "0.3", "--perf-confirm", "2",
              "--perf-wall-time", "gate", "--benchmark-disable", "-rs")
    perf_tests = ("test_latency.py", "test_memory.py")
    result, _ = project(*select, tests=perf_tests)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no baseline for machine*--infergate-update-baselines*"])
    # A newcomer's many skips, explained once at the end.
    result.stdout.fnmatch_lines(["infergate: 2 performance tests skipped for want of a baseline "
                                 "(this machine: *); take them with*--infergate-perf-against*"])
    assert list((pytester.path / "out").glob("baseline-candidate-*.json"))

    result, _ = project(*select, "--update-baselines", tests=perf_tests)
    # Progress reaches the terminal past pytest's capture.
    result.stdout.fnmatch_lines(["[[]infergate[]] baseline round 5/5: mlp-ort_cpu-fp32"])
    stored = list((pytester.path / "baselines").glob("*.json"))
    assert len(stored) == 1
    entry = json.loads(stored[0].read_text())["entries"]["mlp/ort_cpu/fp32"]
    assert len(entry["latency"]["processes"]) == 5

    # Unchanged code passes, judged (its p50 is over the default 1 ms floor). pytest-benchmark
    # gets the probe's figures too, through its public API, and its own CLI compares runs.
    timed = [a for a in select if a != "--benchmark-disable"]
    runs = [pytester.path / f"benchmark-{n}.json" for n in ("unchanged", "slowed")]
    result, data = project(*timed, f"--benchmark-json={runs[0]}", tests=perf_tests)
    result.assert_outcomes(passed=2)
    latency = next(r for r in data["results"] if r["test"] == "test_latency")
    assert latency["latency"]["verdict"] == "pass", latency["perf_message"]
    measured = latency["latency"]

    result, data = project(*timed, "--perf-slowdown", "0.6", f"--benchmark-json={runs[1]}",
                           tests=("test_latency.py",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlp-ort_cpu-fp32 normalised p50 +*% CI +*p=*threshold 30 %*"
                                 "(3 fresh processes vs 5 in the baseline)*"])
    latency = data["results"][0]["latency"]
    assert latency["verdict"] == "regressed"
    assert latency["normalised_delta_pct"] == pytest.approx(60, abs=2)
    (unchanged,), (slowed,) = (json.loads(run.read_text())["benchmarks"] for run in runs)
    assert unchanged["params"] == {"combo": "mlp-ort_cpu-fp32"}
    assert unchanged["options"]["timer"] == "infergate.replay"
    # One round per measured block of `loops` calls, as pytest-benchmark times fast code.
    stats = unchanged["stats"]
    assert (stats["rounds"], stats["iterations"]) == (len(measured["samples_ms"]),
                                                      measured["loops"])
    assert unchanged["extra_info"]["p50_ms"] == pytest.approx(2.0)  # the controlled p50
    assert slowed["extra_info"]["p50_ms"] == pytest.approx(3.2, rel=0.02)
    compared = subprocess.run([Path(sys.executable).parent / "pytest-benchmark", "compare",
                               *map(str, runs)], capture_output=True, text=True, check=True)
    assert compared.stdout.count("test_latency[mlp-ort_cpu-fp32]") == 2, compared.stdout

    # The smoke tier's default does not collect wall-time tests, and says so once...
    default = [a for a in select if a not in ("--perf-wall-time", "gate")]
    result, _ = project(*default, tests=("test_latency.py",))
    result.assert_outcomes()
    result.stdout.fnmatch_lines(["infergate: 1 wall-time tests not collected in the smoke tier*"
                                 "--infergate-perf-wall-time report*", "*1 deselected*"])
    # ...and `report` measures them without gating: a skip with the verdict.
    reported = [a if a != "gate" else "report" for a in select]
    result, data = project(*reported, "--perf-slowdown", "0.6", tests=("test_latency.py",))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*wall time reported, not gated in the smoke tier*regressed*"
                                 "normalised p50 +*"])
    assert data["results"][0]["latency"]["verdict"] == "regressed"


@pytest.mark.skipif(not (PROJECT / ".git").exists(), reason="not a git checkout")
@pytest.mark.nightly  # 37 s; the example repository's two A/B tests stay in the PR's CI
def test_a_b_against_a_revision_end_to_end(project, controlled_timings):
    """--perf-against: no stored baseline needed; unchanged code passes against HEAD at the
    default 10 % threshold, a tree slowed by +30 % fails."""
    select = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
              "--perf-min-time", "0.1", "--perf-confirm", "2", "--benchmark-disable", "-rs")
    result, _ = project(*select, "--perf-against", "no-such-rev", tests=("test_latency.py",))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-perf-against 'no-such-rev': not a commit*"])

    # Real timings: the MLP's tens of microseconds are under the default 1 ms floor:
    # reported, not gated, and nothing of HEAD is measured.
    result, data = project(*select, "--perf-against", "HEAD", tests=("test_latency.py",))
    result.assert_outcomes(skipped=1)  # undecided: a skip naming why, never a pass
    latency = data["results"][0]["latency"]
    assert latency["verdict"] == "insufficient" and latency["baseline"] is None
    assert "under the 1 ms floor" in data["results"][0]["perf_message"]

    # Controlled timings from here on (conftest.py), over the floor.
    probes = controlled_timings()
    result, data = project(*select, "--perf-against", "HEAD", tests=("test_latency.py",))
    result.assert_outcomes(passed=1)
    latency = data["results"][0]["latency"]
    assert latency["verdict"] == "pass", data["results"][0]["perf_message"]
    assert latency["against"].startswith("HEAD (")
    # Both sides ran as fresh processes: this tree's code and HEAD's extract.
    theirs = [source for source, *_ in probes if source != PROJECT]
    assert theirs and all(source.match("revisions/*/src") for source in theirs)
    assert len(theirs) == len(probes) - len(theirs)

    probes.clear()
    result, data = project(*select, "--perf-against", "HEAD", "--perf-slowdown", "0.3",
                           tests=("test_latency.py",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlp-ort_cpu-fp32 normalised p50 +*% CI +*threshold 10 %*"
                                 "(3 fresh processes vs 3 of HEAD (*), alternating in this run)*"])
    latency = data["results"][0]["latency"]
    assert latency["verdict"] == "regressed"
    assert latency["normalised_delta_pct"] == pytest.approx(30, abs=2)
    # The slowdown is injected into this tree's probes only, never into HEAD's.
    assert {(source == PROJECT, slowdown) for source, slowdown, *_ in probes} == {
        (True, 0.3), (False, 0.0)}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.nightly  # 42-49 s on 2 cores: the pull-request CI's budget
def test_a_b_of_a_project_s_own_model_against_its_repository_s_revision(
        project, pytester, controlled_timings):
    """With model files of its own, --perf-against checks out their repository (here the
    scratch project's) and times the model file's committed copy with this same infergate;
    a model the revision does not have yet is a skip saying so."""
    (pytester.path / "models").mkdir()
    path = model_file(pytester.path / "models", "affine")
    git = ("git", "-C", str(pytester.path), "-c", "user.name=t", "-c", "user.email=t@t")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "models"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "affine"], check=True)
    model_file(pytester.path / "models", "added_since")
    probes = controlled_timings()
    result, data = project("--infergate-model-file", str(path.parent), "--backends", "ort_cpu",
                           "--precisions", "fp32", "--perf-min-time", "0.1", "--perf-confirm",
                           "2", "--benchmark-disable", "--perf-against", "HEAD", "-rs",
                           tests=("test_latency.py",))
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*added_since-ort_cpu-fp32: HEAD (*) has no such combination*"])
    # pytest-benchmark is disabled, and does not say the fixture went unused.
    assert "fixture was not used" not in result.stdout.str()
    verdict, = (r for r in data["results"] if r["id"] == "affine-ort_cpu-fp32")
    assert verdict["latency"]["verdict"] == "pass", verdict["perf_message"]
    assert verdict["latency"]["against"].startswith("HEAD (")
    # Both sides ran with this infergate; the revision's from its copy of the model file.
    theirs = [r["model_file"] for *_, r in probes if "model_file" in r]
    assert theirs and {Path(f).relative_to(Path(f).parents[2]) for f in theirs} == {
        Path("src/models/affine.py")}
    assert all(source == PROJECT for source, *_ in probes)
    ours = [r for *_, r in probes if r["model"] == "affine" and "model_file" not in r]
    assert len(theirs) == len(ours)


def test_a_skip_names_the_update_command_with_the_paths_typed_not_an_option_s_value(
        project, pytester):
    """The command a no-baseline skip gives runs where it is read: the test paths as typed,
    not the value of an option that happens to name an existing folder."""
    (pytester.path / "bl").mkdir()
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "--infergate-baselines-dir", "bl", tests=("test_memory.py",))
    result.assert_outcomes(skipped=1)
    assert ("create one with `pytest test_memory.py --infergate-update-baselines`"
            in data["results"][0]["reason"]), data["results"][0]["reason"]


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
def test_instruction_gate_end_to_end(project, pytester):
    """Real callgrind counts of a small model on ONNX Runtime (whose allocator once needed a
    declared scatter): the update takes three processes and judges what it writes, unchanged
    code passes at the default threshold, an injected slowdown (real GEMM work) fails with
    its numbers, confirmed in three processes. Deterministic: counts do not depend on the
    runner's load."""
    select = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32", "-rA",
              "-p", "no:randomly", "--benchmark-disable")
    result, _ = project(*select, "--update-baselines", tests=("test_instructions.py",))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["baseline taken: mlp-ort_cpu-fp32 instructions/inference "
                                 "+0.00 %*"])
    result.stdout.fnmatch_lines(["infergate: 1 instruction-count entries written to *"])
    stored = list((pytester.path / "baselines").glob("callgrind-*.json"))
    assert len(stored) == 1
    entry = json.loads(stored[0].read_text())["entries"]["mlp/ort_cpu/fp32"]
    counted = entry["instructions"]
    assert len(counted["processes"]) == instructions.BASELINE_PROCESSES
    # The noise target; beside another process ORT's cheapest call moved 0.1 % (288
    # instructions) here.
    low, high = min(counted["processes"]), max(counted["processes"])
    assert high - low <= max(NOISE_TARGET * low, NOISE_TARGET_INSTRUCTIONS), counted["processes"]
    # The runtime's own cost of a call (the tiny graph), counted beside the model.
    assert 0 < counted["floor"] < counted["per_inference"]
    assert counted["valgrind"] == instructions.valgrind_version()
    assert counted["functions"] and counted["graph_ops"]["Gemm"] >= 1
    assert entry["heap"]["run_peak_bytes"] > entry["heap"]["build_peak_bytes"] / 10 > 0

    # An entry without its heap figure: instructions still judge, the heap says what is missing
    # (it read "no instruction-count baseline ... create one" beside an entry that has one).
    whole = json.loads(stored[0].read_text())
    del whole["entries"]["mlp/ort_cpu/fp32"]["heap"]
    stored[0].write_text(json.dumps(whole))
    result, data = project(*select, tests=("test_instructions.py", "test_memory.py"))
    result.assert_outcomes(passed=1, skipped=1)
    verdicts = {r["test"]: r for r in data["results"]}
    assert verdicts["test_instructions"]["instructions"]["verdict"] == "pass"
    assert "mlp/ort_cpu/fp32 in " in verdicts["test_memory"]["reason"]
    assert "has no heap figure" in verdicts["test_memory"]["reason"]
    assert "no instruction-count baseline" not in verdicts["test_memory"]["reason"]

    # +50 %: smaller fractions round to no whole GEMM unit on so small a model.
    result, data = project(*select, "--perf-slowdown", "0.5", tests=("test_instructions.py",))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*mlp-ort_cpu-fp32 instructions/inference +*% (*k → *k, "
                                 "threshold *% of the model's own *k above the runtime's *k "
                                 "a call*, noise *% from 3+3 processes); moved most: *"])
    counted = data["results"][0]["instructions"]
    assert counted["verdict"] == "regressed" and len(counted["processes"]) == 3
