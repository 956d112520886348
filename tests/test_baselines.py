"""The performance gate's statistics, baseline store and probes, on synthetic samples."""

import json
import re

import numpy as np
import pytest

from infergate.perf import baselines, gate
from infergate.perf.baselines import BaselineError, BaselineStore
from infergate.perf.gate import judge_latency, judge_memory
from infergate.perf.measure import Calibration, Protocol, Stats, measure_latency


def processes(scale=1.0, norm_scale=None, n=3, spread=0.01, seed=0):
    """Probe-like latency figures of ``n`` fresh processes, log-normally scattered."""
    norm_scale = scale if norm_scale is None else norm_scale
    rng = np.random.default_rng(seed)
    return [{"p50_ms": 12.0 * scale * float(np.exp(spread * a)),
             "normalised": 3.0 * norm_scale * float(np.exp(spread * b))}
            for a, b in rng.standard_normal((n, 2))]


def baseline(libraries=None, n=5, spread=0.01):
    return {"latency": {"p50_ms": 12.0, "normalised": 3.0,
                        "processes": processes(n=n, spread=spread, seed=99)},
            "memory": {"peak_rss_mb": 100.0},
            "libraries": libraries if libraries is not None
            else baselines.environment.describe()["libraries"]}


PRIOR = {"normalised": gate.Spread(0.01, 40), "absolute": gate.Spread(0.01, 40)}


def judge(current, base=None, **kw):
    return judge_latency("x", current, base or baseline(), priors=kw.pop("priors", PRIOR), **kw)


def test_unchanged_passes():
    verdict = judge(processes(n=1))
    assert verdict and verdict.status == "pass"


def test_real_slowdown_regresses_with_the_numbers():
    verdict = judge_latency("resnet50-ort_cpu-fp32", processes(1.23), baseline(),
                            mode="absolute", priors=PRIOR)
    assert not verdict and verdict.status == "regressed"
    message = str(verdict)
    assert message.startswith("resnet50-ort_cpu-fp32 p50 +2")
    assert " ms, 99.9 % CI +" in message and "p=" in message and "threshold 10 %" in message
    assert "(3 fresh processes vs 5 in the baseline)" in message
    assert verdict.figures["delta_pct"] == verdict.figures["absolute_delta_pct"]


def test_a_threshold_sized_slowdown_fails_even_when_its_estimate_lands_just_below():
    # +9.5 % measured: significant, and the interval reaches +10 %: not let through.
    verdict = judge(processes(1.095, spread=0.005), baseline(spread=0.005))
    assert verdict.status == "regressed"
    assert verdict.figures["normalised_ci_low"] > 1 and verdict.figures["normalised_ci_high"] > 1.1


def test_small_but_significant_slowdown_within_threshold_passes():
    verdict = judge(processes(1.04, spread=0.003), baseline(spread=0.003),
                    priors={k: gate.Spread(0.003, 40) for k in PRIOR})
    assert verdict.status == "pass" and verdict.figures["normalised_p_slower"] < 0.001


def test_machine_drift_does_not_regress_the_normalised_gate():
    # Absolute time +30 % (a slower shared runner), normalised unchanged.
    drift = processes(1.30, norm_scale=1.0)
    assert judge(drift, mode="normalised").status == "pass"
    assert judge(drift, mode="absolute").status == "regressed"
    assert judge(drift, mode="both").status == "pass"


def test_improvement_is_a_visible_note_not_a_failure():
    verdict = judge(processes(0.7))
    assert verdict and verdict.status == "improved"
    assert "consider updating the baseline" in str(verdict)


def test_scattered_processes_are_insufficient_and_strict_fails_them():
    noisy = processes(1.08, n=1)
    wide = {k: gate.Spread(0.06, 40) for k in PRIOR}  # processes scatter by 6 %
    verdict = judge(noisy, priors=wide)
    assert verdict.status == "insufficient" and verdict
    assert "holds both no change and a threshold-sized slowdown" in str(verdict)
    half = verdict.figures["normalised_ci_high"] / (verdict.figures["normalised_new"]
                                                    / verdict.figures["normalised_old"])
    assert verdict.figures["decidable_pct"] == pytest.approx((half - 1) * 100)
    assert f"beyond about +{verdict.figures['decidable_pct']:.0f} %" in str(verdict)
    assert not judge(noisy, priors=wide, strict=True)


