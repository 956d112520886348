"""Device figures of the GPU backends without a GPU: the CUDA-event bookkeeping (fake events),
the device-time pass, NVML phases, the baseline entry and gate, the report columns, the
driver in the machine id, and which tests the matrix generates."""

import math
import os
import subprocess
import sys

import pytest

from infergate import machine_id
from infergate.backends.base import Backend, Runner
from infergate.backends.device_time import CudaEventTimer, DeviceFigures
from infergate.backends.gpu_memory import MB, device_memory_figures
from infergate.backends.ort_gpu import with_compute_stream
from infergate.build.subject import ModelUnderTest
from infergate.perf import baselines, gate, probe
from infergate.perf.measure import DeviceTimeResult, measure_device_time
from infergate.perf.probe import run_probe
from infergate.report.view import perf_table, performance_rows
from tests.conftest import build_tiny, make_tiny_spec
from tests.test_gpu_backends import fake_nvml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    """Events that read a fake GPU clock: ``advance(ms)`` is device work."""

    def __init__(self):
        self.now_ms = 0.0
        self.recorded = []  # (stream, time) per record()
        self.synchronized = []

    def event(self):
        clock = self

        class Event:
            def record(self, stream=None):
                self.at = clock.now_ms
                clock.recorded.append((stream, self.at))

            def synchronize(self):
                clock.synchronized.append(self.at)

            def elapsed_time(self, other):
                return other.at - self.at

        return Event()


def test_event_timer_brackets_each_call_on_its_stream():
    clock = FakeClock()
    timer = CudaEventTimer(stream="s1", event=clock.event)
    for work in (2.0, 3.5):
        timer.begin()
        clock.now_ms += work
        timer.end()
        clock.now_ms += 10.0  # host time between calls is no device time
    assert timer.take_ms() == [2.0, 3.5]
    assert {stream for stream, _ in clock.recorded} == {"s1"}
    assert clock.synchronized == [15.5]  # waits for the last end event only
    assert timer.take_ms() == []  # taken pairs are forgotten


def test_event_timer_refuses_unbalanced_brackets():
    timer = CudaEventTimer(event=FakeClock().event)
    with pytest.raises(RuntimeError, match="without begin"):
        timer.end()
    timer.begin()
    with pytest.raises(RuntimeError, match="twice"):
        timer.begin()
    with pytest.raises(RuntimeError, match="between begin"):
        timer.take_ms()


class FakeGpuRunner(DeviceFigures, Runner):
    """A runner whose run() enqueues ``work_ms`` of device work inside its bracket."""

    synchronization = "test: synchronous"
    allocator_figure = "fake_peak_mb"

    def __init__(self, clock, work_ms=4.0, brackets=1, outputs=("y",)):
        super().__init__("tiny-fakegpu-fp32", outputs)
        self.clock, self.work_ms, self.brackets = clock, work_ms, brackets

    def device_stream(self):
        return "fake-stream"

    def device_timer(self):
        return CudaEventTimer(self.device_stream(), event=self.clock.event)

    def run_impl(self, feed):
        for _ in range(self.brackets):
            self._device_begin()
            self.clock.now_ms += self.work_ms
            self._device_end()
        return {name: feed["x"] for name in self.output_names}

    def memory_stats(self):
        return {"fake_peak_mb": 12.0}


def build_probe_tiny(store):
    return build_tiny(store)


# Found by the probe's fresh process at this module's top level (isolation.find_spec).
PROBE_TINY = make_tiny_spec(name="probe_tiny", build=build_probe_tiny)


class FakeGpuBackend(Backend):
    """A backend that says it runs on CUDA, for the probe's device path without a GPU."""

    name = "fakegpu"
    device = "cuda"
    precisions = ("fp32",)

    def prepare(self, subject, precision):
        return FakeGpuRunner(FakeClock(), work_ms=2.5, outputs=subject.spec.outputs)


