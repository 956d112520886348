"""A backend that crashes, aborts, is killed or hangs costs its own tests, never the run."""

import json
import os
import subprocess
import sys

import pytest

from infergate.backends import all_backends
from infergate.models import all_models
from infergate.spec import Timeouts
from tests.conftest import REPO


def by_id(results):
    return {r["id"]: r for r in results}


@pytest.mark.parametrize(("fault", "at", "signal", "step"), [
    ("segfault", "run", "SIGSEGV", "first inference"),
    ("segfault", "prepare", "SIGSEGV", "prepare"),
    ("abort", "activate", "SIGABRT", "activate"),
    ("kill", "run", "SIGKILL", "first inference"),
])
def test_a_native_crash_is_one_crashed_verdict_and_the_run_goes_on(project, plant, fault, at,
                                                                   signal, step):
    plant(fault, at)
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32,fp16")
    results = by_id(data["results"])
    for precision in ("fp32", "fp16"):
        crashed = results[f"mlp-ort_cpu-{precision}"]
        assert crashed["outcome"] == "crashed", crashed
        failure = crashed["child_failure"]
        assert signal in failure["detail"] and failure["step"].startswith(step)
        assert f"-k 'test_equivalence and mlp-ort_cpu-{precision}'" in failure["reproduce"]
        assert signal in crashed["reason"]
    assert results["mlp-torch-fp32"]["outcome"] == "passed"
    assert data["summary"]["crashed"] == 2
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_hang_is_a_timeout_verdict_within_its_limit(project, plant):
    plant("hang", "run", timeouts=Timeouts(reason="fault test: a hang must end fast",
                                           first_run_s=3))
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32")
    hung = by_id(data["results"])["mlp-ort_cpu-fp32"]
    assert hung["outcome"] == "timeout"
    assert "limit of 3 s" in hung["reason"] and "first inference" in hung["reason"]
    assert hung["duration_s"] < 30
    assert by_id(data["results"])["mlp-torch-fp32"]["outcome"] == "passed"


@pytest.mark.parametrize(("fault", "said"), [
    ("raise", "RuntimeError: exporter exploded"),
    # an installed backend package whose native library does not load
    ("broken_import", "ImportError: libonnxruntime_providers_shared.so: cannot open"),
])
def test_an_exception_in_the_worker_is_an_error_with_the_workers_traceback(project, plant,
                                                                          fault, said):
    plant(fault, "prepare")
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")
    entry = data["results"][0]
    assert entry["outcome"] == "error"
    assert said in entry["reason"]
    result.stdout.fnmatch_lines(["*in the worker:*", "*injected.py*"])


@pytest.mark.parametrize("at", ["prepare", "activate", "run"])
def test_the_model_s_exception_is_an_error_at_whichever_step(project, plant, at):
    """The same exception was 'error' from prepare and 'failed' from the first inference
    (issue 24, defect 3): 'failed' is a broken verdict's, an exception is an error."""
    plant("raise", at)
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32")
    raised = by_id(data["results"])["mlp-ort_cpu-fp32"]
    assert raised["outcome"] == "error", raised
    assert "exporter exploded" in raised["reason"]
    assert by_id(data["results"])["mlp-torch-fp32"]["outcome"] == "passed"
    result.assert_outcomes(passed=1, errors=1)


def test_a_crashed_xdist_worker_leaves_a_crashed_result_not_a_null_one(project, pytester):
    """Without isolation a native crash takes the xdist worker with it; the test it ran is
    'crashed' in results.json and the reports, as pytest counts it failed."""
    # xdist workers build their own registry: the fault goes in through the scratch conftest.
    conftest = pytester.path / "conftest.py"
    # Only in the scratch run's xdist workers: this conftest is also imported here, where
    # PYTEST_XDIST_WORKER is set too when the self-tests run under xdist.
    conftest.write_text(conftest.read_text() + (
        "\nimport os\n"
        f"if os.environ.get('PYTEST_XDIST_WORKER') and os.getpid() != {os.getpid()}:\n"
        f"    import sys\n    sys.path.insert(0, {str(REPO)!r})\n"
        "    import infergate.matrix\n    from tests.faults.injected import faulty_backend\n"
        "    _planted = {**infergate.matrix.all_backends(), "
        "'ort_cpu': faulty_backend('segfault', 'run')()}\n"
        "    infergate.matrix.all_backends = lambda: _planted\n"))
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32", "--isolation", "off", "-n", "2")
    results = by_id(data["results"])
    assert results["mlp-ort_cpu-fp32"]["outcome"] == "crashed"
    assert "never finished" in results["mlp-ort_cpu-fp32"]["reason"]
    assert results["mlp-torch-fp32"]["outcome"] == "passed"
    assert data["summary"]["crashed"] == 1 and data["summary"]["error"] == 0
    result.assert_outcomes(passed=1, failed=1)


