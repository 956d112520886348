"""A measuring process that crashes or hangs is its own combination's verdict, paid once."""

import json
import os

import pytest

from infergate.perf import instructions, probe

SELECT = ("--models", "mlp", "--backends", "torch,ort_cpu", "--precisions", "fp32",
          "--perf-min-time", "0.05", "--baseline-processes", "2", "--benchmark-disable",
          "-p", "no:randomly")
PERF_TESTS = ("test_latency.py", "test_memory.py")


def test_a_crashing_probe_is_crashed_once_and_the_update_keeps_the_others(project, plant,
                                                                         pytester):
    plant("segfault", "run")
    result, data = project(*SELECT, "--update-baselines", tests=PERF_TESTS)
    results = {(r["test"], r["id"]): r for r in data["results"]}
    for test in ("test_latency", "test_memory"):
        crashed = results[test, "mlp-ort_cpu-fp32"]
        assert crashed["outcome"] == "crashed"
        assert "SIGSEGV" in crashed["reason"] and "measurement" in crashed["reason"]
        assert f"-k '{test} and mlp-ort_cpu-fp32'" in crashed["reason"]
        assert results[test, "mlp-torch-fp32"]["outcome"] != "crashed"
    # One crash, not one per test of the combination.
    assert result.stdout.str().count("baseline round 1/2: mlp-ort_cpu-fp32") == 1
    machine, = (p for p in (pytester.path / "baselines").glob("*.json")
                if not p.name.startswith("callgrind-"))
    stored = json.loads(machine.read_text())
    assert set(stored["entries"]) == {"mlp/torch/fp32"}  # the crashing one merges nothing
    assert len(stored["entries"]["mlp/torch/fp32"]["latency"]["processes"]) == 2


