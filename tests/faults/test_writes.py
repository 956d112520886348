"""What a run writes survives what happens to runs: unwritable folders, a file in the way,
a corrupt baseline, concurrent updates, an interrupt, a SIGKILL."""

import json
import multiprocessing
import re
import signal
from pathlib import Path

import pytest

from infergate.perf import baselines
from infergate.perf.baselines import BaselineError, BaselineStore

ONE = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")


def test_an_unwritable_reports_folder_is_a_usage_error_before_any_test(project, pytester):
    (pytester.path / "blocker").write_text("a file, not a folder")
    result = pytester.runpytest("--reports-dir=blocker/reports", *ONE, "test_equivalence.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-reports-dir: cannot write to *blocker/reports*"])


def test_an_unwritable_baselines_folder_stops_an_update_before_measuring(project, pytester):
    (pytester.path / "blocker").write_text("")
    result, _ = project(*ONE, "--update-baselines", "--baselines-dir=blocker/b",
                        tests=("test_memory.py",))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-baselines-dir: cannot write to *blocker/b*"])


def test_a_failed_results_write_costs_neither_the_other_reports_nor_junit(project, pytester):
    (pytester.path / "out" / "results.json").mkdir(parents=True)  # in the way of the rename
    result, _ = project(*ONE, f"--junitxml={pytester.path / 'junit.xml'}")
    assert result.ret == 6
    result.stdout.fnmatch_lines(["*infergate: could not write the reports: *results.json*"
                                 "(exit status 6)*"])
    assert (pytester.path / "out" / "summary.md").read_text().count("1 passed") == 1
    assert "testcase" in (pytester.path / "junit.xml").read_text()


def test_a_corrupt_baseline_is_moved_aside_by_an_update(project, pytester):
    folder = pytester.path / "baselines"
    folder.mkdir()
    own = folder / f"{baselines.machine()['id']}.json"  # scratch runs are this machine's
    own.write_text('{"schema": "infergate.perf.baselines/1", "entries": {tr')  # torn
    result, _ = project(*ONE, "--baseline-processes", "1", "--perf-min-time", "0.05",
                        tests=("test_memory.py",))
    result.assert_outcomes(errors=1)  # no verdict against it: an error naming the file
    result.stdout.fnmatch_lines([f"*{own}: not readable JSON*"])
    result, _ = project(*ONE, "--baseline-processes", "1", "--perf-min-time", "0.05",
                        "--update-baselines", tests=("test_memory.py",))
    result.assert_outcomes(passed=1)  # it judges the baseline it takes
    result.stdout.fnmatch_lines(["*was not readable; moved aside to *corrupt-*"])
    assert "mlp/ort_cpu/fp32" in json.loads(own.read_text())["entries"]
    assert list(folder.glob("*.corrupt-*.json"))[0].read_text().endswith("tr")


def _hammer(path, worker, count):
    store = BaselineStore(path)
    for i in range(count):
        store.merge({f"m{worker}/b/fp32-{i}": {"memory": {"model_peak_mb": float(i)}}})


def test_concurrent_updates_of_one_baseline_file_lose_nothing(tmp_path):
    path = tmp_path / "machine.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_hammer, args=(path, w, 150)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(json.loads(path.read_text())["entries"]) == 300
    assert not list(tmp_path.glob(".*.tmp"))


def _signalled_run(pytester, signum):
    """The scratch project (``project``) in a real pytest process that gets ``signum`` from
    its second test, after one matrix test passed."""
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # keeps an inherited SIG_IGN: restore the default so Ctrl-C behaves as at a terminal.
    pytester.makepyfile(test_zz_signal=f"import os, signal\ndef test_signal():\n"
                                       f"    signal.signal(signal.SIGINT, "
                                       f"signal.default_int_handler)\n"
                                       f"    os.kill(os.getpid(), {int(signum)})\n")
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--reports-dir=out", *ONE,
        "test_equivalence.py", "test_zz_signal.py", timeout=600)


def test_an_interrupted_run_is_marked_incomplete(project, pytester):
    result = _signalled_run(pytester, signal.SIGINT)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = json.loads((pytester.path / "out" / "results.json").read_text())
    assert data["run"]["complete"] is False
    assert data["run"]["status"] == "interrupted (INTERRUPTED)"
    assert [r["outcome"] for r in data["results"]] == ["passed"]
    assert "Incomplete run" in (pytester.path / "out" / "summary.md").read_text()


