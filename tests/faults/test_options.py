"""Options that would switch a gate off, or start a runaway, are refused before any test
(issue 25, fault 8), and a gate switched off on purpose is said where the run is read."""

import pytest

from infergate import environment

ONE = ("--infergate-models", "mlp", "--infergate-backends", "ort_cpu",
       "--infergate-precisions", "fp32")


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--infergate-perf-threshold", "10", "must be at most 1, not 10 (a fraction: 0.1 is 10 %"),
    ("--infergate-perf-threshold", "1e9", "must be at most 1, not 1e+09"),
    ("--infergate-memory-threshold", "2", "must be at most 1"),
    ("--infergate-count-threshold", "5", "must be at most 1"),
    ("--infergate-perf-threads", "100000",
     f"must be at most {environment.cpu_count() * 4}, not '100000' (this machine has "
     f"{environment.cpu_count()} cores)"),
    ("--infergate-perf-latency-floor-ms", "1e9", "no latency would be gated"),
    ("--infergate-baseline-processes", "1000", "must be at most 50"),
    ("--infergate-perf-threshold", "nan", "must be finite"),
])
def test_an_option_that_cannot_gate_is_a_usage_error(project, pytester, option, value, said):
    result = pytester.runpytest(*ONE, f"{option}={value}", "test_equivalence.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert option in result.stderr.str() and said in result.stderr.str()


def test_a_gate_switched_off_is_said_in_the_header_and_the_summary(project, pytester):
    result, _ = project(*ONE, "--infergate-perf-wall-time", "report",
                        "--infergate-perf-threshold", "10", "--infergate-unbounded-thresholds")
    result.stdout.fnmatch_lines(["infergate: gates that cannot fail in this run: latency "
                                 "(--infergate-perf-threshold 10, above 1); instructions "
                                 "and peak heap (--infergate-perf-counts off); latency "
                                 "(--infergate-perf-wall-time report)"])
    summary = (pytester.path / "out" / "summary.md").read_text()
    assert ("**Gates that cannot fail in this run:** latency (--infergate-perf-threshold 10, "
            "above 1); instructions and peak heap") in summary
