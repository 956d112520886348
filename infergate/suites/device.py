"""Is it still fast and lean on the GPU? Device time (CUDA events) and device memory (NVML,
the framework allocator's peak) against the stored baseline, for backends that run on CUDA.
Measured by the same fresh-process probe as test_latency and test_memory."""

import pytest

from infergate.perf.gate import NO_DEVICE_BASELINE, judge_device_memory, judge_device_time
from infergate.plugin.verdicts import hold


def _device(combo, measurement) -> dict:
    device = measurement.get("device")
    assert device, (f"{combo.id}: the probe returned no device figures (a CUDA runner must "
                    f"derive from DeviceFigures)")
    return device


@pytest.mark.matrix(performance=True, devices=("cuda",), wall_time=True)
def test_device_time(combo, measurement, perf, record):
    device = _device(combo, measurement)
    timed = {k: v for k, v in device["time"].items() if k != "device_samples_ms"}
    baseline = perf.baseline(combo)
    if baseline is None:
        record(device_time={**timed, "verdict": "no-baseline"})
        pytest.skip(perf.no_baseline())
    threshold, _, reason = perf.thresholds(combo)
    verdict = judge_device_time(
        combo.id, [p["device"]["time"]["device_p50_ms"] for p in perf.processes(combo)],
        baseline, threshold=threshold, strict=perf.config.getoption("--perf-strict"),
        reason=reason, prior=perf.device_prior,
        run_spread=perf.config.getoption("--perf-run-spread"))
    record(device_time={**timed, **verdict.figures, "verdict": verdict.status},
           perf_message=verdict.message)
    if verdict.status == NO_DEVICE_BASELINE:
        pytest.skip(verdict.message)
    print(verdict.message)
    if not perf.gates_wall_time:
        pytest.skip(f"device time reported, not gated in the {perf.tier} tier "
                    f"(--infergate-perf-wall-time): {verdict.status}: {verdict.message}")
    hold(verdict)


@pytest.mark.matrix(performance=True, devices=("cuda",))
def test_device_memory(combo, measurement, perf, record):
    memory = _device(combo, measurement)["memory"]
    baseline = perf.baseline(combo)
    if baseline is None:
        record(device_memory={**memory, "verdict": "no-baseline"})
        pytest.skip(perf.no_baseline())
    _, threshold, reason = perf.thresholds(combo)
    verdict = judge_device_memory(combo.id, memory, baseline, threshold=threshold,
                                  reason=reason)
    record(device_memory={**memory, **verdict.figures, "verdict": verdict.status},
           perf_message=verdict.message)
    if verdict.status == NO_DEVICE_BASELINE:
        pytest.skip(verdict.message)
    print(verdict.message)
    hold(verdict)