def test_more_processes_narrow_the_interval():
    wide = {k: gate.Spread(0.03, 40) for k in PRIOR}
    one, three = judge(processes(1.0, n=1), priors=wide), judge(processes(1.0), priors=wide)
    width = [v.figures["normalised_ci_high"] - v.figures["normalised_ci_low"] for v in (one, three)]
    assert width[1] < 0.75 * width[0]


def test_confirmation_measures_more_processes_only_when_undecided_or_regressed():
    wide = {k: gate.Spread(0.03, 40) for k in PRIOR}
    extra = []

    def another():
        extra.append(processes(1.0, n=1, seed=len(extra) + 10)[0])
        return extra[-1]

    calm = gate.judge_processes("x", processes(0.97, n=1), another, baseline(), priors=PRIOR)
    assert calm.status == "pass" and not extra
    undecided = processes(1.06, n=1)
    verdict = gate.judge_processes("x", undecided, another, baseline(), priors=wide,
                                        confirm=2)
    assert len(extra) == 2 and len(undecided) == 3 and verdict.figures["processes"] == 3
    assert "(3 fresh processes vs 5 in the baseline)" in str(verdict)


def test_no_more_processes_when_none_could_decide():
    extra = []
    # Whole runs scatter by 8 %: however many processes, 0 and +10 % both stay in the interval.
    verdict = gate.judge_processes("x", processes(1.02, n=1), lambda: extra.append(1),
                                        baseline(), priors=PRIOR, run_spread=0.08)
    assert verdict.status == "insufficient" and verdict.figures["resolvable"] is False
    assert not extra


def test_a_regression_is_judged_on_every_confirmation_process():
    extra = []

    def another():
        extra.append(processes(1.5, n=1, seed=len(extra) + 10)[0])
        return extra[-1]

    verdict = gate.judge_processes("x", processes(1.5, n=1), another, baseline(),
                                        priors=PRIOR, confirm=4)
    assert verdict.status == "regressed" and verdict.figures["processes"] == 5 and len(extra) == 4


def test_a_combination_s_own_scatter_widens_the_interval_beyond_the_prior():
    calm = judge(processes(1.0, spread=0.002), baseline(spread=0.002))
    rough = judge(processes(1.0, spread=0.08), baseline(spread=0.08))
    assert (rough.figures["normalised_ci_high"] - rough.figures["normalised_ci_low"]
            > 2 * (calm.figures["normalised_ci_high"] - calm.figures["normalised_ci_low"]))


def test_pooled_spread_uses_entries_with_several_processes_above_the_floor():
    rng = np.random.default_rng(0)
    entries = {f"m{i}/b/fp32": {"latency": {"p50_ms": 5.0, "processes": [
        {"p50_ms": 5.0, "normalised": float(np.exp(0.02 * z))} for z in rng.standard_normal(5)]}}
        for i in range(30)}
    entries["tiny/b/fp32"] = {"latency": {"p50_ms": 0.02, "processes": [
        {"p50_ms": 0.02, "normalised": v} for v in (1.0, 2.0)]}}
    entries["single/b/fp32"] = {"latency": {"p50_ms": 5.0, "processes": [
        {"p50_ms": 5.0, "normalised": 1.0}]}}
    spread = gate.pooled_spread(entries, "normalised", floor_ms=1.0)
    assert spread.dof == 30 * 4 and spread.sd == pytest.approx(0.02, rel=0.15)
    assert gate.pooled_spread(entries, "normalised").sd > 0.04  # the tiny one dominates


def test_between_run_spread_keeps_a_runner_offset_from_failing_a_calm_combination():
    # Five calm processes, 12 % slower than a calm baseline: a new runner, not a regression
    # anyone can prove from one run when whole runs scatter by 3 %.
    calm = {k: gate.Spread(0.003, 40) for k in PRIOR}
    current = processes(1.12, n=5, spread=0.003)
    old = baseline(spread=0.003)
    assert judge(current, old, priors=calm).status == "regressed"
    verdict = judge(current, old, priors=calm, run_spread=0.03)
    assert verdict.status == "insufficient" and verdict.figures["run_spread_pct"] == 3


