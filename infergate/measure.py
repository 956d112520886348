"""Latency and memory probes.

Latency is measured by interleaving the model with a fixed calibration workload in one
process: on shared runners absolute times drift 10-30 % between processes, while the ratio
of two workloads interleaved in the same process holds within ~1 %. Both figures are kept;
the gate chooses which to trust.

Calibration workload: a fixed float32 GEMM chain in numpy (OpenBLAS), run on the same thread
count as the model. It exercises what inference kernels exercise (vector FMA units, caches,
memory bandwidth), so frequency scaling and noisy neighbours slow it the way they slow the
model; and it does not depend on any backend under test, so upgrading onnxruntime or torch
cannot move the yardstick.
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

CALIBRATION_SIZE = 192  # 3 x (192x192 @ 192x192): ~0.5 ms on one Zen4 core


def calibration_workload() -> Callable[[], None]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((CALIBRATION_SIZE, CALIBRATION_SIZE), dtype=np.float32)
    b = rng.standard_normal((CALIBRATION_SIZE, CALIBRATION_SIZE), dtype=np.float32)
    out = np.empty_like(a)

    def run():
        for _ in range(3):
            np.matmul(a, b, out=out)

    return run


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
    # this long: the calibration GEMM evicts caches, and only a block's first call pays.
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

    @cached_property
    def stats(self) -> Stats:
        return Stats(self.samples_s, self.batch)

    @cached_property
    def normalised(self) -> float:
        """Median of per-block model/calibration ratios: drift cancels pairwise."""
        return statistics.median(self.ratios)

    def as_dict(self) -> dict:
        return {**self.stats.as_dict(), "normalised": self.normalised,
                "calibration_p50_ms": statistics.median(self.calibration_s) * 1e3,
                "warmup_iterations": self.warmup_iterations, "loops": self.loops,
                # Raw samples, one per block (its median call): the unit the gate's statistics
                # compare; percentiles above use every call.
                "samples_ms": [_sig(statistics.median(b) * 1e3) for b in self.blocks()],
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
                    calibrate: Callable[[], None] | None = None) -> LatencyResult:
    """Warm up ``infer`` until stable, then interleave it with the calibration workload."""
    calibrate = calibrate or calibration_workload()
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
        calibration.append(_timed(calibrate, lambda: None))
        samples.extend(block)
        ratios.append(statistics.median(block) / calibration[-1])
    return LatencyResult(samples, calibration, ratios, len(warm), batch, loops)


def current_rss_bytes() -> int:
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
    """Pin the BLAS/OpenMP pools of this process; returns what was pinned, for the record."""
    from threadpoolctl import threadpool_limits

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    threadpool_limits(threads)
    return {"threads": threads}