def test_a_hanging_probe_is_a_timeout_within_the_limit(project, plant, monkeypatch):
    plant("hang", "run")
    monkeypatch.setattr(probe, "TIMEOUT_S", 15)
    only_ort = [a if a != "torch,ort_cpu" else "ort_cpu" for a in SELECT]
    # An update measures both tests' figures (wall time and RSS) whatever the tier.
    result, data = project(*only_ort, "--update-baselines", tests=PERF_TESTS)
    hung = [r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"]
    assert [r["outcome"] for r in hung] == ["timeout", "timeout"]
    assert "limit of 15 s" in hung[0]["reason"]
    assert sum(r["duration_s"] for r in hung) < 30  # the limit paid once, not per test


def test_a_hanging_probe_ends_at_the_spec_s_limit_for_its_step(project, plant):
    """The spec's timeouts bound the probe's session build and first inference as they bound
    a worker's (issue 25, fault 1: the probe waited out its own 900 s)."""
    from infergate.spec import Timeouts

    plant("hang", "run", timeouts=Timeouts(reason="fault test: a hang must end fast",
                                           first_run_s=3))
    only_ort = [a if a != "torch,ort_cpu" else "ort_cpu" for a in SELECT]
    result, data = project(*only_ort, "--update-baselines", tests=("test_memory.py",))
    hung, = (r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32")
    assert hung["outcome"] == "timeout"
    assert "first inference (measurement, fresh process)" in hung["reason"]
    assert "limit of 3 s" in hung["reason"] and "ended itself" in hung["reason"]


@pytest.mark.parametrize("fault", ["segfault", "hang"])
def test_a_crash_in_a_known_failure_is_not_excused(project, plant, fault):
    from infergate.spec import Timeouts

    plant(fault, "run", known_failures={("ort_cpu", "fp32"): "pretend accuracy finding"},
          timeouts=Timeouts(reason="fault test", first_run_s=3))
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")
    entry = data["results"][0]
    assert entry["outcome"] == ("crashed" if fault == "segfault" else "timeout")
    result.assert_outcomes(failed=1)


# The counted variant (30 s under valgrind) is the nightly's: counting's own crash isolation is
# test_a_crash_counting_one_precision_costs_that_precision_not_its_process.
@pytest.mark.parametrize("tests", [PERF_TESTS, pytest.param(("test_instructions.py",),
                                                            marks=pytest.mark.nightly)])
def test_a_crash_while_preparing_for_a_probe_is_crashed_not_a_dead_run(project, plant, tests):
    """The artifacts a probe measures are built in a worker: a crash in the export costs the
    combination, not pytest."""
    plant("segfault", "prepare")
    # Without a baseline only an update measures test_memory's resident memory.
    update = ("--update-baselines",) if tests == PERF_TESTS else ()
    result, data = project(*SELECT, *update, tests=tests)
    crashed = [r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"]
    assert crashed and all(r["outcome"] == "crashed" for r in crashed)
    assert all("SIGSEGV" in r["reason"] and "prepare" in r["reason"] for r in crashed)
    assert all("reproduce alone: python -m pytest" in r["reason"] for r in crashed)


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
# 50-65 s (an update: three valgrind processes): the nightly's, as its crash-while-preparing
# counterpart is.
@pytest.mark.nightly
def test_a_crash_counting_one_precision_costs_that_precision_not_its_process(project, plant):
    """A model and backend's precisions are counted in one valgrind process, each in a
    forked child: a segfault while counting int8 is int8's crashed verdict, and fp32 counted
    beside it still takes its baseline."""
    plant("segfault", "run", precision="int8")
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions",
                           "fp32,int8", "--update-baselines", "-p", "no:randomly", "-rA",
                           tests=("test_instructions.py",))
    outcomes = {r["id"]: r for r in data["results"]}
    crashed = outcomes["mlp-ort_cpu-int8"]
    assert crashed["outcome"] == "crashed"
    assert "SIGSEGV" in crashed["reason"] and "instruction count" in crashed["reason"]
    assert outcomes["mlp-ort_cpu-fp32"]["outcome"] == "passed"
    result.stdout.fnmatch_lines(["*baseline taken: mlp-ort_cpu-fp32 instructions/inference*"])


def test_a_failed_build_is_each_perf_test_s_own_error_not_an_index_error(project, plant):
    """An exception while building the probe's artifacts is shown by every performance test
    of the combination (it once surfaced in test_memory as an IndexError of infergate's)."""
    plant("raise", "prepare")
    only_ort = [a if a != "torch,ort_cpu" else "ort_cpu" for a in SELECT]
    result, data = project(*only_ort, "--update-baselines", tests=PERF_TESTS)
    failed = [r for r in data["results"] if r["id"] == "mlp-ort_cpu-fp32"]
    assert len(failed) == 2
    assert all("exporter exploded" in r["reason"] for r in failed), failed
    assert "IndexError" not in result.stdout.str()


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
def test_sigterm_while_counting_ends_the_valgrind_processes_at_once(project, plant):
    """The counting processes are waited on by a pool's threads, which an interrupt does not
    reach: SIGTERM (or Ctrl-C) then waited for a hanging count's whole limit (30 minutes),
    and valgrind outlived the run. Now the run ends them and reports "terminated"."""
    import contextlib
    import signal
    import threading
    import time

    import psutil

    def valgrind_children():
        found = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):  # the tool's name is callgrind-amd64-linux
                if (child.status() != psutil.STATUS_ZOMBIE
                        and "valgrind" in " ".join(child.cmdline())):
                    found.append(child)
        return found

    signalled = []

    def terminate_once_counting():
        deadline = time.monotonic() + 120
        while not valgrind_children() and time.monotonic() < deadline:
            time.sleep(0.2)
        signalled.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    plant("hang", "run")  # the counted call never returns
    watcher = threading.Thread(target=terminate_once_counting, daemon=True)
    watcher.start()
    result, data = project("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32",
                           "-p", "no:randomly", tests=("test_instructions.py",))
    ended = time.monotonic()
    watcher.join(10)
    assert signalled and ended - signalled[0] < 60, "the run waited out the count"
    assert data["run"]["status"] == "terminated (SIGTERM)"
    counted, = data["results"]
    assert counted["outcome"] == "crashed" and "terminated (SIGTERM)" in counted["reason"]
    deadline = time.monotonic() + 10
    while valgrind_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert valgrind_children() == []
