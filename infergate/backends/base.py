"""The backend and runner contracts every backend implements.

A ``Backend`` says what it can run and whether it can run here; ``prepare`` does the
cold-start work (export, conversion, quantization, compile) and returns a ``Runner``.
The ``Runner`` base class owns the lifecycle checks; a backend overrides only ``*_impl``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the first output, not with the backend registry
    import numpy as np

TIERS_ORDER = {"smoke": 0, "full": 1}

ONNX_EXPORT = ("onnx", "onnxscript")  # torch.onnx's dynamo exporter: every ONNX backend's input


def absent(who: str, requires: Mapping[str, str]) -> str | None:
    """Why ``who`` cannot run here: the first module of ``requires`` (module -> how to install
    it, "" where nothing to say) that is not installed; None when all are."""
    for module, install in requires.items():
        if not installed(module):
            return (f"{who}: python package '{module}' is not installed"
                    + (f" ({install})" if install else ""))
    return None


@cache
def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, found without importing it; asked once per
    session (the matrix asks for every combination of every test: ~400 times)."""
    return importlib.util.find_spec(module) is not None


def host_array(value) -> np.ndarray:
    """One output as the comparator takes it: half and bfloat floats widened to float32 (numpy
    has no bfloat16), float64 kept (the fp64 reference's digits below float32 resolution are
    what fp32 verdicts are judged by), integers and bools kept, to be compared exactly."""
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype != np.float64:
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "biuf":
        return array
    return array.astype(np.float32)  # e.g. an ml_dtypes bfloat16 array


class RunnerError(RuntimeError):
    """A runner broke its contract (wrong outputs, used while inactive)."""


class Runner:
    """Warm inference on one prepared artifact: ``with runner: runner.run(feed)``."""

    def __init__(self, label: str, output_names: tuple[str, ...]):
        self.label = label
        self.output_names = tuple(output_names)
        self.is_active = False
        # Hidden precision knobs and thread counts this runner pinned, recorded in reports.
        self.settings: dict[str, Any] = {}
        # Intra-op threads to pin at activate(); None keeps the framework's default. Set it
        # between prepare() and activate() (the performance probes pin it for stable figures).
        self.threads: int | None = None

    def activate(self) -> Runner:
        __tracebackhide__ = True
        if self.is_active:
            raise RunnerError(f"{self.label}: activate() called twice")
        self.activate_impl()
        self.is_active = True
        return self

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        __tracebackhide__ = True
        if not self.is_active:
            raise RunnerError(f"{self.label}: run() before activate()")
        outputs = self.run_impl(feed)
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise RunnerError(f"{self.label}: outputs {missing} missing (got {sorted(outputs)})")
        return {name: host_array(outputs[name]) for name in self.output_names}

    def synchronize(self) -> None:
        """Wait for queued device work; CPU runners are synchronous."""

    def memory_stats(self) -> dict[str, float]:
        """Allocator/device memory figures this backend exposes (MB), read after the
        measurement; {} when it exposes none."""
        # The CPU runners (torch, ort_cpu, openvino) keep {}: none exposes its allocator's
        # figures cheaply, and the probe's peak RSS already counts their memory.
        return {}

    def deactivate(self) -> None:
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate_impl(self) -> None:
        pass

    def run_impl(self, feed: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        pass


class Backend:
    """One inference backend. Subclasses set the class attributes and implement ``prepare``."""

    name: str = ""
    description: str = ""  # one line for the README and the reports (what it runs, caveats)
    device: str = "cpu"
    precisions: tuple[str, ...] = ()
    tier: str = "smoke"  # the cheapest tier this backend runs in
    requires: tuple[str, ...] = ()  # importable modules it needs
    precision_requires: dict[str, tuple[str, ...]] = {}  # extra modules for one precision
    extra: str = ""  # infergate's extra that installs them all (pyproject.toml), "" for none
    uncountable: str = ""  # why its instruction count cannot judge it, "" where it can
    uncountable_at: dict[str, str] = {}  # the same for one precision only

    def unavailable_reason(self, precision: str | None = None) -> str | None:
        """Why this backend (at ``precision``) cannot run here, or None.
        Cheap: finds modules without importing the framework."""
        install = f"pip install 'infergate[{self.extra}]'" if self.extra else ""
        return absent(self.name, dict.fromkeys(
            self.requires + self.precision_requires.get(precision, ()), install))

    def prepare(self, subject, precision: str) -> Runner:
        """Cold start: build what ``precision`` needs from ``subject`` (a ModelUnderTest)."""
        raise NotImplementedError

    def initialise_runtime(self, precision: str, threads: int | None = None,
                           cache_dir: Path | None = None) -> dict[str, Any]:
        """Bring the framework's runtime to the state every model starts from - libraries
        paged in, plugins and frontends loaded, thread pools and allocator pools created - by
        running a trivial workload (``warmup.tiny_onnx``'s graph) at ``precision`` on
        ``threads`` intra-op threads, and keep that state while this backend object lives.
        ``cache_dir`` is the artifact cache, for a runtime that keeps a compile cache there.

        The performance probe calls it before the model loads and charges the model only for
        the memory that comes after: the runtime's own cost does not grow with the model, it
        depends on the host, and it is recorded apart. Returns what it ran, for the record.
        The default runs nothing: a backend whose runtime needs no start of its own."""
        del precision, threads, cache_dir
        return {}

    def floor_runner(self, precision: str, cache_dir: Path) -> Runner | None:
        """A runner of ``warmup.tiny_onnx``'s graph on this backend's own call path at
        ``precision`` (not yet activated), or None where it has none. Its instruction count
        is the runtime's fixed cost of a call, which does not grow with the model: the gate
        sizes its threshold from what a model costs above it (``deterministic.threshold_for``).
        torch's backends have none: their per-call Python work follows the heap layout
        (``docs/deterministic-figures.md``), so their threshold stays that of the whole
        count."""
        del precision, cache_dir
        return None

    def floor_precision(self, precision: str) -> str:
        """The precision whose floor runner stands for ``precision``'s (the same graph through
        the same runner): a session counts each floor once."""
        return precision

    def label(self, subject, precision: str) -> str:
        return f"{subject.spec.name}-{self.name}-{precision}"
