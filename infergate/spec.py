"""ModelSpec: everything the harness needs to know about one model, in one object."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infergate.accuracy.precision import PRECISIONS, Override

TIERS = ("smoke", "full")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SpecError(ValueError):
    """A ModelSpec that cannot be used; the registry prefixes the defining file."""


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension: the range the exported model must accept, and the size tests use."""

    min: int
    max: int
    default: int


@dataclass(frozen=True)
class PerfOverride:
    """Looser latency/memory/instruction thresholds (fractions) for one backend or
    (backend, precision) of a model; the reason is mandatory and shows in verdicts."""

    reason: str
    latency: float | None = None
    memory: float | None = None
    instructions: float | None = None


@dataclass(frozen=True)
class WithoutIsa:
    """A known failure only on CPUs that have none of ``isa`` (flag names as the machine id
    reads them, e.g. ``avx512_vnni``): where one is present the combination must pass."""

    isa: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Timeouts:
    """Longer (or shorter) step limits than the tier's for one model, in seconds; the reason
    is mandatory. Unset steps keep the tier's limit (``infergate.isolation.TIER_LIMITS``)."""

    reason: str
    prepare_s: float | None = None
    first_run_s: float | None = None
    run_s: float | None = None

    def problems(self):
        if not isinstance(self.reason, str) or not self.reason.strip():
            yield "timeouts need a reason"
        for name in ("prepare_s", "first_run_s", "run_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 < value < 1e6):
                yield f"timeouts.{name} must be a positive number of seconds, not {value!r}"


@dataclass(frozen=True)
class TaskCheck:
    """Task-level accuracy on real data.

    ``score(outputs, reference_outputs) -> (score, detail)``: a number where higher is
    better, compared against ``min_score``; ``detail`` is a human-readable figure such as
    "accuracy 0.972 vs fp32 0.978".
    """

    description: str
    inputs: Callable[[], dict[str, Any]]
    score: Callable[[dict, dict], tuple[float, str]]
    min_score: float


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # build(store) -> eval() torch.nn.Module whose forward(**inputs) returns a tuple ordered
    # like ``outputs``; ``store`` (an ArtifactStore) caches anything costly, e.g. trained weights.
    build: Callable[[Any], Any]
    make_inputs: Callable[..., dict[str, Any]]  # (batch, seed, **dims) -> {name: Tensor}
    outputs: tuple[str, ...]
    tier: str = "smoke"
    dims: Mapping[str, Dim] = field(default_factory=lambda: {"batch": Dim(1, 16, 2)})
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    logits: tuple[str, ...] = ()  # outputs where top-1 agreement is meaningful
    fp64: bool = True  # the model also runs in float64, giving a second reference
    tolerances: Mapping[Any, Override] = field(default_factory=dict)
    # {(backend, precision): reason, or WithoutIsa(...) for a failure of some CPUs only}
    known_failures: Mapping[tuple[str, str], str | WithoutIsa] = field(default_factory=dict)
    unsupported: Mapping[tuple[str, str], str] = field(default_factory=dict)
    task: TaskCheck | None = None
    calibration: Callable[[], list[dict[str, Any]]] | None = None
    # Sizes the performance tests measure at ({"batch": 1, "seq": 128}); unset dims take
    # their defaults.
    benchmark: Mapping[str, int] = field(default_factory=dict)
    # {backend or (backend, precision): PerfOverride}
    perf_overrides: Mapping[Any, PerfOverride] = field(default_factory=dict)
    # Why the instruction-count figure cannot judge this model ("" where it can): e.g. one
    # whose runtime needs an ISA valgrind's virtual CPU lacks.
    uncountable: str = ""
    timeouts: Timeouts | None = None  # step limits other than the tier's, with the reason
    description: str = ""
    # Python modules ``build`` needs beyond torch, each with how to install it: where one is
    # absent, the model's tests skip saying so rather than error in the build.
    requires: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        problems = list(self._problems())
        if problems:
            raise SpecError(f"ModelSpec {self.name!r}: " + "; ".join(problems))

    def _problems(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            yield "name must be lower_snake_case (it is used in test ids)"
        if not callable(self.build):
            yield "build must be callable"
        if not callable(self.make_inputs):
            yield "make_inputs must be callable"
        elif isinstance(self.dims, Mapping):
            yield from self._make_inputs_problems()
        if not self.outputs or not all(isinstance(o, str) for o in self.outputs):
            yield "outputs must be a non-empty tuple of names"
        if self.tier not in TIERS:
            yield f"tier {self.tier!r} is not one of {TIERS}"
        if "batch" not in self.dims:
            yield "dims must declare 'batch'"
        if not (isinstance(self.requires, Mapping)
                and all(isinstance(k, str) and isinstance(v, str)
                        for k, v in self.requires.items())):
            yield "requires must map module names to how to install them"
        for name, dim in self.dims.items():
            if not (isinstance(dim, Dim) and 1 <= dim.min <= dim.default <= dim.max):
                yield f"dim {name!r} must be a Dim with 1 <= min <= default <= max"
        for inp, axes in self.dynamic_axes.items():
            for axis, dim in axes.items():
                if dim not in self.dims:
                    yield f"dynamic_axes[{inp!r}][{axis}] names undeclared dim {dim!r}"
        for out in self.logits:
            if out not in self.outputs:
                yield f"logits names unknown output {out!r}"
        for key, override in self.tolerances.items():
            precision = key[1] if isinstance(key, tuple) else key
            if precision not in PRECISIONS:
                yield f"tolerance key {key!r}: unknown precision (valid: {', '.join(PRECISIONS)})"
            if not isinstance(override, Override) or not override.reason.strip():
                yield f"tolerance override {key!r} must be an Override with a reason"
            elif override.max_mismatch is not None and not 0 <= override.max_mismatch <= 1:
                yield (f"tolerance override {key!r}: max_mismatch {override.max_mismatch!r} "
                       f"is a fraction of elements, 0 to 1")
        for table in ("known_failures", "unsupported"):
            for key, reason in getattr(self, table).items():
                if not (isinstance(key, tuple) and len(key) == 2 and key[1] in PRECISIONS):
                    yield f"{table} key {key!r} must be (backend, precision)"
                if table == "known_failures" and isinstance(reason, WithoutIsa):
                    reason = reason.reason if reason.isa else ""
                if not isinstance(reason, str) or not reason.strip():
                    yield f"{table}[{key!r}] needs a reason"
        for key, override in self.perf_overrides.items():
            if not isinstance(override, PerfOverride) or not override.reason.strip():
                yield f"perf_overrides[{key!r}] must be a PerfOverride with a reason"
        for name, size in self.benchmark.items():
            dim = self.dims.get(name)
            if dim is None or not dim.min <= size <= dim.max:
                yield f"benchmark size {name}={size} is not inside a declared dim's range"
        if self.task is not None and not isinstance(self.task, TaskCheck):
            yield "task must be a TaskCheck"
        if self.timeouts is not None:
            if not isinstance(self.timeouts, Timeouts):
                yield "timeouts must be a Timeouts"
            else:
                yield from self.timeouts.problems()

    def _make_inputs_problems(self):
        """It is called as make_inputs(batch=, seed=, <each other dim>=): a signature that
        cannot take that fails here, at load, not in every test."""
        dims = [d for d in self.dims if d != "batch"]
        try:
            signature = inspect.signature(self.make_inputs)
        except (TypeError, ValueError):
            return  # a builtin or C callable: nothing to check
        try:
            signature.bind(batch=1, seed=0, **dict.fromkeys(dims, 1))
        except TypeError as exc:
            yield (f"make_inputs{signature} cannot be called as make_inputs(batch=, seed="
                   f"{''.join(f', {d}=' for d in dims)}): {exc}")

    def default_dims(self) -> dict[str, int]:
        return {name: d.default for name, d in self.dims.items() if name != "batch"}

    def example_inputs(self, seed: int = 0, batch: int | None = None, **dims) -> dict[str, Any]:
        """The seeded inputs equivalence tests use: declared defaults unless given."""
        sizes = {**self.default_dims(), **dims}
        return self.make_inputs(batch=batch or self.dims["batch"].default, seed=seed, **sizes)

    def perf_override(self, backend: str, precision: str) -> PerfOverride | None:
        return self.perf_overrides.get((backend, precision)) or self.perf_overrides.get(backend)

    def benchmark_dims(self) -> dict[str, int]:
        """Batch and dims the performance tests run at."""
        return {**{n: d.default for n, d in self.dims.items()}, **self.benchmark}

    def calibration_inputs(self) -> list[dict[str, Any]]:
        """Inputs for static quantization: the spec's own, else seeded draws (not the test's)."""
        if self.calibration is not None:
            return self.calibration()
        return [self.example_inputs(seed=1000 + i) for i in range(8)]


def input_generator(seed: int):
    """A torch.Generator for seeded inputs, on a stream apart from weight init.

    Models init weights after ``torch.manual_seed(0)``; inputs drawn from a generator also
    seeded 0 repeat those very draws, so input rows line up with weight rows (seen: the MLP's
    seed-0 inputs drove hidden activations 5x above any calibration input).
    """
    import torch

    return torch.Generator().manual_seed(0x5EED_0000 + seed)
