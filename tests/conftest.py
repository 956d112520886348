"""Self-test helpers: a tiny model spec, a throwaway artifact store, a scratch project."""

import itertools
import json
from pathlib import Path

import pytest
import torch
from _pytest import pytester as _pytester
from torch import nn

from infergate.build.artifacts import ArtifactStore
from infergate.spec import Dim, ModelSpec


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h), h.sum(dim=-1, keepdim=True)


class LabelledTiny(Tiny):
    """Tiny with an integer output beside its logits, as a classifier that returns labels."""

    def forward(self, x):
        logits, _ = super().forward(x)
        return logits, logits.argmax(dim=-1)


def build_labelled_tiny(store):
    torch.manual_seed(0)
    return LabelledTiny().eval()


class DictTiny(Tiny):
    """Tiny returning a dict, in another order than its spec lists the outputs."""

    def forward(self, x):
        logits, energy = super().forward(x)
        return {"energy": energy, "logits": logits}


def build_dict_tiny(store):
    torch.manual_seed(0)
    return DictTiny().eval()


def build_tiny(store):
    torch.manual_seed(0)
    return Tiny().eval()


def tiny_inputs(batch, seed):
    return {"x": torch.randn(batch, 6, generator=torch.Generator().manual_seed(seed))}


def make_tiny_spec(**changes):
    fields = dict(name="tiny", build=build_tiny, make_inputs=tiny_inputs,
                  outputs=("logits", "energy"), logits=("logits",),
                  dims={"batch": Dim(1, 8, 3)}, dynamic_axes={"x": {0: "batch"}})
    fields.update(changes)
    return ModelSpec(**fields)


@pytest.fixture(scope="session")
def tiny_spec():
    return make_tiny_spec()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


REPO = Path(__file__).resolve().parents[1]

# In-process pytester drops every module first imported during a run. Frameworks with native
# registries or C extensions (torch's op library, inductor's caches, numpy.fft) cannot be imported
# twice in one process, so a later test in the same worker would fail with "already
# registered" - depending on which tests xdist happened to put first. Keep them.
FRAMEWORKS = ("torch", "functorch", "onnx", "onnxruntime", "onnxscript", "openvino",
              "transformers", "sympy", "triton", "numpy", "scipy", "sklearn")


class _KeepFrameworks(_pytester.SysModulesSnapshot):
    def __init__(self, preserve=None):
        super().__init__(preserve=lambda name: name.split(".")[0] in FRAMEWORKS
                         or (preserve is not None and preserve(name)))


# Both of pytester's snapshots (the fixture's and each in-process run's) look the class up
# at use, so replacing it here covers both.
_pytester.SysModulesSnapshot = _KeepFrameworks


@pytest.fixture
def project(pytester, tmp_path_factory):
    """A scratch pytest project running the repo's suite files; ``run(*args)`` returns
    (result, results.json or None). The plugin comes from its entry point, as in any project
    with infergate installed."""
    pytester.makeconftest("# a scratch project: infergate's plugin comes from its entry point\n")
    pytester.makepyfile(**{path.stem: path.read_text() for path in (
        REPO / "suites/accuracy/test_equivalence.py",
        REPO / "suites/performance/test_latency.py",
        REPO / "suites/performance/test_memory.py",
        REPO / "suites/performance/test_instructions.py")})
    cache = tmp_path_factory.getbasetemp() / "plugin-cache"  # shared: export once
    reports = pytester.path / "out"

    def run(*args, tests=("test_equivalence.py",), counts=None):
        # The callgrind figures cost ~10 s a combination: counted where a test asks for them
        # (by default, where it runs test_instructions), off elsewhere.
        counts = "test_instructions.py" in tests if counts is None else counts
        result = pytester.runpytest("-p", "no:cacheprovider", f"--cache-dir={cache}",
                                    f"--reports-dir={reports}", *tests, *args,
                                    *(() if counts else ("--infergate-perf-counts", "off")))
        results = reports / "results.json"
        data = json.loads(results.read_text()) if results.is_file() else None
        return result, data

    return run


@pytest.fixture(autouse=True)
def _scratch_sessions_stand_alone(monkeypatch):
    # Scratch sessions would append their summaries to the real CI job summary.
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    # Under `pytest tests -n 2` these describe this xdist worker, not a scratch session:
    # pytest-benchmark reads PYTEST_XDIST_WORKER and disables itself in every nested run.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)


# Controlled timings (issue 11): what every probe reports, before slowdown and jitter. The p50
# is over the default 1 ms latency floor, so the gate judges it; the jitter, one step per probe
# in turn, gives a between-process scatter of about 1 %, as on a quiet runner.
CONTROLLED_P50_MS = 2.0
CONTROLLED_NORMALISED = 10.0
CONTROLLED_JITTER = (0.0, 0.01, -0.01)
_SCALED_MS = ("min_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "stddev_ms")


@pytest.fixture
def controlled_timings(monkeypatch):
    """``control()`` makes every fresh-process measurement from then on (this tree's and a
    ``--perf-against`` revision's) report controlled latencies instead of its wall times.

    The probe processes still run for real, protocol and reply included; only the model's
    latency figures in the reply are replaced: the controlled p50 and normalised figures
    times ``1 + request["slowdown"]`` times the next jitter step (the other timings scaled to
    match). A verdict of the gate then depends on the code under test, never on the runner's
    load. ``control()`` returns the list of (source, slowdown, factor, request) of each
    probe so far.
    """
    from infergate.perf import probe

    real = probe.spawn_probe
    jitter = itertools.cycle(CONTROLLED_JITTER)
    calls = []

    def controlled(request, *, source, lock_dir):
        reply = real(request, source=source, lock_dir=lock_dir)
        slowdown = request.get("slowdown", 0.0)
        factor = (1 + slowdown) * (1 + next(jitter))
        latency = reply["latency"]
        p50, normalised = CONTROLLED_P50_MS * factor, CONTROLLED_NORMALISED * factor
        scale, ratio = p50 / latency["p50_ms"], normalised / latency["normalised"]
        for name in _SCALED_MS:
            latency[name] *= scale
        for series in ("samples_ms", "block_means_ms"):
            latency[series] = [s * scale for s in latency[series]]
        latency["throughput_per_s"] /= scale
        latency["normalised_samples"] = [r * ratio for r in latency["normalised_samples"]]
        latency.update(p50_ms=p50, normalised=normalised)
        calls.append((Path(source), slowdown, factor, request))
        return reply

    def control():
        monkeypatch.setattr(probe, "spawn_probe", controlled)
        return calls

    return control
