"""Change points in each history series (machine id x test x combination x figure).

Otava's discipline with ruptures' penalised detection (PELT; Otava's own E-divisive
packages conflict with this stack's numpy):

1. Positive figures are taken as logarithms, so a step is relative (+3 % is +3 % at 1 ms and
   at 100 ms); cosine stays linear.
2. The series' noise is measured, not assumed: a robust sigma from its successive
   differences (the largest tenth trimmed), which a step moves by one difference only. PELT
   runs on the series in units of that sigma, so one penalty serves a 0.01 % instruction
   count and a 5 % wall time alike.
3. Every candidate step must pass a Welch t-test between the segments either side at ALPHA;
   the least significant is dropped and the rest re-tested until all pass. Segment variances
   are floored at the series' sigma: three points that happen to agree are not "certain".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
from scipy import stats

from infergate.history.store import FIGURES

ALPHA = 0.001
MIN_SIZE = 3  # runs on each side of a step: one odd night is an outlier, not a step
# x log(n), in units of the measured sigma; its false alarms and detections are measured by
# history/benchmark.py (README): 1 false change point in 800 stationary series of 120 runs.
PENALTY = 3.0
# Below this the figure does not move at all (an instruction count repeats to ~1e-5):
# the sigma is floored there so a deterministic series does not make any change infinite.
SIGMA_FLOOR = {"instructions": 1e-5, "memory_mb": 1e-4, "cosine": 1e-7, "task_score": 1e-4}
DEFAULT_FLOOR = 1e-4
LINEAR = {"cosine"}  # near 1 and possibly <= 0: steps in absolute units
TRIM = 0.9
TRIMMED_VARIANCE = 0.6230  # E[X^2 | |X| <= 1.645] of a standard normal: the trim's bias


def noise_sigma(y: np.ndarray, floor: float) -> float:
    """A night's noise from the successive differences (a step or a drift moves them little),
    their largest tenth left out (a step, a disturbed night): the RMS of the rest, made
    consistent for Gaussian noise. An RMS, not a MAD: a figure with two states (ONNX Runtime's
    instruction counts) has its differences either ~0 or the gap, and a median sees only 0."""
    if len(y) < 3:
        return floor
    d = np.abs(np.diff(y))
    kept = d[d <= np.quantile(d, TRIM)]
    return max(math.sqrt(float(np.mean(kept ** 2)) / (2 * TRIMMED_VARIANCE)), floor)


def _welch_p(left: np.ndarray, right: np.ndarray, sigma: float) -> float:
    v1, v2 = max(float(np.var(left, ddof=1)), sigma ** 2), max(float(np.var(right, ddof=1)),
                                                             sigma ** 2)
    n1, n2 = len(left), len(right)
    a, b = v1 / n1, v2 / n2
    t = (float(np.mean(right)) - float(np.mean(left))) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    return float(2 * stats.t.sf(abs(t), df))


def steps(y: np.ndarray, sigma: float, *, alpha: float = ALPHA, min_size: int = MIN_SIZE,
          penalty: float = PENALTY) -> list[tuple[int, float]]:
    """(index where the new level starts, p-value) for each significant step of ``y``."""
    import ruptures

    n = len(y)
    if n < 2 * min_size:
        return []
    z = (y - np.median(y)) / sigma
    # The linear kernel's cost is l2's, and ruptures solves its penalised problem (PELT) in
    # C: ~1 ms for a year of nights where the Python Pelt(model="l2") takes ~1 s.
    found = [int(i) for i in ruptures.KernelCPD(kernel="linear", min_size=min_size).fit(
        z).predict(pen=penalty * math.log(n))[:-1]]
    while found:
        edges = [0, *found, n]
        ps = [_welch_p(y[edges[i]:edges[i + 1]], y[edges[i + 1]:edges[i + 2]], sigma)
              for i in range(len(found))]
        worst = int(np.argmax(ps))
        if ps[worst] <= alpha:
            return list(zip(found, ps, strict=True))
        del found[worst]  # merge its two segments and test the others again
    return []


@dataclass(frozen=True)
class Point:
    run_id: int
    time: datetime  # when the run wrote its results
    commit: str | None
    value: float


@dataclass(frozen=True)
class Change:
    machine_id: str
    test: str
    combo: str
    figure: str
    index: int  # position in the series of the first run at the new level
    run_id: int
    time: datetime  # when the run wrote its results
    commit: str | None
    before: float  # mean level of the segment before (in the figure's units)
    after: float
    delta_pct: float
    p_value: float
    regression: bool

    def as_dict(self) -> dict:
        return {**asdict(self), "time": self.time.isoformat()}


def find_changes(key: tuple[str, str, str, str], points: list[Point], **kw) -> list[Change]:
    """Significant steps of one series; ``key`` is (machine_id, test, combo, figure)."""
    machine, test, combo, figure = key
    values = np.array([p.value for p in points], dtype=float)
    linear = figure in LINEAR or bool(np.any(values <= 0))
    y = values if linear else np.log(values)
    sigma = noise_sigma(y, SIGMA_FLOOR.get(figure, DEFAULT_FLOOR))
    found = steps(y, sigma, **kw)
    edges = [0, *(i for i, _ in found), len(y)]
    out = []
    for k, (i, p) in enumerate(found):
        before = float(np.mean(values[edges[k]:i])) if linear else \
            math.exp(float(np.mean(y[edges[k]:i])))
        after = float(np.mean(values[i:edges[k + 2]])) if linear else \
            math.exp(float(np.mean(y[i:edges[k + 2]])))
        delta = (after / before - 1) * 100 if before else math.inf
        worse = after > before if FIGURES.get(figure, "up") == "up" else after < before
        out.append(Change(machine, test, combo, figure, i, points[i].run_id, points[i].time,
                          points[i].commit, before, after, delta, p, worse))
    return out


@dataclass(frozen=True)
class Alarm:
    """The newest runs opened a regression step beyond the threshold."""
    change: Change
    level_before: float  # before the chain of regression steps that ends in the newest level
    total_pct: float

    def __str__(self) -> str:
        c = self.change
        since = f"run {c.run_id}" + (f" (commit {c.commit[:10]})" if c.commit else "")
        return (f"{c.combo} {c.figure} on {c.machine_id}: {self.total_pct:+.1f} % "
                f"({self.level_before:.4g} → {c.after:.4g}) since {since}, "
                f"p={c.p_value:.2g} [{c.test}]")


def _newest_chain(changes: list[Change]) -> tuple[Change, float] | None:
    """The step that opened the newest level, and the total of the run of regression steps
    ending in it (a slow drift is found as several small steps)."""
    if not changes or not changes[-1].regression:
        return None
    first = changes[-1]
    for c in reversed(changes[:-1]):
        if not c.regression:
            break
        first = c
    return first, (changes[-1].after / first.before - 1) * 100


def alarm(key, points: list[Point], threshold_pct: float, *, new_runs: int = 1,
          **kw) -> Alarm | None:
    """An Alarm when the series' newest level was opened by regression steps totalling more
    than ``threshold_pct``, and it was not so before the newest ``new_runs`` runs: a nightly
    fails the night the step is found, not every night after it."""
    changes = find_changes(key, points, **kw)
    chain = _newest_chain(changes)
    if chain is None or abs(chain[1]) <= threshold_pct:
        return None
    if len(points) > new_runs:
        earlier = find_changes(key, points[:-new_runs], **kw)
        before = _newest_chain(earlier)
        if before is not None and abs(before[1]) > threshold_pct and \
                abs(earlier[-1].index - changes[-1].index) <= 2:
            return None  # already found (and failed) on an earlier night
    return Alarm(changes[-1], chain[0].before, chain[1])