def test_runners_record_nothing_unless_the_probe_sets_a_timer():
    clock = FakeClock()
    with FakeGpuRunner(clock) as runner:
        runner.run({"x": [1.0]})
    assert clock.recorded == []


def test_device_time_pass_pairs_host_and_device_per_call():
    clock = FakeClock()
    runner = FakeGpuRunner(clock, work_ms=4.0).activate()
    runner.timer = CudaEventTimer(event=clock.event)
    result = measure_device_time(lambda: runner.run({"x": [1.0]}), runner.synchronize,
                                 runner.timer, min_iterations=7, min_time_s=0.0)
    assert len(result.device_ms) == len(result.host_s) == 7
    figures = result.as_dict()
    assert figures["device_p50_ms"] == pytest.approx(4.0)
    assert figures["n"] == 7 and figures["device_samples_ms"] == [4.0] * 7
    # The fake device work costs no host time: all of the host's is overhead, none negative.
    assert figures["host_overhead_p50_ms"] == pytest.approx(figures["host_p50_ms"] - 4.0)


def test_device_time_pass_refuses_a_runner_without_exactly_one_bracket():
    clock = FakeClock()
    for brackets in (0, 2):
        runner = FakeGpuRunner(clock, brackets=brackets).activate()
        runner.timer = CudaEventTimer(event=clock.event)
        with pytest.raises(RuntimeError, match=f"got {brackets}"):
            measure_device_time(lambda r=runner: r.run({"x": [1.0]}), runner.synchronize,
                                runner.timer, min_iterations=1, min_time_s=0.0)


def test_probe_device_figures_use_the_runners_stream_and_clear_the_timer():
    clock = FakeClock()
    runner = FakeGpuRunner(clock, work_ms=2.5).activate()
    nvml = probe.NvmlPhases(enabled=False)
    device = probe._device_figures(runner, {"x": [1.0]}, nvml)
    assert device["time"]["device_p50_ms"] == pytest.approx(2.5)
    assert {stream for stream, _ in clock.recorded} == {"fake-stream"}
    assert device["synchronization"] == device["time"]["synchronization"] == "test: synchronous"
    assert runner.timer is None and nvml.figures == {}


def test_a_fresh_probe_of_a_cuda_backend_returns_device_figures(store):
    subject = ModelUnderTest(PROBE_TINY, store)
    result = run_probe(subject, FakeGpuBackend(), "fp32", threads=1, min_time_s=0.05,
                       prepare=lambda: None)
    device = result["device"]
    assert device["time"]["device_p50_ms"] == pytest.approx(2.5)
    assert device["time"]["n"] >= 30 and device["synchronization"] == "test: synchronous"
    assert device["memory"]["allocator_peak_mb"] == 12.0
    assert device["memory"]["allocator"] == {"fake_peak_mb": 12.0}
    entry = baselines.make_entry([result], threads=1, dims=PROBE_TINY.benchmark_dims())
    assert entry["device"]["time"]["processes"] == [pytest.approx(2.5)]
    assert baselines.entry_problems(entry) == []


