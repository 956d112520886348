"""Real work injected after every inference (``--infergate-perf-slowdown``, the gate's own
benchmark).

A sleep or a spin on the clock shows in wall time only; the gate also judges instruction
counts, so the injected work is compute - float32 GEMMs through numpy's BLAS, the kind of
kernel inference runs - sized in the figure's own currency: seconds for wall-time probes,
instructions for counted ones. A fractional number of units per call is carried over
between calls, so the work over a loop is proportional to the model's.
"""

from __future__ import annotations

UNIT = 48  # one unit: a 48x48x48 GEMM
# Units are sized (counted) this many at a time: the counter's own switching overhead would
# otherwise inflate one unit's count by about a fifth, and the injected work fall short.
SIZING_UNITS = 100


class InjectedWork:
    def __init__(self, fraction: float):
        import numpy as np  # here, not at module top: the plugin imports this module

        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((UNIT, UNIT), dtype=np.float32)
        self.out = np.empty_like(self.a)
        self._matmul = np.matmul
        self.fraction = fraction
        self.per_call = 0.0  # units after each inference; set by ``size``
        self._carry = 0.5  # rounds to the nearest unit, not down: +2 % stays +2 %

    def unit(self, count: int = 1) -> None:
        for _ in range(count):
            self._matmul(self.a, self.a, out=self.out)

    def size(self, model_cost: float, unit_cost: float) -> None:
        """Units per call for ``fraction`` of ``model_cost`` (both in one currency)."""
        self.per_call = self.fraction * model_cost / unit_cost

    def __call__(self) -> None:
        self._carry += self.per_call
        whole = int(self._carry)
        self._carry -= whole
        self.unit(whole)