def test_one_process_against_one_is_undecided_saying_why_not_an_endless_interval():
    """With no spread to learn from (one process a side, no prior) the interval was
    -100…+33242441049 %, said as "could decide slowdowns beyond about +33242441049 %"."""
    verdict = judge(processes(n=1), baseline(n=1), priors={})
    assert verdict.status == "insufficient"
    assert "one process here and one in the baseline" in str(verdict)
    assert "--infergate-baseline-processes" in str(verdict)
    # With the machine's spread from its other entries the interval is drawn as before.
    assert "one process here" not in str(judge(processes(n=1), baseline(n=1)))


def test_a_baseline_taken_with_another_calibration_is_not_compared():
    old = baseline()
    old["latency"]["calibration"] = "gemm/0"
    current = [{**p, "calibration": "geomean/1"} for p in processes(1.5)]
    verdict = judge(current, old)
    assert verdict.status == "insufficient" and "another calibration workload" in str(verdict)
    assert judge(current, old, mode="absolute").status == "regressed"


def test_verdict_names_changed_library_versions():
    old = baseline(libraries={"onnxruntime": "1.31.1"})
    verdict = judge(processes(), old)
    assert "baseline taken with onnxruntime 1.31.1, now" in str(verdict)


def test_override_reason_shows():
    verdict = judge(processes(1.0), threshold=0.2, reason="jittery EP")
    assert verdict.status == "pass" and "(jittery EP)" in str(verdict)


def test_entry_keeps_every_process_and_the_middle_one_s_figures():
    runs = [{"latency": {"p50_ms": p, "normalised": p / 4, "calibration": "c"},
             "memory": measured(m, runtime=r)}
            for p, m, r in ((12.0, 50.0, 40.0), (10.0, 52.0, 44.0), (11.0, 51.0, 41.0))]
    entry = baselines.make_entry(runs, threads=1, dims={"batch": 1})
    assert entry["latency"]["p50_ms"] == 11.0
    assert entry["memory"] == {"model_peak_mb": 51.0, "runtime_overhead_mb": 41.0,
                               "peak_rss_mb": 92.0}
    assert [p["p50_ms"] for p in entry["latency"]["processes"]] == [12.0, 10.0, 11.0]


def test_entry_leaves_out_a_memory_figure_some_process_lacks():
    # An A/B revision's probe from before the model figure: its all-in peak only.
    runs = [{"latency": {"p50_ms": 1.0, "normalised": 1.0}, "memory": {"peak_rss_mb": 60.0}},
            {"latency": {"p50_ms": 1.0, "normalised": 1.0}, "memory": measured(5.0)}]
    assert baselines.make_entry(runs, threads=1, dims={})["memory"] == {"peak_rss_mb": 52.5}


def measured(model=100.0, runtime=40.0):
    """A probe's memory figures (MB): the model's peak above the initialised runtime, the
    runtime's overhead, and the all-in peak (its sum here, the harness left out)."""
    return {"model_peak_mb": model, "runtime_overhead_mb": runtime,
            "peak_rss_mb": model + runtime}


def memory_baseline(model=100.0, runtime=40.0):
    return {**baseline(), "memory": measured(model, runtime)}


def test_memory_gate_judges_the_model_figure_with_threshold_and_slack():
    base, slack = memory_baseline(), gate.MEMORY_SLACK_MB
    limit = 100.0 * 1.1 + slack
    assert judge_memory("x", measured(limit - 0.5), base).status == "pass"
    verdict = judge_memory("x", measured(limit + 0.5), base)
    assert verdict.status == "regressed" and not verdict
    assert str(verdict).startswith(f"x model memory +{limit + 0.5 - 100:.0f} % (100.0 → "
                                   f"{limit + 0.5:.1f} MB above the initialised runtime, "
                                   f"limit {limit:.1f} MB = +10 % + {slack:g} MB; runtime "
                                   f"overhead 40.0 MB, baseline 40.0 MB, not gated)")
    assert verdict.figures["model_peak_mb"] == limit + 0.5
    assert verdict.figures["baseline_mb"] == 100.0
    assert judge_memory("x", measured(60.0), base).status == "improved"


