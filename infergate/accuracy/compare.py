"""Output comparison: per-output metrics, and a verdict for a whole output dict.

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

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from infergate.precision import Tolerance

__all__ = [
    "ExactMetrics",
    "NoWorse",
    "OutputMetrics",
    "ShapeMismatch",
    "TaskVerdict",
    "Verdict",
    "judge",
    "metrics",
    "task_verdict",
]

STATUSES = ("pass", "fail", "nonfinite")

# max_rel's epsilon, relative to max|expected|: large enough that near-zero reference
# elements don't turn rounding noise into a huge relative error, small enough that it
# doesn't hide real relative error on elements of ordinary size.
REL_EPS = 1e-6

# The "no worse than PyTorch" floor, relative to RMS of the fp64 output: about fp32's
# epsilon, so a PyTorch error of exactly 0 does not demand a bit-exact backend.
NO_WORSE_FLOOR = 1e-7


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
        return {f: _jsonable(getattr(self, f)) for f in self.fields}

    def summary(self) -> str:
        """One line of the key figures, as failure messages show them."""
        top1 = "n/a" if self.top1 is None else f"{self.top1:.4g}"
        if self.near_ties:
            top1 += f" ({self.near_ties} near-tie row{'s' * (self.near_ties > 1)} not counted)"
        return (f"max_abs {_fmt(self.max_abs)}, max_rel {_fmt(self.max_rel)}, "
                f"rmse {_fmt(self.rmse)}, cosine {_fmt_cos(self.cosine)}, "
                f"sqnr {_fmt_db(self.sqnr_db)}, top1 {top1}")


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
        return {"exact": True} | {f: _jsonable(getattr(self, f)) for f in self.fields}

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


def _rmse(a, b) -> float:
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


# --------------------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class NoWorse:
    """The "no worse than PyTorch at the same precision" check for one output.

    Passes when ``err_backend <= factor * err_torch + floor``, errors being RMSE against
    the fp64 reference.  ``ratio`` is ``err_backend / err_torch`` (inf when PyTorch's
    error is 0 and the backend's is not; 1.0 when both are 0).
    """

    name: str
    err_backend: float
    err_torch: float
    floor: float
    factor: float
    ratio: float
    passed: bool

    fields: ClassVar[tuple[str, ...]] = (
        "name", "err_backend", "err_torch", "floor", "factor", "ratio", "passed",
    )

    @property
    def allowed(self) -> float:
        return self.factor * self.err_torch + self.floor

    def as_dict(self) -> dict[str, Any]:
        return {**{f: _jsonable(getattr(self, f)) for f in self.fields},
                "allowed": _jsonable(self.allowed)}

    def describe(self, torch_name: str) -> str:
        if self.err_torch == 0.0:
            return (f"RMSE vs fp64 {_fmt(self.err_backend)} exceeds the floor "
                    f"{_fmt(self.floor)} ({torch_name} matches fp64 exactly)")
        return (f"RMSE vs fp64 {_fmt(self.err_backend)} is {self.ratio:.2g}x "
                f"{torch_name}'s {_fmt(self.err_torch)} (allowed {self.factor:g}x)")


class _Outcome:
    """Truthy when passed; ``str()`` is the message, so tests read
    ``assert verdict, str(verdict)``. ``repr()`` stays one line because pytest prints it
    after the message on failure."""

    label: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == "pass"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.status}: {self.label}>"

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True, repr=False)
class Verdict(_Outcome):
    """Outcome of judging one output dict: truthy when passed, ``str()`` is the message.

    ``status`` is "pass", "fail" (tolerance broken, missing/extra outputs, shape mismatch,
    non-finite reference) or "nonfinite" (NaN/Inf in the actual output, when nothing
    structural failed first).  ``failures`` lists every broken check, prefixed by its
    output name.  ``worst`` names the output the headline is about (for a passing verdict,
    the one with the lowest cosine).  ``no_worse`` holds the per-output "no worse than
    PyTorch" results when that check ran; otherwise ``no_worse_note`` says why not.
    """

    label: str
    status: str
    message: str
    outputs: dict[str, OutputMetrics] = field(default_factory=dict)
    worst: str | None = None
    failures: list[str] = field(default_factory=list)
    tolerance: Tolerance | None = None
    reasons: tuple[str, ...] = ()
    no_worse: dict[str, NoWorse] = field(default_factory=dict)
    no_worse_note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        tol = None
        if self.tolerance is not None:
            tol = {f.name: _jsonable(getattr(self.tolerance, f.name))
                   for f in dataclasses.fields(self.tolerance)}
        return {
            "label": self.label,
            "status": self.status,
            "passed": self.passed,
            "message": self.message,
            "worst": self.worst,
            "failures": list(self.failures),
            "tolerance": tol,
            "reasons": list(self.reasons),
            "outputs": {n: m.as_dict() for n, m in self.outputs.items()},
            "no_worse": {
                "applied": bool(self.no_worse),
                "note": self.no_worse_note,
                "outputs": {n: nw.as_dict() for n, nw in self.no_worse.items()},
            },
        }


def judge(actual: Mapping[str, Any], expected: Mapping[str, Any], tolerance: Tolerance, *,
          label: str, logits: Iterable[str] = (), fp64: Mapping[str, Any] | None = None,
          torch_same_precision: Mapping[str, Any] | None = None,
          reasons: Iterable[str] = (), precision: str | None = None) -> Verdict:
    """Judge a backend's outputs against the PyTorch fp32 reference ``expected``.

    ``fp64`` and ``torch_same_precision`` (PyTorch eager at the backend's precision) enable
    the "no worse than PyTorch" check when ``tolerance.no_worse_factor`` is set.
    ``reasons`` are the tolerance overrides' reasons, shown in failure messages;
    ``precision`` only names PyTorch's run in messages ("PyTorch fp16").

    Severity, which picks the headline: structural problems (names, shapes, non-finite
    reference) first, then NaN/Inf in the actual output (most non-finite values first),
    then broken tolerances (lowest cosine first, then lowest SQNR).
    """
    logits = tuple(logits)
    reasons = tuple(reasons)
    unknown = [n for n in logits if n not in expected]
    if unknown:
        raise ValueError(f"{label}: logits names unknown outputs {unknown}")
    not_float = [n for n in logits if is_exact(expected[n])]
    if not_float:
        dtypes = ", ".join(str(np.asarray(expected[n]).dtype) for n in not_float)
        raise ValueError(f"{label}: logits names outputs that are not floating point: "
                         f"{_names(not_float)} ({dtypes})")

    structural: list[tuple[str, str]] = []  # (output name, problem)
    missing = [n for n in expected if n not in actual]
    extra = [n for n in actual if n not in expected]
    if missing or extra:
        parts = ([f"missing {_names(missing)}"] if missing else []) + \
                ([f"extra {_names(extra)}"] if extra else [])
        structural.append(((missing or extra)[0], "output names differ: " + "; ".join(parts)))

    outputs: dict[str, OutputMetrics | ExactMetrics] = {}
    broken: dict[str, list[str]] = {}
    for name in expected:
        if name not in actual:
            continue
        try:
            if is_exact(expected[name]) or is_exact(actual[name]):
                m = exact_metrics(actual[name], expected[name], name=name)
            else:
                m = metrics(actual[name], expected[name], name=name, logits=name in logits,
                            atol=tolerance.atol, rtol=tolerance.rtol)
        except ShapeMismatch as exc:
            structural.append((name, str(exc)))
            continue
        outputs[name] = m
        if isinstance(m, ExactMetrics):
            broken[name] = _check_exact(m, tolerance)
            continue
        if m.expected_nonfinite:
            structural.append((name, f"reference output {name!r} has {m.expected_nonfinite} "
                                     f"NaN/Inf values (of {m.size}); nothing to compare against"))
        broken[name] = _check(m, tolerance)

    torch_name = f"PyTorch {precision}" if precision else "PyTorch"
    no_worse, note = _no_worse(outputs, actual, expected, tolerance, fp64,
                               torch_same_precision, label)
    for name, nw in no_worse.items():
        if not nw.passed:
            broken[name].append(nw.describe(torch_name))

    nonfinite = {n: m for n, m in outputs.items() if m.nonfinite}
    failures = [f"{n}: {p}" for n, p in structural]
    failures += [f"{n}: {m.nan_count} NaN and {m.inf_count} Inf values (of {m.size})"
                 for n, m in nonfinite.items()]
    failures += [f"{n}: {p}" for n, ps in broken.items() for p in ps]

    failing = [n for n, ps in broken.items() if ps]
    if structural:
        status, worst = "fail", structural[0][0]
    elif nonfinite:
        status = "nonfinite"
        worst = max(nonfinite, key=lambda n: nonfinite[n].nonfinite)
    elif failing:
        status = "fail"
        worst = min(failing, key=lambda n: _severity(outputs[n], broken[n]))
    else:
        status = "pass"
        worst = min(outputs, key=lambda n: _severity(outputs[n], [])) if outputs else None

    message = _message(label, status, worst, structural, nonfinite, outputs, broken,
                       tolerance, reasons)
    return Verdict(label=label, status=status, message=message, outputs=outputs, worst=worst,
                   failures=failures, tolerance=tolerance, reasons=reasons,
                   no_worse=no_worse, no_worse_note=note)


def _check(m: OutputMetrics, tol: Tolerance) -> list[str]:
    """Broken checks of one output; written `not (x >= t)` so NaN metrics fail."""
    out = []
    if m.allclose_violations:
        out.append(f"allclose({_allclose_args(tol)}): {m.allclose_violations} of {m.size} "
                   f"elements violate (max_abs {_fmt(m.max_abs)}, max_rel {_fmt(m.max_rel)})")
    if tol.min_cosine is not None and not m.cosine >= tol.min_cosine:
        out.append(f"cosine {_fmt_cos(m.cosine)} < min_cosine {tol.min_cosine:g}")
    if tol.min_sqnr_db is not None and not m.sqnr_db >= tol.min_sqnr_db:
        out.append(f"sqnr {_fmt_db(m.sqnr_db)} < min_sqnr_db {tol.min_sqnr_db:g}")
    if tol.min_top1 is not None and m.top1 is not None and not m.top1 >= tol.min_top1:
        out.append(f"top1 {m.top1:.4g} < min_top1 {tol.min_top1:g}")
    return out


def _check_exact(m: ExactMetrics, tol: Tolerance) -> list[str]:
    out = []
    if m.kinds_differ:
        out.append(f"dtype {m.dtype} where PyTorch gives {m.expected_dtype}")
    allowed = math.floor((tol.max_mismatch or 0.0) * m.size)
    if m.mismatches > allowed:
        out.append(f"{m.mismatches} of {m.size} elements differ (allowed {allowed}); first at "
                   f"index {m.first_index}: {m.first_actual!r} vs {m.first_expected!r}")
    return out


def _no_worse(outputs, actual, expected, tol, fp64, torch_same, label):
    """Per-output "no worse than PyTorch" results, and a note when (partly) not applied.
    Integer outputs are exact and take no part."""
    outputs = {n: m for n, m in outputs.items() if isinstance(m, OutputMetrics)}
    k = tol.no_worse_factor
    if k is None:
        return {}, "not applicable: tolerance has no no_worse_factor"
    lacking = [what for what, given in (("fp64 reference", fp64),
                                        ("PyTorch same-precision outputs", torch_same))
               if given is None]
    if lacking:
        return {}, f"not applicable: no {' and no '.join(lacking)} given"

    results, skipped = {}, []
    for name in outputs:
        if name not in fp64 or name not in torch_same:
            skipped.append(f"{name!r} missing from the fp64 or PyTorch outputs")
            continue
        ref, theirs = np.asarray(fp64[name]), np.asarray(torch_same[name])
        for what, arr in (("fp64 reference", ref), ("PyTorch same-precision", theirs)):
            if arr.shape != np.shape(expected[name]):
                raise ValueError(f"{label}: {what} output {name!r} has shape {arr.shape}, "
                                 f"the fp32 reference {np.shape(expected[name])}")
        err_torch = _rmse(theirs, ref)
        rms_ref = _rmse(ref, np.zeros(ref.shape))
        if not (math.isfinite(err_torch) and math.isfinite(rms_ref)):
            skipped.append(f"{name!r} has non-finite fp64 or PyTorch values")
            continue
        err = _rmse(actual[name], ref)  # NaN here fails the check below, as it should
        if err_torch > 0.0:
            ratio = err / err_torch
        else:
            ratio = 1.0 if err == 0.0 else math.inf
        floor = NO_WORSE_FLOOR * rms_ref
        results[name] = NoWorse(name=name, err_backend=err, err_torch=err_torch, floor=floor,
                                factor=k, ratio=ratio, passed=bool(err <= k * err_torch + floor))
    note = f"not applicable for {', '.join(skipped)}" if skipped else None
    return results, note


def _severity(m: OutputMetrics | ExactMetrics, broken: list[str]):
    """Sort key, most severe first: lowest cosine, then lowest SQNR, then most checks broken
    (NaN counts as the lowest). An exact output that broke comes first: a changed label is
    never noise; one that passed is never "closest to failing"."""
    if isinstance(m, ExactMetrics):
        edge = -math.inf if broken else math.inf
        return (edge, edge, -len(broken))

    def low(x: float) -> float:
        return -math.inf if math.isnan(x) else x
    return (low(m.cosine), low(m.sqnr_db), -len(broken))


def _message(label, status, worst, structural, nonfinite, outputs, broken, tol, reasons):
    override = f"(tolerance override: {'; '.join(reasons)})" if reasons else None
    if status == "pass":
        if worst is None:
            return f"{label}: pass (no outputs)"
        return f"{label}: pass; closest to failing: {worst!r}: {outputs[worst].summary()}"

    lines: list[str] = []
    if status == "fail" and structural:
        lines.append(f"{label}: {structural[0][1]}")
        lines += [f"  also: {p}" for _, p in structural[1:]]
        if nonfinite:
            lines.append("  also non-finite: " + ", ".join(
                f"{n!r} ({m.nan_count} NaN, {m.inf_count} Inf)" for n, m in nonfinite.items()))
    elif status == "nonfinite":
        m = nonfinite[worst]
        lines.append(f"{label}: output {worst!r} has {m.nan_count} NaN and {m.inf_count} Inf "
                     f"values (of {m.size})")
        lines += [f"  also non-finite: {n!r} has {o.nan_count} NaN and {o.inf_count} Inf "
                  f"values (of {o.size})" for n, o in nonfinite.items() if n != worst]
        lines.append(f"  {worst} {m.shape}, finite elements only: {m.summary()}")
        lines += [f"  broke: {p}" for p in broken.get(worst, [])]
    else:
        m = outputs[worst]
        lines.append(f"{label}: output {worst!r} out of tolerance: {broken[worst][0]}")
        lines.append(f"  {worst} {m.shape}: {m.summary()}")
        lines += [f"  broke: {p}" for p in broken[worst]]
    lines += [f"  also failing: {n}: {'; '.join(ps)}"
              for n, ps in broken.items() if ps and n != worst]
    lines.append(f"  tolerance: {tol.describe()}")
    if override:
        lines.append(f"  {override}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- task check

@dataclass(frozen=True, repr=False)
class TaskVerdict(_Outcome):
    """Task-level accuracy (e.g. held-out accuracy) against a minimum score."""

    label: str
    description: str
    score: float
    min_score: float
    detail: str
    status: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {k: _jsonable(getattr(self, k)) for k in
                ("label", "description", "score", "min_score", "detail", "status",
                 "message")} | {"passed": self.passed}


def task_verdict(score: float, detail: str, min_score: float, *, label: str,
                 description: str) -> TaskVerdict:
    """Passes when ``score >= min_score``; a NaN/Inf score is status "nonfinite"."""
    score = float(score)
    if not math.isfinite(score):
        status, op = "nonfinite", "is not finite, needs >="
    elif score >= min_score:
        status, op = "pass", ">="
    else:
        status, op = "fail", "<"
    message = f"{label}: task {description!r} score {score:.4g} {op} {min_score:g}"
    if detail:
        message += f" ({detail})"
    return TaskVerdict(label=label, description=description, score=score,
                       min_score=float(min_score), detail=detail, status=status,
                       message=message)


# --------------------------------------------------------------------------- formatting

def _jsonable(x):
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
        return [_jsonable(v) for v in x]
    return x


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _fmt_db(x: float) -> str:
    return f"{x:.1f} dB" if math.isfinite(x) else f"{x} dB"


def _fmt_cos(x: float) -> str:
    """Enough digits that a cosine just under a 0.99999-style threshold shows the gap."""
    if not math.isfinite(x) or x >= 1.0 or x < 0.99:
        return f"{x:.4g}"
    nines = int(math.floor(-math.log10(1.0 - x)))
    return f"{x:.{min(nines + 2, 16)}f}"


def _allclose_args(tol: Tolerance) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (("atol", tol.atol), ("rtol", tol.rtol))
                     if v is not None)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
