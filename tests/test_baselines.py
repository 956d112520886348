"""The performance gate's statistics, baseline store and probes, on synthetic samples."""

import json

import numpy as np
import pytest

from infergate import baselines
from infergate.baselines import BaselineError, BaselineStore, judge_latency, judge_memory
from infergate.measure import Protocol, Stats, measure_latency


def samples(scale=1.0, n=60, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return list(scale * (1.0 + noise * rng.standard_normal(n)))


def measured(scale=1.0, norm_scale=None, **kw):
    """A probe-like latency dict: absolute ms samples and normalised ratio samples."""
    norm_scale = scale if norm_scale is None else norm_scale
    return {"samples_ms": samples(12.0 * scale, seed=1, **kw),
            "normalised_samples": samples(3.0 * norm_scale, seed=2, **kw)}


def baseline(libraries=None):
    base = measured()
    return {"latency": {**base, "p50_ms": 12.0, "normalised": 3.0},
            "memory": {"peak_rss_mb": 100.0},
            "libraries": libraries if libraries is not None
            else baselines.environment.describe()["libraries"]}


def test_unchanged_passes():
    verdict = judge_latency("m-b-p", measured(), baseline())
    assert verdict and verdict.status == "pass"


def test_real_slowdown_regresses_with_the_numbers():
    verdict = judge_latency("resnet50-ort_cpu-fp32", measured(1.23), baseline(), mode="absolute")
    assert not verdict and verdict.status == "regressed"
    message = str(verdict)
    assert message.startswith("resnet50-ort_cpu-fp32 p50 +23 % (12 → 14.")
    assert "threshold 10 %" in message and "p=" in message


def test_small_but_significant_slowdown_is_below_threshold():
    verdict = judge_latency("x", measured(1.05), baseline())
    assert verdict.status == "pass" and verdict.figures["normalised_p_slower"] < 0.01


def test_machine_drift_does_not_regress_the_normalised_gate():
    # Absolute time +30 % (a slower shared runner), normalised unchanged.
    drift = measured(1.30, norm_scale=1.0)
    assert judge_latency("x", drift, baseline(), mode="normalised").status == "pass"
    assert judge_latency("x", drift, baseline(), mode="absolute").status == "regressed"
    assert judge_latency("x", drift, baseline(), mode="both").status == "pass"


def test_improvement_is_a_visible_note_not_a_failure():
    verdict = judge_latency("x", measured(0.7), baseline())
    assert verdict and verdict.status == "improved"
    assert "consider updating the baseline" in str(verdict)


def test_noisy_samples_are_insufficient_and_strict_fails_them():
    noisy = measured(1.3, noise=0.6)
    verdict = judge_latency("x", noisy, baseline())
    assert verdict.status == "insufficient" and verdict
    assert not judge_latency("x", noisy, baseline(), strict=True)


def test_verdict_names_changed_library_versions():
    old = baseline(libraries={"onnxruntime": "1.31.1"})
    verdict = judge_latency("x", measured(), old)
    assert "baseline taken with onnxruntime 1.31.1, now" in str(verdict)


def test_override_reason_shows():
    verdict = judge_latency("x", measured(1.15), baseline(), threshold=0.2, reason="jittery EP")
    assert verdict.status == "pass" and "(jittery EP)" in str(verdict)


def test_memory_gate_has_threshold_and_slack():
    base = baseline()
    assert judge_memory("x", 120.0, base).status == "pass"  # 100 * 1.1 + 16 = 126
    verdict = judge_memory("x", 130.0, base)
    assert verdict.status == "regressed" and "100.0 → 130.0 MB" in str(verdict)
    assert judge_memory("x", 60.0, base).status == "improved"


def test_store_merges_atomically_and_keeps_other_entries(tmp_path):
    store = BaselineStore(tmp_path / "m.json")
    store.merge({"a/b/fp32": {"v": 1}, "c/d/fp32": {"v": 2}})
    store.merge({"a/b/fp32": {"v": 3}})
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["entries"] == {"a/b/fp32": {"v": 3}, "c/d/fp32": {"v": 2}}
    assert data["machine"]["id"] == baselines.machine()["id"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temp file left behind


def test_malformed_baseline_names_its_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="bad.json"):
        BaselineStore(path).load()
    path.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(BaselineError, match="not an infergate.baseline/1 file"):
        BaselineStore(path).load()


def test_machine_id_is_a_hardware_slug():
    machine = baselines.machine()
    assert machine["id"] == machine["id"].lower() and " " not in machine["id"]
    assert f"{machine['cores']}c" in machine["id"]


def test_diff_shows_new_changed_and_kept():
    entry = {"latency": {"p50_ms": 10.0, "normalised": 2.0}, "memory": {"peak_rss_mb": 50.0}}
    faster = {"latency": {"p50_ms": 8.0, "normalised": 1.6}, "memory": {"peak_rss_mb": 50.0}}
    lines = baselines.diff({"entries": {"a/b/fp32": faster, "n/b/fp32": entry}},
                           {"entries": {"a/b/fp32": entry, "k/b/fp32": entry}})
    assert lines[0] == ("~ a/b/fp32: p50 10 → 8 ms (-20 %), normalised 2 → 1.6 (-20 %), "
                        "peak RSS 50.0 → 50.0 MB")
    assert lines[1].startswith("+ n/b/fp32") and lines[2] == "= 1 other entries kept unchanged"


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

    protocol = Protocol(min_iterations=20, min_time_s=0.0, warmup_max_s=0.05,
                        min_block_s=0.0005)
    result = measure_latency(infer, lambda: None, batch=1, protocol=protocol,
                             calibrate=calibrate)
    assert len(result.calibration_s) == len(result.ratios) >= 20
    assert result.loops > 1  # a no-op call is far below min_block_s
    assert len(result.samples_s) == result.loops * len(result.ratios)
    assert calls["model"] >= len(result.samples_s) and calls["cal"] >= len(result.ratios)
    assert result.as_dict()["loops"] == result.loops


def test_diff_command_compares_candidate_with_the_machine_baseline(tmp_path, capsys):
    from infergate.__main__ import main

    entry = {"latency": {"p50_ms": 10.0, "normalised": 2.0}, "memory": {"peak_rss_mb": 50.0}}
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