def test_runtime_overhead_moved_by_the_host_is_reported_not_gated():
    # Issue 11: OpenVINO's start-up took 17-25 MB more on another CI runner of the same type.
    verdict = judge_memory("x", measured(4.4, runtime=66.0), memory_baseline(4.4, runtime=41.0))
    assert verdict.status == "pass"
    assert "runtime overhead 66.0 MB, baseline 41.0 MB, not gated" in str(verdict)


def test_a_baseline_from_before_the_model_figure_is_not_compared():
    old = {**baseline(), "memory": {"peak_rss_mb": 60.4}}  # every entry taken before issue 11
    verdict = judge_memory("mlp-openvino-fp32", measured(4.4, runtime=78.8), old)
    assert verdict.status == gate.OUTDATED and verdict  # a skip, never a failure
    assert "predates the model-memory figure" in str(verdict) and "60.4 MB" in str(verdict)
    assert "`pytest --infergate-update-baselines`" in str(verdict)
    assert "baseline_mb" not in verdict.figures and verdict.figures["model_peak_mb"] == 4.4
    assert gate.outdated_memory_note("x", memory_baseline()) is None


def test_store_merges_atomically_and_keeps_other_entries(tmp_path):
    def entry(mb):
        return {"memory": {"model_peak_mb": mb}}

    store = BaselineStore(tmp_path / "m.json")
    store.merge({"a/b/fp32": entry(1), "c/d/fp32": entry(2)})
    store.merge({"a/b/fp32": entry(3)})
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["entries"] == {"a/b/fp32": entry(3), "c/d/fp32": entry(2)}
    assert data["machine"]["id"] == baselines.machine()["id"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_malformed_baseline_names_its_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="bad.json"):
        BaselineStore(path).load()
    path.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(BaselineError, match="not an infergate.baseline/2 file: its schema is "
                                            "'other'.*--infergate-update-baselines"):
        BaselineStore(path).load()


def test_machine_id_is_a_hardware_slug():
    machine = baselines.machine()
    assert machine["id"] == machine["id"].lower() and " " not in machine["id"]
    assert f"{machine['cores']}c" in machine["id"]


def test_diff_shows_new_changed_and_kept():
    entry = {"latency": {"p50_ms": 10.0, "normalised": 2.0}, "memory": measured(5.0)}
    faster = {"latency": {"p50_ms": 8.0, "normalised": 1.6}, "memory": measured(6.0)}
    lines = baselines.diff({"entries": {"a/b/fp32": faster, "n/b/fp32": entry}},
                           {"entries": {"a/b/fp32": entry, "k/b/fp32": entry}})
    assert lines[0] == ("~ a/b/fp32: p50 10 → 8 ms (-20 %), normalised 2 → 1.6 (-20 %), "
                        "model memory 5.0 → 6.0 MB")
    assert lines[1] == ("+ n/b/fp32: p50 10 ms, normalised 2, model memory 5.0 MB "
                        "(+ runtime 40.0 MB) (new)")
    assert lines[2] == "= 1 other entries kept unchanged"


def test_diff_names_the_change_of_memory_figure():
    old = {"latency": {"p50_ms": 10.0, "normalised": 2.0}, "memory": {"peak_rss_mb": 60.4}}
    new = {"latency": {"p50_ms": 10.0, "normalised": 2.0}, "memory": measured(4.4, 41.0)}
    [line] = baselines.diff({"entries": {"a/b/fp32": new}}, {"entries": {"a/b/fp32": old}})
    assert line.endswith("peak RSS 60.4 MB (before the model figure) → model memory 4.4 MB "
                         "(+ runtime 41.0 MB)")


def test_stats_match_hand_computed_values():
    stats = Stats([0.001, 0.002, 0.003, 0.004], batch=2)
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.min_ms == pytest.approx(1.0)
    assert stats.stddev_ms == pytest.approx(1.2909944, rel=1e-6)
    assert stats.throughput_per_s == pytest.approx(800.0)
    assert set(stats.as_dict()) == set(Stats.fields)