def test_a_real_onnx_runtime_segfault_is_one_crashed_verdict(project, monkeypatch):
    """The field case: the bidirectional GRU tagger at fp16 segfaults inside ONNX Runtime."""
    from tests.faults.bigru_tagger import SPEC

    for module in ("infergate.matrix", "infergate.workspace"):
        monkeypatch.setattr(f"{module}.all_models", lambda: {"bigru_tagger": SPEC})
    result, data = project("--models", "bigru_tagger", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32,fp16")
    results = by_id(data["results"])
    crashed = results["bigru_tagger-ort_cpu-fp16"]
    assert crashed["outcome"] == "crashed"
    # ORT dies creating the session (InferenceSession), after the fp16 conversion.
    assert "SIGSEGV" in crashed["reason"] and "during activate" in crashed["reason"]
    assert "Fatal Python error: Segmentation fault" in crashed["child_failure"]["stderr_tail"]
    assert {results[i]["outcome"] for i in ("bigru_tagger-torch-fp32", "bigru_tagger-torch-fp16",
                                             "bigru_tagger-ort_cpu-fp32")} == {"passed"}
    assert (result.ret, data["run"]["complete"]) == (pytest.ExitCode.TESTS_FAILED, True)


def test_a_missing_weights_package_is_an_error_naming_it(project, monkeypatch):
    from tests.faults.specs import MISSING_WEIGHTS as spec

    for module in ("infergate.matrix", "infergate.workspace"):
        monkeypatch.setattr(f"{module}.all_models", lambda: {"mlp": spec})
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")
    assert data["results"][0]["outcome"] == "error"
    assert "No module named 'gt_weights_not_installed'" in data["results"][0]["reason"]


def test_no_home_ci_set_and_no_stdin_change_nothing(project, pytester, monkeypatch):
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setenv("CI", "true")
    result = pytester.run(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--reports-dir=out",
        "--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
        "test_equivalence.py", stdin=subprocess.DEVNULL, timeout=600)
    assert result.ret == pytest.ExitCode.OK
    assert json.loads((pytester.path / "out" / "results.json").read_text())["run"]["complete"]


def test_a_runner_whose_worker_the_pool_closed_opens_again(store):
    """The reference's PyTorch runner stays active for the session; the pool keeps only a
    few workers and closes the least recently used. That is no crash: it re-opens."""
    from infergate.build.subject import ModelUnderTest
    from infergate.isolation import TIER_LIMITS, IsolatedRunner, WorkerPool

    pool = WorkerPool(size=1)
    torch_backend = all_backends()["torch"]
    runners = {}
    try:
        for name in ("mlp", "gru"):
            subject = ModelUnderTest(all_models()[name], store)
            runners[name] = (IsolatedRunner(pool, subject, torch_backend, "fp32",
                                            TIER_LIMITS["smoke"], name).activate(),
                             subject.inputs(seed=0))
        runner, feed = runners["mlp"]  # its worker was closed to make room for gru's
        assert runner.run(feed)["logits"].shape[0] == feed["pixels"].shape[0]
        assert runner.failure is None
        for runner, _ in runners.values():
            runner.deactivate()
    finally:
        pool.close()


@pytest.mark.parametrize("fault", ["segfault", "hang"])
def test_a_crash_or_hang_while_preparing_is_paid_once_a_run(project, plant, fault):
    """A native crash or a timeout in the export was tried again by every test of the
    combination (a Python exception already was not): now each later test gets the first
    one's verdict at once (issue 25, fault 9)."""
    plant(fault, "prepare", timeouts=Timeouts(reason="fault test: a hang must end fast",
                                              prepare_s=10))
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "--update-baselines", "--perf-min-time", "0.05",
                           "--baseline-processes", "1", "-p", "no:randomly",
                           tests=("test_equivalence.py", "test_latency.py", "test_memory.py"))
    ours = [r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"]
    assert [r["outcome"] for r in ours] == ["crashed" if fault == "segfault" else "timeout"] * 3
    assert [("not tried again" in r["reason"]) for r in ours] == [False, True, True]
    if fault == "hang":
        # Paid three times it would be 30 s; once, 10 s plus the run's own time, whatever
        # the load (the "not tried again" reasons above are the deterministic check).
        assert sum(r["duration_s"] for r in ours) < 28


def test_a_model_that_hangs_everywhere_costs_its_limit_once_and_leaves_no_process(project,
                                                                                  plant):
    """A forward that never returns: the first test's timeout is every later test's verdict
    at once, the accuracy tests' and the probes' and the counts' alike (they ran their own
    limits, up to 30 minutes under valgrind, each), and nothing the run started outlives it
    (issue 25, fault 1)."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    plant("hang", "run", timeouts=Timeouts(reason="fault test: a hang must end fast",
                                           first_run_s=3))
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "--update-baselines", "--perf-min-time", "0.05",
                           "--baseline-processes", "1", "-p", "no:randomly",
                           tests=("test_equivalence.py", "test_memory.py",
                                  "test_instructions.py"))
    ours = {r["test"]: r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"}
    assert {test: r["outcome"] for test, r in ours.items()} == dict.fromkeys(
        ("test_equivalence", "test_instructions", "test_memory"), "timeout")
    first = ours["test_equivalence"]["reason"]  # the first test run (the files' order)
    assert "first inference" in first and "limit of 3 s" in first
    assert {test: "not tried again" in r["reason"] for test, r in ours.items()} == {
        "test_equivalence": False, "test_instructions": True, "test_memory": True}
    assert data["run"]["complete"]
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.cmdline()) for p in left]


def test_a_frozen_worker_is_given_up_not_waited_out(project, plant):
    """A worker stopped by SIGSTOP (a frozen container or cgroup) waited out the tier's limits
    (180 s a first inference), test after test, and was left behind stopped (issue 25,
    fault 3). Stopped for STOPPED_S it is killed; its combination is not tried again."""
    from infergate.isolation import STOPPED_S

    plant("freeze", "run")  # the tier's limits: 180 s for the first inference
    result, data = project("--models", "mlp", "--backends", "torch,ort_cpu",
                           "--precisions", "fp32", "--update-baselines", "--perf-min-time",
                           "0.05", "--baseline-processes", "1", "-p", "no:randomly",
                           tests=("test_equivalence.py", "test_memory.py"))
    ours = {r["test"]: r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"}
    assert {test: r["outcome"] for test, r in ours.items()} == {
        "test_equivalence": "timeout", "test_memory": "timeout"}
    assert f"stopped (SIGSTOP, a frozen cgroup) for {STOPPED_S} s" in ours[
        "test_equivalence"]["reason"]
    assert "not tried again" in ours["test_memory"]["reason"]
    assert by_id(data["results"])["mlp-torch-fp32"]["outcome"] == "passed"


def test_the_run_s_own_limit_ends_the_test_in_progress_and_stops_the_run(project, plant):
    """--infergate-run-timeout: a CI job's budget. A hang under the tier's limits (180 s)
    ends at the run's limit with a timeout naming it, the run stops there with its reports
    written, and it is not green."""
    import time

    plant("hang", "run")
    start = time.monotonic()
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "--infergate-run-timeout", "25", "--update-baselines",
                           "--perf-min-time", "0.05", "--baseline-processes", "1",
                           "-p", "no:randomly", tests=("test_equivalence.py", "test_memory.py"))
    assert time.monotonic() - start < 25 + 60  # the hang alone would be 180 s
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert data["run"]["status"] == ("stopped: the run's limit of 25 s "
                                     "(--infergate-run-timeout) was reached")
    hung, = data["results"]  # test_memory never started
    assert hung["outcome"] == "timeout"
    assert "the run's limit of 25 s (--infergate-run-timeout)" in hung["reason"]
