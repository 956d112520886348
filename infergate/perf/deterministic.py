"""The rule for deterministic figures (instructions per inference, peak heap bytes): counted
under callgrind, so the same code gives the same figure in every process, on every runner.

Their noise is measured, never declared: how far the baseline's processes (and this run's,
where it has more than one) disagree. A change is regressed when it is beyond that noise and a
threshold-sized change is not ruled out (a real +2 % that measures +1.9 % must not pass a 2 %
gate); undecidable (``insufficient``) when the noise leaves both no change and a
threshold-sized one possible.
"""

from __future__ import annotations

# Tighter than wall time can be, as wide as unchanged code needs: a small model's cheapest
# call moved up to 0.3 % between processes under load (allocator paths), its heap up to 2.6 %.
INSTRUCTIONS_THRESHOLD = 0.01
HEAP_THRESHOLD = 0.05
THRESHOLD = INSTRUCTIONS_THRESHOLD
BASELINE_PROCESSES = 3  # the noise of a figure is taken from at least this many processes
# The noise a count should reach (issue 23): 0.1 % of it or 2,000 instructions, the larger.
NOISE_TARGET, NOISE_TARGET_INSTRUCTIONS = 0.001, 2000
# A threshold sized from a model's own work stays this many times the measured noise, and
# never finer than twice the noise target: a count moved 0.045 % between runner types.
NOISE_MARGIN, FINEST_THRESHOLD = 3, 2 * NOISE_TARGET


def spread(values: list[float]) -> float:
    """Relative range of per-process figures: (max - min) / min."""
    return max(values) / min(values) - 1.0


def noise(baseline: list[float], current: list[float]) -> float:
    """How well the figure is known: the larger disagreement between the baseline's processes
    and between this run's."""
    return max(spread(baseline), spread(current) if len(current) > 1 else 0.0)


def threshold_for(threshold: float, count: float, floor: float | None,
                  uncertainty: float) -> float:
    """The threshold applied to a count, as a fraction of it: ``threshold`` of what the model
    costs above the runtime's fixed cost of a call (``floor``; None: unknown, the whole
    count), but no finer than ``NOISE_MARGIN`` times the noise or ``FINEST_THRESHOLD``, and
    never looser than ``threshold`` of the whole count. A small model on OpenVINO is 99 % the
    runtime's per-call work: a layer grown by a fifth moved its count 0.6 %, which a 1 %
    threshold of the whole count let through."""
    if floor is None:
        return threshold
    return min(threshold, max(by_own_work(threshold, count, floor),
                              NOISE_MARGIN * uncertainty, FINEST_THRESHOLD))


def by_own_work(threshold: float, count: float, floor: float) -> float:
    """``threshold`` of the count above ``floor``, as a fraction of the whole count."""
    return threshold * max(count - floor, 0.0) / count


def decide(delta: float, uncertainty: float, threshold: float) -> str:
    """The change is known to within ``uncertainty``: regressed when it is surely a change and
    a threshold-sized one is not ruled out, pass when a threshold-sized change either way is
    ruled out (or surely none), improved in mirror; undecided (``insufficient``) when the
    noise leaves both nothing and a threshold-sized change possible."""
    low, high = delta - uncertainty, delta + uncertainty
    if low > 0 and high >= threshold:
        return "regressed"
    if high < 0 and low <= -threshold:
        return "improved"
    if high < threshold and low > -threshold:
        return "pass"
    return "insufficient"


def worth_confirming(delta: float, uncertainty: float, threshold: float) -> bool:
    """Whether a first process's figure is worth more processes: when it alone would not pass.
    A pass needs none: a call's extra work is one-sided, so more processes (judged on their
    minimum) can only lower the figure (a checkout at another path moved torch's counts
    0.3-0.5 %, which passes at 1 %, and cost two processes a combination to confirm)."""
    return decide(delta, uncertainty, threshold) != "pass"


def undecided_reason(baseline: list[float], current: list[float], threshold: float) -> str:
    """Which processes disagreed, for an ``insufficient`` verdict's message."""
    side, values = (("the baseline's", baseline) if spread(baseline) >= (
        spread(current) if len(current) > 1 else 0.0) else ("this run's", current))
    return (f"{side} {len(values)} processes disagree by {spread(values) * 100:.2g} %, which "
            f"leaves both no change and a {threshold * 100:g} % one possible")


def message(status: str, label: str, text: str, why_undecided: str = "") -> str:
    """A deterministic verdict's message: undecided ones say why, improved ones suggest an
    update."""
    if status == "insufficient":
        return f"{label} undecided: {why_undecided}{text}"
    if status == "improved":
        return f"{label} improved, consider updating the baseline: {text}"
    return f"{label} {text}"