def test_nvml_phases_read_only_for_gpu_backends(monkeypatch):
    me = os.getpid()
    fake, calls = fake_nvml([(me, 640 * MB)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    off = probe.NvmlPhases(enabled=False)
    off.read("runtime")
    assert off.figures == {} and calls == []
    on = probe.NvmlPhases(enabled=True)
    assert calls == ["nvmlInit"]  # held open for the probe's life
    on.read("runtime")
    assert on.figures == {"runtime": 640.0}
    # each reading's own init is balanced; the held one stays open
    assert calls.count("nvmlInit") == calls.count("nvmlShutdown") + 1


@pytest.mark.parametrize("nvml,allocator,expected", [
    ({"before": 0.0, "runtime": 500.0, "load": 560.0, "run": 580.0}, {"fake_peak_mb": 12.0},
     {"model_device_mb": 80.0, "runtime_device_mb": 500.0, "allocator_peak_mb": 12.0}),
    # NVML cannot see this pid (another pid namespace): the allocator's figure alone
    ({}, {"fake_peak_mb": 12.0}, {"allocator_peak_mb": 12.0}),
    # the model fits in the runtime's pools: nothing above them, never negative
    ({"runtime": 500.0, "load": 498.0}, {}, {"model_device_mb": 0.0,
                                             "runtime_device_mb": 500.0}),
])
def test_device_memory_figures(nvml, allocator, expected):
    figures = device_memory_figures(nvml, allocator, "fake_peak_mb")
    assert {k: v for k, v in figures.items() if k not in ("nvml_mb", "allocator")} == expected
    assert figures["nvml_mb"] == nvml and figures["allocator"] == allocator


def test_ort_runs_its_gpu_providers_on_the_given_stream():
    providers = [("TensorrtExecutionProvider", {"device_id": 0}),
                 ("CUDAExecutionProvider", {"use_tf32": 0}), ("CPUExecutionProvider", {})]
    streamed = with_compute_stream(providers, 140234)
    assert streamed[0][1] == {"device_id": 0, "user_compute_stream": "140234"}
    assert streamed[1][1] == {"use_tf32": 0, "user_compute_stream": "140234"}
    assert streamed[2] == ("CPUExecutionProvider", {})
    assert providers[1][1] == {"use_tf32": 0}  # the backend's own table is not changed


def process(p50_ms, device_ms=None, model_device_mb=None, allocator_mb=None):
    result = {"latency": {"p50_ms": p50_ms, "normalised": p50_ms / 2, "calibration": "c"},
              "memory": {"model_peak_mb": 10.0}}
    if device_ms is not None:
        memory = {k: v for k, v in (("model_device_mb", model_device_mb),
                                    ("allocator_peak_mb", allocator_mb)) if v is not None}
        result["device"] = {"synchronization": "sync",
                            "time": DeviceTimeResult([p50_ms / 1e3], [device_ms]).as_dict(),
                            "memory": {**memory, "nvml_mb": {}}}
    return result


def test_a_gpu_entry_stores_device_figures_per_process():
    entry = baselines.make_entry([process(2.0, 1.5, 80.0, 12.0), process(2.1, 1.6, 82.0, 12.0),
                                  process(2.2, 1.4, 84.0, 12.0)], threads=1, dims={"batch": 1})
    device = entry["device"]
    assert device["time"] == {"p50_ms": 1.5, "processes": [1.5, 1.6, 1.4]}
    assert device["memory"] == {"model_device_mb": 82.0, "allocator_peak_mb": 12.0}
    assert device["synchronization"] == "sync"
    assert baselines.entry_problems(entry) == []
    cpu = baselines.make_entry([process(2.0)], threads=1, dims={"batch": 1})
    assert "device" not in cpu  # a CPU backend's entry is unchanged


def test_bad_device_figures_are_named():
    entry = baselines.make_entry([process(2.0, 1.5, 80.0)], threads=1, dims={"batch": 1})
    entry["device"]["time"]["processes"] = [1.5, math.nan]
    entry["device"]["memory"]["model_device_mb"] = -1.0
    problems = baselines.entry_problems(entry)
    assert any("device.time.processes" in p for p in problems)
    assert "device.memory.model_device_mb must be a finite number >= 0" in problems


def device_baseline(times=(1.00, 1.01, 0.99, 1.00, 1.00), model_mb=80.0, allocator_mb=12.0):
    return baselines.make_entry([process(2.0, t, model_mb, allocator_mb) for t in times],
                                threads=1, dims={"batch": 1})


def test_device_time_gate():
    base = device_baseline()
    judge = gate.judge_device_time
    assert judge("c", [1.0, 1.005, 0.995], base).status == "pass"
    slow = judge("c", [1.30, 1.31, 1.29], base)
    assert slow.status == "regressed" and not slow
    assert "device p50 +30 %" in str(slow) and "3 fresh processes vs 5" in str(slow)
    assert judge("c", [0.70, 0.71, 0.69], base).status == "improved"
    # a wide scatter cannot tell +10 % from nothing
    assert judge("c", [1.10], base, prior=gate.Spread(0.2, 40)).status == "insufficient"
    old = judge("c", [1.0], baselines.make_entry([process(2.0)], threads=1, dims={}))
    assert old.status == gate.NO_DEVICE_BASELINE and old  # skipped, never a failure


def test_device_memory_gate_judges_each_figure_both_have():
    base = device_baseline(model_mb=80.0, allocator_mb=12.0)
    judge = gate.judge_device_memory
    assert judge("c", {"model_device_mb": 84.0, "allocator_peak_mb": 12.5}, base).status == "pass"
    grown = judge("c", {"model_device_mb": 84.0, "allocator_peak_mb": 40.0}, base)
    assert grown.status == "regressed" and "allocator peak +233 %" in str(grown)
    # NVML absent now (container): the allocator's figure alone is judged
    assert judge("c", {"allocator_peak_mb": 12.0}, base).status == "pass"
    assert judge("c", {"model_device_mb": 400.0}, base).status == "regressed"
    none = judge("c", {}, base)
    assert none.status == gate.NO_DEVICE_BASELINE and "none" in str(none)


def test_baseline_diff_shows_device_figures_of_gpu_entries():
    old = {"entries": {"m/torch_cuda/fp32": device_baseline(times=(1.0,), model_mb=80.0)}}
    new = {"entries": {"m/torch_cuda/fp32": device_baseline(times=(1.2,), model_mb=96.0),
                       "m/torch_cuda/fp16": device_baseline(times=(0.5,), model_mb=40.0),
                       "m/torch/fp32": baselines.make_entry([process(2.0)], threads=1,
                                                            dims={})}}
    lines = baselines.diff(new, old)
    assert any(line.startswith("~ m/torch_cuda/fp32") and line.endswith(
        "device p50 1 → 1.2 ms, device memory 80.0 → 96.0 MB") for line in lines), lines
    assert any(line.startswith("+ m/torch_cuda/fp16") and
               "device p50 0.5 ms, device memory 40.0 MB (new)" in line for line in lines)
    assert any(line.startswith("+ m/torch/fp32") and "device" not in line for line in lines)


def test_device_spread_pools_processes_of_gpu_entries_only():
    entries = {"a": device_baseline(times=(1.0, 1.1)), "b": device_baseline(times=(2.0, 2.0)),
               "cpu": baselines.make_entry([process(2.0), process(2.2)], threads=1, dims={})}
    spread = gate.pooled_device_spread(entries)
    assert spread.dof == 2
    assert spread.sd == pytest.approx(math.sqrt((math.log(1.1) / 2) ** 2 * 2 / 2))


def perf_entry(test, kind, figures, outcome="skipped", backend="torch_cuda"):
    return {"test": test, "id": f"mlp-{backend}-fp32", "model": "mlp", "backend": backend,
            "precision": "fp32", "outcome": outcome, kind: figures}


def test_report_shows_device_columns_only_where_a_device_was_measured():
    cpu_only = {"results": [perf_entry("test_latency", "latency", {"p50_ms": 1.0},
                                       backend="torch")]}
    header, _ = perf_table(performance_rows(cpu_only))
    assert "device p50 ms" not in header
    gpu = {"results": cpu_only["results"] + [
        perf_entry("test_latency", "latency", {"p50_ms": 0.5}),
        perf_entry("test_device_time", "device_time",
                   {"device_p50_ms": 0.31, "host_overhead_p50_ms": 0.19, "verdict": "pass",
                    "delta_pct": 1.5}, outcome="passed"),
        perf_entry("test_device_memory", "device_memory",
                   {"model_device_mb": 82.0, "allocator_peak_mb": 12.0, "verdict": "pass"},
                   outcome="passed")]}
    header, body = perf_table(performance_rows(gpu))
    row = dict(zip(header, next(r for r in body if r[0] == "mlp-torch_cuda-fp32"), strict=True))
    assert row["device p50 ms"] == "0.31" and row["host overhead p50 ms"] == "0.19"
    assert row["Δ device p50"] == "+1.5 %" and row["device time verdict"] == "✅ pass"
    assert row["device MB (NVML, model)"] == "82" and row["allocator peak MB"] == "12"
    assert row["p50 ms"] == "0.5"  # the host figure stays in its own column


def test_a_device_memory_skip_is_its_own_slot_not_host_memory():
    measured = perf_entry("test_device_memory", "device_memory", {"model_device_mb": 8.0})
    rows = performance_rows({"results": [
        perf_entry("test_memory", "memory", {"model_peak_mb": 30.0}),
        {**measured, "id": "gru-torch_cuda-fp32", "model": "gru"},
        # a skip without figures: slotted by its test's name, which also holds "memory"
        {"test": "test_device_memory", "id": "mlp-torch_cuda-fp32", "model": "mlp",
         "backend": "torch_cuda", "precision": "fp32", "outcome": "skipped"}]})
    mlp = next(r for r in rows if r.label == "mlp-torch_cuda-fp32")
    assert mlp.memory["test"] == "test_memory"
    assert mlp.device_memory["test"] == "test_device_memory"


def test_driver_branch_is_part_of_a_gpu_machine_id(monkeypatch):
    fields = {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "stepping": "8",
              "flags": "avx2 avx512f amx_bf16"}
    gpu = {"name": "NVIDIA H100 80GB HBM3", "capability": "90", "driver": "580.65.06"}
    ident = machine_id.identify(fields, 16, gpu)
    assert ident["id"].endswith("-nvidia-h100-80gb-hbm3-sm90-drv580")
    assert "driver 580.65.06" in machine_id.describe({**ident, "cpuinfo": "x"})
    unknown = machine_id.identify(fields, 16, {**gpu, "driver": None})
    assert unknown["id"].endswith("-sm90")


def test_driver_version_from_nvml(monkeypatch):
    fake, calls = fake_nvml()
    fake.nvmlSystemGetDriverVersion = lambda: b"580.65.06"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert machine_id.nvidia_driver() == "580.65.06" and calls[-1] == "nvmlShutdown"
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert machine_id.nvidia_driver() is None


def test_device_tests_are_generated_for_cuda_backends_only():
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "suites/performance/test_device.py", "--tier", "full", "--models", "mlp"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    ids = [line for line in out.stdout.splitlines() if "::test_device_" in line]
    assert ids, out.stdout + out.stderr
    backends = {line.split("[")[1].split("-")[1] for line in ids}
    expected = {"torch_cuda", "ort_cuda", "ort_trt", "tensorrt"}
    # torch_compile runs on CUDA only where there is a GPU
    assert backends == expected, backends
    assert "test_device_time[mlp-tensorrt-fp8]" in out.stdout
    assert "test_device_memory[mlp-torch_cuda-bf16]" in out.stdout


def test_every_gpu_runner_gives_device_figures_and_states_its_synchronisation():
    from infergate.backends.ort_gpu import OrtGpuRunner
    from infergate.backends.tensorrt_runner import TensorRtRunner
    from infergate.backends.torch_compile import CompiledCudaRunner
    from infergate.backends.torch_cuda import TorchCudaRunner

    for runner in (TorchCudaRunner, CompiledCudaRunner, OrtGpuRunner, TensorRtRunner):
        assert issubclass(runner, DeviceFigures), runner
        assert "device time brackets" in runner.synchronization, runner  # what it holds
    assert TorchCudaRunner.allocator_figure == "cuda_max_allocated_mb"
    assert OrtGpuRunner.allocator_figure is None  # no arena statistics in ORT's Python API
