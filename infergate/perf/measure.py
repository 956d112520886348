"""Latency and memory probes.

Latency is measured by interleaving the model with a fixed calibration workload in one
process: on shared runners absolute times drift 10-30 % between processes, while the ratio
of two workloads interleaved in the same process moves much less. Both figures are kept;
the gate chooses which to trust.

Calibration workload: three fixed numpy kernels, one per resource that inference kernels
compete for and that neighbours on a shared host take away in different proportions - a
float32 GEMM (vector FMA units), an elementwise exp/tanh pass over an L2-sized buffer
(the softmax/GELU/normalisation kind of kernel) and an 8 MB copy (shared L3 and memory
bandwidth). The calibration time is their geometric mean, so each resource weighs the same.
Measured on this machine type over 20 minutes of fresh processes, this composite tracked
MiniLM on ONNX Runtime, OpenVINO and PyTorch better than any one kernel (between-process
scatter of the ratio 5.5 % RMS vs 5.7-16 % for single kernels and 4-12 % for absolute time).
None of it depends on a backend under test, so upgrading onnxruntime or torch cannot move
the yardstick.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np


def _gemm() -> Callable[[], None]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((192, 192), dtype=np.float32)
    b = rng.standard_normal((192, 192), dtype=np.float32)
    out = np.empty_like(a)

    def run():
        for _ in range(3):
            np.matmul(a, b, out=out)

    return run


def _elementwise() -> Callable[[], None]:
    x = np.linspace(-3, 3, 64 * 1024, dtype=np.float32)  # 256 KB: stays in L2
    y = np.empty_like(x)

    def run():
        np.exp(x, out=y)
        np.add(y, x, out=y)
        np.tanh(y, out=y)

    return run


def _stream() -> Callable[[], None]:
    src = np.ones(2 * 2**20, np.float32)  # 8 MB: through the shared L3
    dst = np.empty_like(src)

    def run():
        np.copyto(dst, src)

    return run


CALIBRATION_PARTS = {"gemm": _gemm, "elementwise": _elementwise, "stream": _stream}
CALIBRATION = "geomean(" + ", ".join(CALIBRATION_PARTS) + ")/1"  # recorded; bump on change


class Calibration:
    """Calling it runs every part once and returns their geometric-mean time in seconds."""

    def __init__(self):
        self.parts = {name: make() for name, make in CALIBRATION_PARTS.items()}
        self.times: dict[str, list[float]] = {name: [] for name in self.parts}

    def __call__(self) -> float:
        logs = 0.0
        for name, run in self.parts.items():
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
            self.times[name].append(elapsed)
            logs += math.log(elapsed)
        return math.exp(logs / len(self.parts))

    def medians_ms(self) -> dict[str, float]:
        return {name: statistics.median(t) * 1e3 for name, t in self.times.items() if t}


@dataclass(frozen=True)
class Protocol:
    """How long to measure: warm up until stable (bounded), then at least ``min_iterations``
    and ``min_time_s``."""

    min_iterations: int = 30
    min_time_s: float = 2.0
    max_iterations: int = 1000  # blocks
    warmup_window: int = 5  # stable when two consecutive windows' medians agree within tolerance
    warmup_tolerance: float = 0.05
    warmup_max_s: float = 3.0
    # Very fast models run k calls between calibration calls, so each block spans at least
    # this long: the calibration evicts caches, and only a block's first call pays.
    min_block_s: float = 0.005


class Stats:
    """Summary statistics of a sample list (seconds in, milliseconds out)."""

    fields = ("n", "min_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stddev_ms", "cov",
              "throughput_per_s")

    def __init__(self, samples_s: list[float], batch: int = 1):
        if not samples_s:
            raise ValueError("no samples")
        self.samples_s = list(samples_s)
        self.batch = batch

    def _pct(self, q: float) -> float:
        return float(np.percentile(self.samples_s, q)) * 1e3

    @cached_property
    def n(self) -> int:
        return len(self.samples_s)

    @cached_property
    def min_ms(self) -> float:
        return min(self.samples_s) * 1e3

    @cached_property
    def p50_ms(self) -> float:
        return self._pct(50)

    @cached_property
    def p90_ms(self) -> float:
        return self._pct(90)

    @cached_property
    def p99_ms(self) -> float:
        return self._pct(99)

    @cached_property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_s) * 1e3

    @cached_property
    def stddev_ms(self) -> float:
        return statistics.stdev(self.samples_s) * 1e3 if self.n > 1 else 0.0

    @cached_property
    def cov(self) -> float:
        return self.stddev_ms / self.mean_ms if self.mean_ms else math.inf

    @cached_property
    def throughput_per_s(self) -> float:
        return self.batch * 1e3 / self.p50_ms

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.fields}


@dataclass
class LatencyResult:
    samples_s: list[float]  # every timed call
    calibration_s: list[float]  # one per block
    ratios: list[float]  # per block: median call time / calibration time
    warmup_iterations: int
    batch: int
    loops: int = 1  # calls per block
    calibration_parts_ms: dict | None = None

    @cached_property
    def stats(self) -> Stats:
        return Stats(self.samples_s, self.batch)

    @cached_property
    def normalised(self) -> float:
        """Median of per-block model/calibration ratios: drift cancels pairwise."""
        return statistics.median(self.ratios)

    def as_dict(self) -> dict:
        return {**self.stats.as_dict(), "normalised": self.normalised,
                "calibration": CALIBRATION,
                "calibration_p50_ms": statistics.median(self.calibration_s) * 1e3,
                "calibration_parts_ms": self.calibration_parts_ms or {},
                "warmup_iterations": self.warmup_iterations, "loops": self.loops,
                # Raw samples, one per block (its median call): the unit the gate's statistics
                # compare; percentiles above use every call.
                "samples_ms": [_sig(statistics.median(b) * 1e3) for b in self.blocks()],
                # Each block's mean call: pytest-benchmark's own unit (a round of `loops`
                # iterations), for its table and JSON.
                "block_means_ms": [_sig(statistics.fmean(b) * 1e3) for b in self.blocks()],
                "normalised_samples": [_sig(r) for r in self.ratios]}

    def blocks(self) -> list[list[float]]:
        return [self.samples_s[i:i + self.loops]
                for i in range(0, len(self.samples_s), self.loops)]


def _sig(x: float) -> float:
    """Six significant digits: plenty for timings, and baselines stay small to review."""
    return float(f"{x:.6g}")


def _timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    """Seconds for one call of ``fn``, device work included."""
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure_latency(infer: Callable[[], object], synchronize: Callable[[], None], batch: int,
                    protocol: Protocol = Protocol(),
                    calibrate: Callable[[], float] | None = None) -> LatencyResult:
    """Warm up ``infer`` until stable, then interleave it with the calibration workload
    (``calibrate()`` runs it and returns its time in seconds)."""
    calibrate = calibrate or Calibration()
    w = protocol.warmup_window
    warm, start = [], time.perf_counter()
    while time.perf_counter() - start < protocol.warmup_max_s:
        warm.append(_timed(infer, synchronize))
        calibrate()
        if len(warm) >= 2 * w:
            previous, last = statistics.median(warm[-2 * w:-w]), statistics.median(warm[-w:])
            if abs(last - previous) <= protocol.warmup_tolerance * previous:
                break
    loops = max(1, math.ceil(protocol.min_block_s / statistics.median(warm[-w:])))
    samples, calibration, ratios = [], [], []
    start = time.perf_counter()
    while len(ratios) < protocol.max_iterations and (
            len(ratios) < protocol.min_iterations
            or time.perf_counter() - start < protocol.min_time_s):
        block = [_timed(infer, synchronize) for _ in range(loops)]
        calibration.append(calibrate())
        samples.extend(block)
        ratios.append(statistics.median(block) / calibration[-1])
    parts = calibrate.medians_ms() if isinstance(calibrate, Calibration) else None
    return LatencyResult(samples, calibration, ratios, len(warm), batch, loops, parts)


def current_rss_bytes() -> int:
    """Resident memory now: /proc/self/statm on Linux (what psutil reads there too, and the
    GPU machine's Python has no psutil), psutil elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The kernel's RSS high-water mark for this process (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pin_threads(threads: int) -> dict:
    """Pin the BLAS/OpenMP pools of this process; returns what was pinned, for the record.
    Without threadpoolctl (a bare GPU machine's Python) the environment variables pin the
    pools not yet started, and the record says the others were not pinned."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {"threads": threads,
                "blas_pools": "not pinned once started: threadpoolctl is not installed"}
    threadpool_limits(threads)
    return {"threads": threads}


@dataclass
class DeviceTimeResult:
    """Calls timed twice: on the host (perf_counter, through the runner's synchronisation)
    and on the device (CUDA events around the device work, ``device_time``)."""

    host_s: list[float]
    device_ms: list[float]
    synchronization: str = ""

    def as_dict(self) -> dict:
        device = Stats([ms / 1e3 for ms in self.device_ms])
        host = Stats(self.host_s)
        return {"n": device.n, "device_p50_ms": device.p50_ms, "device_p90_ms": device.p90_ms,
                "device_mean_ms": device.mean_ms, "device_cov": device.cov,
                "host_p50_ms": host.p50_ms,
                # What the host spends beyond the device's bracket: launches, dispatch,
                # copies left outside the events (median of per-call differences).
                "host_overhead_p50_ms": statistics.median(
                    h * 1e3 - d for h, d in zip(self.host_s, self.device_ms, strict=True)),
                "synchronization": self.synchronization,
                "device_samples_ms": [_sig(ms) for ms in self.device_ms]}


def measure_device_time(infer: Callable[[], object], synchronize: Callable[[], None], timer,
                        min_iterations: int = 30, min_time_s: float = 0.5,
                        max_iterations: int = 1000) -> DeviceTimeResult:
    """Time ``infer`` (whose runner records ``timer``'s events) on host and device, one call
    at a time, until both ``min_iterations`` and ``min_time_s``. Each call's events are read
    after it synchronised, outside the timed region. Runs after the latency measurement, so
    the events' own cost never enters the host figures the gate compares."""
    host, device = [], []
    start = time.perf_counter()
    while len(host) < max_iterations and (len(host) < min_iterations
                                          or time.perf_counter() - start < min_time_s):
        host.append(_timed(infer, synchronize))
        taken = timer.take_ms()
        if len(taken) != 1:
            raise RuntimeError(f"expected one device-time bracket per call, got {len(taken)}: "
                               f"the runner's run_impl must call _device_begin/_device_end "
                               f"once")
        device.append(taken[0])
    return DeviceTimeResult(host, device)
