"""Per-output metrics: how far one output is from its reference (numbers, no verdicts;
``infergate.accuracy.compare`` judges them).

Conventions used throughout:

* Every metric is computed in float64, whatever the dtypes of the inputs.
* ``expected`` is the PyTorch fp32 reference; it is the "b" of every asymmetric formula
  (relative error, allclose, SQNR), exactly as in ``numpy.isclose``.
* Float metrics are computed over the positions where both arrays are finite, so a single
  NaN does not blank out every other figure; non-finite values are counted separately
  (``nan_count``/``inf_count`` for the actual output, ``expected_nonfinite`` for the
  reference) and the verdict fails on them on its own.
* In ``as_dict()`` output, +/-infinity becomes the strings ``"inf"``/``"-inf"`` and NaN
  becomes ``None``, so the result passes ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

# max_rel's epsilon, relative to max|expected|: large enough that near-zero reference
# elements don't turn rounding noise into a huge relative error, small enough that it
# doesn't hide real relative error on elements of ordinary size.
REL_EPS = 1e-6

class ShapeMismatch(ValueError):
    """Actual and expected outputs differ in shape; the message names both shapes."""

    def __init__(self, name: str, actual: tuple, expected: tuple):
        self.name, self.actual_shape, self.expected_shape = name, actual, expected
        super().__init__(f"shape mismatch for output {name!r}: actual {actual} "
                         f"vs expected {expected}")


# --------------------------------------------------------------------------- metrics

@dataclass(frozen=True)
class OutputMetrics:
    """How far one actual output is from its reference.

    ``max_rel`` is ``max |a-b| / (|b| + eps)`` with ``eps = 1e-6 * max|b|``; when the
    reference is all zeros it is 0 for an exact match and inf otherwise.  ``cosine`` is of
    the flattened arrays (1.0 for two all-zero arrays, 0.0 when only one is all zero).
    ``sqnr_db`` is ``10*log10(sum(b^2) / sum((a-b)^2))``: +inf when identical, -inf when
    the reference is all zero and the actual is not.  ``top1`` is the fraction of rows
    (all leading axes) whose argmax over the last axis agrees, ``None`` unless computed
    as logits; rows whose reference top-1/top-2 gap is within what this output's measured
    error can flip (``TIE_SIGMAS`` x its RMSE) are near-ties, counted in ``near_ties`` and
    left out of it.  ``allclose_violations`` counts elements where ``|a-b| <= atol + rtol*|b|``
    is false, over all elements (NaN always violates, equal infinities do not); ``None``
    when neither atol nor rtol was given.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    rmse: float
    cosine: float
    sqnr_db: float
    top1: float | None
    allclose_violations: int | None
    nan_count: int
    inf_count: int
    expected_nonfinite: int
    near_ties: int | None = None

    fields: ClassVar[tuple[str, ...]] = (
        "name", "shape", "max_abs", "max_rel", "rmse", "cosine", "sqnr_db", "top1",
        "near_ties", "allclose_violations", "nan_count", "inf_count", "expected_nonfinite",
    )

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nonfinite(self) -> int:
        return self.nan_count + self.inf_count

    def as_dict(self) -> dict[str, Any]:
        return {f: jsonable(getattr(self, f)) for f in self.fields}

    def summary(self) -> str:
        """One line of the key figures, as failure messages show them."""
        top1 = "n/a" if self.top1 is None else f"{self.top1:.4g}"
        if self.near_ties:
            top1 += f" ({self.near_ties} near-tie row{'s' * (self.near_ties > 1)} not counted)"
        return (f"max_abs {fmt(self.max_abs)}, max_rel {fmt(self.max_rel)}, "
                f"rmse {fmt(self.rmse)}, cosine {fmt_cos(self.cosine)}, "
                f"sqnr {fmt_db(self.sqnr_db)}, top1 {top1}")


