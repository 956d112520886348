"""Precision ids and the one tolerance registry."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

PRECISIONS = ("fp32", "fp16", "bf16", "int8_dynamic", "int8", "fp8")

# Precisions whose artifacts are calibrated on the model's calibration inputs (static Q/DQ).
CALIBRATED = ("int8", "fp8")

# Precisions that PyTorch eager also runs, so "no worse than PyTorch" can be judged (at fp32,
# PyTorch's run is the fp32 reference itself).
TORCH_COMPARABLE = ("fp32", "fp16", "bf16", "int8_dynamic")

# k in "error vs fp64 <= k x PyTorch's own error at that precision". PyTorch's dynamo
# accuracy checker uses 2-3x; 3 leaves room for a backend that fuses differently.
NO_WORSE_FACTOR = 3.0

# At fp32 the same check, against PyTorch eager fp32's own error: a fused kernel, another
# summation order or a polynomial exp legitimately differ from it by a small factor, a dropped
# scale or a wrong epsilon by orders of magnitude. Chosen from the ratios measured on every
# clean fp32 combination of the full tier (README, "fp32 against fp64").
NO_WORSE_FACTOR_FP32 = 10.0
# SQNR against PyTorch fp32 below which an fp32 output is wrong whatever its elementwise error:
# a uniform 0.1 % scale gives 60 dB; clean combinations measured 103.6 dB and more. Measured
# ratios: at most 3.88 (digits_cnn on OpenVINO), so k is 2.6x the highest.
MIN_SQNR_DB_FP32 = 80.0


@dataclass(frozen=True)
class Tolerance:
    """Thresholds one combination must meet; ``None`` disables a check."""

    atol: float | None = None  # elementwise |a-b| <= atol + rtol*|b|, like numpy.allclose
    rtol: float | None = None
    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    min_top1: float | None = None  # fraction of rows whose argmax agrees (logits only)
    no_worse_factor: float | None = None
    # Integer and bool outputs are compared exactly; the fraction of elements that may differ.
    max_mismatch: float | None = None

    def describe(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name):g}" for f in fields(self)
                 if getattr(self, f.name) is not None]
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Override:
    """A per-model tolerance change; the reason is mandatory and shows in failures."""

    reason: str
    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    no_worse_factor: float | None = None
    max_mismatch: float | None = None

    def apply(self, base: Tolerance) -> Tolerance:
        changes = {f.name: getattr(self, f.name) for f in fields(Tolerance)
                   if getattr(self, f.name) is not None}
        return replace(base, **changes)


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999, min_sqnr_db=MIN_SQNR_DB_FP32,
                      min_top1=1.0, no_worse_factor=NO_WORSE_FACTOR_FP32),
    "fp16": Tolerance(min_cosine=0.9995, min_sqnr_db=30.0, min_top1=0.95,
                      no_worse_factor=NO_WORSE_FACTOR),
    "bf16": Tolerance(min_cosine=0.995, min_sqnr_db=20.0, min_top1=0.9,
                      no_worse_factor=NO_WORSE_FACTOR),
    "int8_dynamic": Tolerance(min_cosine=0.99, min_sqnr_db=15.0, min_top1=0.9,
                              no_worse_factor=NO_WORSE_FACTOR),
    "int8": Tolerance(min_cosine=0.98, min_sqnr_db=12.0, min_top1=0.8),
    # E4M3's 3 mantissa bits at per-tensor scales resolve about what int8's 8 bits do.
    "fp8": Tolerance(min_cosine=0.98, min_sqnr_db=12.0, min_top1=0.8),
}


def tolerance_for(overrides, backend: str, precision: str) -> tuple[Tolerance, list[str]]:
    """Default for the precision, then the model's precision override, then its
    (backend, precision) override. Returns the tolerance and the reasons applied."""
    tol = DEFAULT_TOLERANCES[precision]
    reasons = []
    for key in (precision, (backend, precision)):
        if key in overrides:
            tol = overrides[key].apply(tol)
            reasons.append(overrides[key].reason)
    return tol, reasons