def _alive_with(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (a run's descendants inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_terminated_run_writes_its_reports_and_leaves_no_process(project, pytester,
                                                                   monkeypatch):
    """SIGTERM (CI timeouts, Kubernetes) was exit 143 with no message, results.json left
    "running", no summary.md or report.html, and a process orphaned (issue 25, fault 6)."""
    import time
    import uuid

    marker = f"infergate-sigterm-{uuid.uuid4().hex}"
    monkeypatch.setenv("INFERGATE_FAULT_MARK", marker)
    result = _signalled_run(pytester, signal.SIGTERM)
    assert result.ret == 143
    data = json.loads((pytester.path / "out" / "results.json").read_text())
    assert data["run"]["complete"] is False
    assert data["run"]["status"] == "terminated (SIGTERM)"
    assert [r["outcome"] for r in data["results"]] == ["passed"]
    assert "Incomplete run" in (pytester.path / "out" / "summary.md").read_text()
    assert (pytester.path / "out" / "report.html").is_file()
    deadline = time.monotonic() + 10  # the workers' last exits
    while _alive_with(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive_with(marker) == []


def test_a_killed_run_leaves_the_results_it_reached(project, pytester):
    result = _signalled_run(pytester, signal.SIGKILL)
    assert result.ret == -signal.SIGKILL
    data = json.loads((pytester.path / "out" / "results.json").read_text())
    assert data["run"]["complete"] is False and data["run"]["status"] == "running"
    assert [r["outcome"] for r in data["results"]] == ["passed"]


@pytest.mark.parametrize(("option", "value"), [
    ("--infergate-perf-threshold", "-0.5"), ("--infergate-perf-threshold", "nan"),
    ("--infergate-memory-threshold", "-5"), ("--infergate-baseline-processes", "0"),
    ("--infergate-perf-threads", "-2"), ("--infergate-perf-min-time", "-1"),
    ("--infergate-perf-confirm", "x"),
])
def test_bad_numbers_in_options_are_usage_errors_naming_the_option(pytester, project, option,
                                                                   value):
    result = pytester.runpytest(f"{option}={value}", *ONE, "test_equivalence.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*argument {option}*"])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda e: e["latency"]["processes"][0].update(normalised=float("nan")),
     "latency.processes[0].normalised must be a finite positive number"),
    (lambda e: e["latency"].update(p50_ms=-1.0), "latency.p50_ms must be a finite positive"),
    (lambda e: e["latency"].update(processes=[]), "latency.processes must be a non-empty list"),
    (lambda e: e["memory"].update(model_peak_mb=float("inf")), "memory.model_peak_mb must be"),
    (lambda e: e.pop("latency") and e.pop("memory"), "has no latency, memory or instructions"),
])
def test_a_damaged_baseline_entry_is_an_error_naming_it_and_an_update_drops_it(tmp_path, damage,
                                                                             message):
    good = {"latency": {"p50_ms": 2.0, "normalised": 10.0,
                        "processes": [{"p50_ms": 2.0, "normalised": 10.0}] * 2},
            "memory": {"model_peak_mb": 5.0}}
    bad = json.loads(json.dumps(good))
    damage(bad)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"schema": "infergate.baseline/2", "machine": {},
                                "entries": {"a/b/fp32": good, "x/y/fp32": bad}}))
    with pytest.raises(BaselineError, match=rf"m.json: entry 'x/y/fp32': .*{re.escape(message)}"):
        BaselineStore(path).load()
    BaselineStore(path).merge({"c/d/fp32": good})
    assert set(BaselineStore(path).load()["entries"]) == {"a/b/fp32", "c/d/fp32"}


@pytest.mark.parametrize("text", ["", "[]", '{"schema": "infergate.baseline/1"}', "{tr"])
def test_an_unusable_baseline_file_is_an_error_naming_it(tmp_path, text):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(BaselineError, match=r"m.json: not .*--infergate-update-baselines"):
        BaselineStore(path).load()


def test_a_killed_writers_temporary_is_cleared_by_the_next_update(tmp_path):
    stale = tmp_path / ".m.json.x1y2z3.tmp"  # what SIGKILL mid-write leaves
    stale.write_text("{half")
    BaselineStore(tmp_path / "m.json").merge({"a/b/fp32": {"memory": {"model_peak_mb": 1.0}}})
    assert not stale.exists()


_WRITER = """
import json, sys
from infergate.atomic import atomic_write_text
i = 0
while True:
    i += 1
    atomic_write_text(sys.argv[1], json.dumps({"i": i, "pad": "x" * 2_000_000}))
"""


def test_sigkill_during_atomic_writes_leaves_a_whole_file(tmp_path):
    import subprocess
    import sys
    import time

    target = tmp_path / "results.json"
    for delay in (0.3, 0.45, 0.6, 0.75, 0.9):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)],
                                  cwd=Path(__file__).resolve().parents[2])
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        if target.exists():  # the old file or the new one, never a torn one
            assert json.loads(target.read_text())["i"] >= 1
    assert target.exists()


def test_two_concurrent_updates_on_different_selections_keep_both(project, pytester):
    """Two real pytest processes in the scratch project (``project``), started together:
    they export into one cold cache and merge into one baseline file."""
    import subprocess
    import sys

    common = ["-p", "no:cacheprovider", "--models", "mlp", "--precisions", "fp32",
              "--update-baselines", "--baseline-processes", "1", "--perf-min-time", "0.05",
              "--infergate-perf-counts", "off", "test_memory.py"]
    runs = [subprocess.Popen([sys.executable, "-m", "pytest", *common, "--backends", backend,
                              f"--reports-dir=out-{backend}"], cwd=pytester.path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for backend in ("torch", "ort_cpu")]
    outputs = [run.communicate(timeout=600)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    stored = json.loads(next((pytester.path / "baselines").glob("*.json")).read_text())
    assert {"mlp/torch/fp32", "mlp/ort_cpu/fp32"} <= set(stored["entries"])