def metrics(actual, expected, *, name: str = "output", logits: bool = False,
            atol: float | None = None, rtol: float | None = None) -> OutputMetrics:
    """Compare one output with its reference. Raises ShapeMismatch on differing shapes."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        raise ShapeMismatch(name, a.shape, b.shape)

    both_finite = np.isfinite(a) & np.isfinite(b)
    core = _core_stats(a[both_finite], b[both_finite])
    if a.size and not both_finite.any():
        # Nothing comparable; NaN rather than the "two empty arrays agree" figures.
        core = dict.fromkeys(core, math.nan)

    violations = None
    if atol is not None or rtol is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            close = np.isclose(a, b, rtol=rtol or 0.0, atol=atol or 0.0)
        violations = int(a.size - np.count_nonzero(close))

    top1, near_ties = _top1(a, b) if logits else (None, None)
    return OutputMetrics(
        name=name,
        shape=tuple(int(d) for d in a.shape),
        top1=top1,
        near_ties=near_ties,
        allclose_violations=violations,
        nan_count=int(np.count_nonzero(np.isnan(a))),
        inf_count=int(np.count_nonzero(np.isinf(a))),
        expected_nonfinite=int(np.count_nonzero(~np.isfinite(b))),
        **core,
    )


def is_exact(array) -> bool:
    """Integer and bool outputs (labels, indices, masks) are compared exactly, never as floats."""
    return np.asarray(array).dtype.kind in "biu"


@dataclass(frozen=True)
class ExactMetrics:
    """How an integer or bool output differs from its reference: elements that differ, and
    the first of them (C order) with both values. Float metrics mean nothing here."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    expected_dtype: str
    mismatches: int
    first_index: tuple[int, ...] | None
    first_actual: int | bool | float | None
    first_expected: int | bool | None

    fields: ClassVar[tuple[str, ...]] = (
        "name", "shape", "dtype", "expected_dtype", "mismatches", "first_index",
        "first_actual", "first_expected",
    )
    # What the verdict code asks of every output's metrics.
    nonfinite: ClassVar[int] = 0
    expected_nonfinite: ClassVar[int] = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def kinds_differ(self) -> bool:
        """A bool where PyTorch gives an integer, or a float where it gives either: the
        output's meaning changed, even where the values happen to agree."""
        return np.dtype(self.dtype).kind != np.dtype(self.expected_dtype).kind and \
            {np.dtype(self.dtype).kind, np.dtype(self.expected_dtype).kind} != {"i", "u"}

    def as_dict(self) -> dict[str, Any]:
        return {"exact": True} | {f: jsonable(getattr(self, f)) for f in self.fields}

    def summary(self) -> str:
        if not self.mismatches:
            return f"{self.dtype}, all {self.size} elements equal"
        return (f"{self.dtype}, {self.mismatches} of {self.size} elements differ, first at "
                f"index {self.first_index}: {self.first_actual!r} vs {self.first_expected!r}")


def exact_metrics(actual, expected, *, name: str = "output") -> ExactMetrics:
    """Compare an integer or bool output element by element. Raises ShapeMismatch."""
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape != b.shape:
        raise ShapeMismatch(name, a.shape, b.shape)
    with np.errstate(invalid="ignore"):
        differ = a != b  # NaN in a float actual differs, as it should
    where = np.argwhere(differ)
    first = tuple(int(i) for i in where[0]) if where.size else None
    return ExactMetrics(
        name=name, shape=tuple(int(d) for d in a.shape), dtype=str(a.dtype),
        expected_dtype=str(b.dtype), mismatches=int(np.count_nonzero(differ)),
        first_index=first,
        first_actual=None if first is None else a[first].item(),
        first_expected=None if first is None else b[first].item())


def _pow2_scale(*arrays: np.ndarray) -> float:
    """A power of two >= every |element|: dividing by it is exact and keeps sums of
    squares from overflowing for large float64 outputs."""
    peak = max((float(np.max(np.abs(x))) for x in arrays if x.size), default=0.0)
    if peak == 0.0:
        return 1.0
    return math.ldexp(1.0, math.frexp(peak)[1])


