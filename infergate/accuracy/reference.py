"""PyTorch eager reference outputs for one model: fp32, fp64, and PyTorch at each lower
precision (the yardstick for "no worse than PyTorch")."""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property

import numpy as np

from infergate.accuracy.compare import judge, task_verdict
from infergate.accuracy.precision import TORCH_COMPARABLE, tolerance_for
from infergate.backends.torch_eager import TorchEager
from infergate.build.subject import to_numpy


class Reference:
    """``runner_for(precision)`` gives an unactivated PyTorch eager runner (by default in this
    process; the plugin passes one living in a worker process, as for every backend)."""

    def __init__(self, subject, seed: int = 0, runner_for=None):
        self.subject = subject
        self.feed: dict[str, np.ndarray] = subject.inputs(seed=seed)
        self._torch = TorchEager()
        self._runner_for = runner_for or (lambda p: self._torch.prepare(self.subject, p))
        self._at: dict[str, tuple[dict | None, str]] = {}

    def _run(self, precision: str) -> dict[str, np.ndarray]:
        with self._runner_for(precision) as runner:
            return runner.run(self.feed)

    @cached_property
    def fp32(self) -> dict[str, np.ndarray]:
        return self._run("fp32")

    @cached_property
    def fp64(self) -> dict[str, np.ndarray] | None:
        if not self.subject.spec.fp64:
            return None
        # Kept in float64 (Runner.run does not narrow it): fp32 verdicts are judged against
        # PyTorch fp32's own error, which lives below float32 resolution.
        return self._run("fp64")

    def torch_at(self, precision: str) -> tuple[dict[str, np.ndarray] | None, str]:
        """PyTorch eager's outputs at ``precision``, or None and why they are unavailable."""
        if precision not in self._at:
            spec = self.subject.spec
            key = (self._torch.name, precision)
            if precision == "fp32":
                self._at[precision] = (self.fp32, "")
            elif precision not in TORCH_COMPARABLE:
                self._at[precision] = (None, f"PyTorch has no {precision} equivalent")
            elif key in spec.unsupported:
                self._at[precision] = (None, f"PyTorch {precision} unsupported: "
                                             f"{spec.unsupported[key]}")
            else:
                # A known accuracy failure still runs and still is the yardstick; only a
                # crash takes it away.
                try:
                    self._at[precision] = (self._run(precision), "")
                except Exception as exc:
                    self._at[precision] = (None, f"PyTorch {precision} failed to run: "
                                                 f"{type(exc).__name__}: {exc}")
        return self._at[precision]

    @cached_property
    def _eager_runner(self):
        return self._runner_for("fp32").activate()

    def eager(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """PyTorch eager fp32 on any feed (property tests draw their own shapes)."""
        return self._eager_runner.run(feed)

    @cached_property
    def task_fp32(self) -> dict[str, np.ndarray]:
        return self.eager(self.task_feed)

    @cached_property
    def task_feed(self) -> dict[str, np.ndarray]:
        return to_numpy(self.subject.spec.task.inputs())

    def judge(self, outputs: dict[str, np.ndarray], backend: str, precision: str, label: str):
        """Verdict for ``outputs`` of the seeded example feed against this reference."""
        spec = self.subject.spec
        tolerance, reasons = tolerance_for(spec.tolerances, backend, precision)
        torch_outputs, why_not = (self.torch_at(precision) if tolerance.no_worse_factor
                                  else (None, ""))
        verdict = judge(outputs, self.fp32, tolerance, label=label, logits=spec.logits,
                        fp64=self.fp64, torch_same_precision=torch_outputs, reasons=reasons,
                        precision=precision, feed=self.feed)
        return replace(verdict, no_worse_note=f"not applied: {why_not}") if why_not else verdict

    def judge_task(self, runner, label: str):
        task = self.subject.spec.task
        score, detail = task.score(runner.run(self.task_feed), self.task_fp32)
        return task_verdict(score, detail, task.min_score, label=label,
                            description=task.description)
