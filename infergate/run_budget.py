"""The run's own limit (``--infergate-run-timeout``): a CI job's budget in seconds, so a run
ends inside it with its reports written rather than being killed by the job with none.

Every child's limit (a worker's step, a probe, a counting process) is cut to what is left
of it; once it is spent, the test in progress gets its timeout verdict and the run stops
before the next test. Process-wide, like the signal handlers: a pytest session sets it and
clears it at its end."""

from __future__ import annotations

import time

OPTION = "--infergate-run-timeout"
_limit_s: float | None = None
_deadline: float | None = None


def start(limit_s: float | None) -> None:
    global _limit_s, _deadline
    _limit_s = limit_s
    _deadline = None if limit_s is None else time.monotonic() + limit_s


def stop() -> None:
    start(None)


def spent() -> bool:
    return _deadline is not None and time.monotonic() >= _deadline


def _run_limit() -> str:
    return f"the run's limit of {_limit_s:g} s ({OPTION})"


def reason() -> str:
    return f"{_run_limit()} was reached"


def clamp(limit_s: float) -> tuple[float, str]:
    """A child's limit, cut to what is left of the run's, and how a timeout names it: "its
    limit of 180 s", or the run's limit where that is the shorter."""
    if _deadline is not None:
        left = max(0.0, _deadline - time.monotonic())
        if left < limit_s:
            return left, _run_limit()
    return limit_s, f"its limit of {limit_s:g} s"