def _core_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """max_abs, max_rel, rmse, cosine, sqnr_db of two finite 1-D float64 arrays."""
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "rmse": 0.0, "cosine": 1.0,
                "sqnr_db": math.inf}
    scale = _pow2_scale(a, b)
    a, b = a / scale, b / scale
    diff = np.abs(a - b)
    max_abs = float(diff.max())

    b_peak = float(np.abs(b).max())
    if b_peak == 0.0:
        max_rel = 0.0 if max_abs == 0.0 else math.inf
    else:
        # Overflow only when |b| is negligible beside |a|; inf is then the honest answer.
        with np.errstate(over="ignore", divide="ignore"):
            max_rel = float(np.max(diff / (np.abs(b) + REL_EPS * b_peak)))

    noise = float(np.dot(diff, diff))
    signal = float(np.dot(b, b))
    norm_a = math.sqrt(float(np.dot(a, a)))
    norm_b = math.sqrt(signal)
    if noise == 0.0:
        cosine = 1.0  # identical (incl. both zero): exact, so min_cosine=1.0 can pass
    elif norm_a == 0.0 or norm_b == 0.0:
        cosine = 0.0
    else:
        # Rounding can push it a hair past +/-1.
        cosine = min(1.0, max(-1.0, float(np.dot(a, b)) / (norm_a * norm_b)))

    if noise == 0.0:
        sqnr = math.inf
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)

    return {"max_abs": max_abs * scale, "max_rel": max_rel,
            "rmse": math.sqrt(noise / a.size) * scale, "cosine": cosine, "sqnr_db": sqnr}


# A logit moves by at most ~3 RMSEs of its output's error; the top-1/top-2 gap, a difference of
# two logits, by at most twice that. A reference row with a smaller gap can flip under this
# very error without anything being wrong: a near-tie. A wider-gapped row that flips is a
# confident flip and counts, at any batch size. The error is the median of the other rows'
# RMSE, so a row that went badly wrong neither excuses itself nor its neighbours; and a gap of
# more than TIE_MAX_FRACTION of the row's logit range is never a tie, however large the error
# (wholesale error is for cosine and SQNR to judge).
TIE_SIGMAS = 6.0
TIE_MAX_FRACTION = 0.05


def _top1(a: np.ndarray, b: np.ndarray) -> tuple[float | None, int | None]:
    """(agreement over confident rows, near-tie rows left out)."""
    if a.ndim == 0 or a.size == 0:
        return None, None
    rows_a = a.reshape(-1, a.shape[-1])
    rows_b = b.reshape(-1, b.shape[-1])
    agree = np.argmax(rows_a, axis=-1) == np.argmax(rows_b, axis=-1)
    n_rows, width = rows_b.shape
    if n_rows < 2 or width < 2:
        return float(np.mean(agree)), 0  # no other rows to measure the error by
    with np.errstate(invalid="ignore", over="ignore"):
        row_rmse = np.sqrt(np.nanmean((rows_a - rows_b) ** 2, axis=-1))
    others = np.array([np.median(np.delete(row_rmse, i)) for i in range(n_rows)])
    top2 = np.sort(rows_b, axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    span = rows_b.max(axis=-1) - rows_b.min(axis=-1)
    tie = (gap <= TIE_SIGMAS * others) & (gap <= TIE_MAX_FRACTION * span)
    if tie.all():
        return None, int(n_rows)
    return float(np.mean(agree[~tie])), int(np.count_nonzero(tie))


def rmse(a, b) -> float:
    """RMSE over all elements (non-finite values propagate, unlike in metrics())."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        with np.errstate(invalid="ignore", over="ignore"):
            return float(np.sqrt(np.mean((a - b) ** 2)))
    scale = _pow2_scale(a, b)
    d = a / scale - b / scale
    return math.sqrt(float(np.dot(d, d)) / d.size) * scale


# --------------------------------------------------------------------------- formatting

def jsonable(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return None
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(x, (tuple, list)):
        return [jsonable(v) for v in x]
    return x


def fmt(x: float) -> str:
    return f"{x:.3g}"


def fmt_db(x: float) -> str:
    return f"{x:.1f} dB" if math.isfinite(x) else f"{x} dB"


def fmt_cos(x: float) -> str:
    """Enough digits that a cosine just under a 0.99999-style threshold shows the gap."""
    if not math.isfinite(x) or x >= 1.0 or x < 0.99:
        return f"{x:.4g}"
    nines = int(math.floor(-math.log10(1.0 - x)))
    return f"{x:.{min(nines + 2, 16)}f}"
