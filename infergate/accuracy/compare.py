"""Output comparison: a verdict for a whole output dict, from the per-output metrics of
``infergate.accuracy.metrics`` (whose conventions hold here too).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from infergate.accuracy.metrics import (
    ExactMetrics,
    OutputMetrics,
    ShapeMismatch,
    exact_metrics,
    fmt,
    fmt_cos,
    fmt_db,
    is_exact,
    jsonable,
    metrics,
    rmse,
)
from infergate.accuracy.precision import Tolerance

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

# The "no worse than PyTorch" floor, relative to RMS of the fp64 output: about fp32's
# epsilon, so a PyTorch error of exactly 0 does not demand a bit-exact backend.
NO_WORSE_FLOOR = 1e-7


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
        return {**{f: jsonable(getattr(self, f)) for f in self.fields},
                "allowed": jsonable(self.allowed)}

    def describe(self, torch_name: str) -> str:
        if self.err_torch == 0.0:
            return (f"RMSE vs fp64 {fmt(self.err_backend)} exceeds the floor "
                    f"{fmt(self.floor)} ({torch_name} matches fp64 exactly)")
        return (f"RMSE vs fp64 {fmt(self.err_backend)} is {self.ratio:.2g}x "
                f"{torch_name}'s {fmt(self.err_torch)} (allowed {self.factor:g}x)")


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
            tol = {f.name: jsonable(getattr(self.tolerance, f.name))
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


def _nonfinite_inputs(feed: Mapping[str, Any] | None) -> str:
    """Where the inputs themselves hold NaN/Inf: ", from its inputs (x: 2 of 96 NaN/Inf)"."""
    found = []
    for name, value in (feed or {}).items():
        array = np.asarray(value)
        if array.dtype.kind in "fc" and (bad := int(np.count_nonzero(~np.isfinite(array)))):
            found.append(f"{name}: {bad} of {array.size} NaN/Inf")
    return f", from its inputs ({'; '.join(found)})" if found else ""


def judge(actual: Mapping[str, Any], expected: Mapping[str, Any], tolerance: Tolerance, *,
          label: str, logits: Iterable[str] = (), fp64: Mapping[str, Any] | None = None,
          torch_same_precision: Mapping[str, Any] | None = None,
          reasons: Iterable[str] = (), precision: str | None = None,
          expected_as: str = "reference output", feed: Mapping[str, Any] | None = None
          ) -> Verdict:
    """Judge a backend's outputs against the PyTorch fp32 reference ``expected``.

    ``fp64`` and ``torch_same_precision`` (PyTorch eager at the backend's precision) enable
    the "no worse than PyTorch" check when ``tolerance.no_worse_factor`` is set.
    ``reasons`` are the tolerance overrides' reasons, shown in failure messages;
    ``precision`` only names PyTorch's run in messages ("PyTorch fp16"); ``expected_as`` names
    the expected side where it is not the reference (batch invariance compares the backend
    with itself); ``feed`` is what both ran, for a non-finite expected output to say so when
    it came with the inputs.

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
            structural.append((name, f"{expected_as} {name!r} has {m.expected_nonfinite} "
                                     f"NaN/Inf values (of {m.size}){_nonfinite_inputs(feed)}; "
                                     f"nothing to compare against"))
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
                   f"elements violate (max_abs {fmt(m.max_abs)}, max_rel {fmt(m.max_rel)})")
    if tol.min_cosine is not None and not m.cosine >= tol.min_cosine:
        out.append(f"cosine {fmt_cos(m.cosine)} < min_cosine {tol.min_cosine:g}")
    if tol.min_sqnr_db is not None and not m.sqnr_db >= tol.min_sqnr_db:
        out.append(f"sqnr {fmt_db(m.sqnr_db)} < min_sqnr_db {tol.min_sqnr_db:g}")
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
        err_torch = rmse(theirs, ref)
        rms_ref = rmse(ref, np.zeros(ref.shape))
        if not (math.isfinite(err_torch) and math.isfinite(rms_ref)):
            skipped.append(f"{name!r} has non-finite fp64 or PyTorch values")
            continue
        err = rmse(actual[name], ref)  # NaN here fails the check below, as it should
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
        return {k: jsonable(getattr(self, k)) for k in
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


def _allclose_args(tol: Tolerance) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in (("atol", tol.atol), ("rtol", tol.rtol))
                     if v is not None)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