def test_measure_latency_interleaves_and_loops_fast_calls():
    calls = {"model": 0, "cal": 0}

    def infer():
        calls["model"] += 1

    def calibrate():
        calls["cal"] += 1
        return 1e-3

    protocol = Protocol(min_iterations=20, min_time_s=0.0, warmup_max_s=0.05,
                        min_block_s=0.0005)
    result = measure_latency(infer, lambda: None, batch=1, protocol=protocol,
                             calibrate=calibrate)
    assert len(result.calibration_s) == len(result.ratios) >= 20
    assert result.loops > 1  # a no-op call is far below min_block_s
    assert len(result.samples_s) == result.loops * len(result.ratios)
    assert calls["model"] >= len(result.samples_s) and calls["cal"] >= len(result.ratios)
    assert result.as_dict()["loops"] == result.loops


def test_calibration_returns_the_geometric_mean_of_its_parts():
    calibration = Calibration()
    seconds = calibration()
    parts = calibration.medians_ms()
    assert set(parts) == {"gemm", "elementwise", "stream"}
    assert seconds * 1e3 == pytest.approx(np.exp(np.mean(np.log(list(parts.values())))))


def test_diff_command_compares_candidate_with_the_machine_baseline(tmp_path, capsys):
    from infergate.__main__ import main

    entry = {"latency": {"p50_ms": 10.0, "normalised": 2.0,
                         "processes": [{"p50_ms": 10.0, "normalised": 2.0}]},
             "memory": {"peak_rss_mb": 50.0}}
    machine = baselines.machine()
    BaselineStore(tmp_path / "base" / f"{machine['id']}.json").merge({"a/b/fp32": entry})
    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps({"schema": baselines.SCHEMA, "machine": machine,
                                     "entries": {"a/b/fp32": entry}}))
    assert main(["baselines", "diff", str(candidate), "--baselines-dir",
                 str(tmp_path / "base")]) == 0
    assert "~ a/b/fp32: p50 10 → 10 ms (+0 %)" in capsys.readouterr().out
    assert main(["baselines", "diff", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_probe_processes_start_with_a_fixed_memory_layout():
    import subprocess
    import sys

    from infergate.perf.probe import _fixed_layout, address_randomization

    if address_randomization() is None:
        pytest.skip("personality(2) is not available here")
    code = "from infergate.perf.probe import address_randomization as a; print(a())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         preexec_fn=_fixed_layout, check=True).stdout.strip()
    assert out == "False"


def probe_results(scale=1.0, n=1, spread=0.01, seed=0):
    """Whole probe replies (what judge_alternating keeps), around ``processes``."""
    return [{"latency": {**p, "calibration": "c"}, "memory": {"peak_rss_mb": 100.0}}
            for p in processes(scale, n=n, spread=spread, seed=seed)]


def alternating(scale, spread=0.01, confirm=8, **kw):
    order, current = [], probe_results(scale, spread=spread)

    def measure(side, scale_):
        def run():
            order.append(side)
            return probe_results(scale_, spread=spread, seed=len(order))[0]
        return run

    verdict = gate.judge_alternating(
        "x", current, [], measure("C", scale), measure("R", 1.0), against="main (abc)",
        threads=1, dims={}, confirm=confirm, **kw)
    return verdict, order, current


def test_a_b_pairs_alternate_and_unchanged_code_passes():
    verdict, order, current = alternating(1.0)
    assert verdict.status == "pass"
    # The first current process is already measured: R, then ABBA pairs (R C, C R, ...).
    assert order[:5] == ["R", "R", "C", "C", "R"]
    assert order.count("C") + 1 == len(current) == order.count("R")
    assert "of main (abc), alternating in this run" in str(verdict)
    assert verdict.figures["run_spread_pct"] == 0


def test_a_b_regression_is_judged_on_every_pair_with_the_numbers():
    verdict, order, current = alternating(1.2, confirm=4)
    assert verdict.status == "regressed" and len(current) == 5 and order.count("R") == 5
    assert re.search(r"normalised p50 \+(19|20|21) % \(3.0\d* → 3.[56]\d* x calibration",
                     str(verdict))
    assert "(5 fresh processes vs 5 of main (abc), alternating in this run)" in str(verdict)


def test_a_b_stops_early_when_no_number_of_pairs_could_decide():
    verdict, _, current = alternating(1.0, spread=0.3)
    assert verdict.status == "insufficient" and len(current) < 9


def test_a_b_improvement_names_the_revision():
    verdict, _, _ = alternating(0.5, confirm=4)
    assert verdict.status == "improved" and "improved on main (abc)" in str(verdict)
