"""Collecting the matrix imports no framework (issue 14: collection in under 0.5 s).

torch alone takes over a second to import and hypothesis about half one: collection waits for
neither. Models, backends and the property tests import them when a test needs them. This
checks what was imported, not how long it took: the time is measured and reported in the
README, never asserted in a test.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infergate.backends.cuda import no_gpu_driver

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("torch", "numpy", "hypothesis", "onnx", "onnxruntime", "openvino",
              "transformers", "sklearn", "scipy", "sqlalchemy", "tensorrt", "polygraphy")

# A fresh interpreter runs the collection; a plugin notes what is imported once it is done
# (hypothesis's own plugin imports hypothesis later, in its end-of-session summary).
COLLECT = """
import json, sys
import pytest

class Note:
    def pytest_collection_finish(self, session):
        self.items = len(session.items)
        self.imported = [m for m in {frameworks!r} if m in sys.modules]

note = Note()
code = pytest.main({args!r}, plugins=[note])
print(json.dumps({{"code": int(code), "items": note.items, "imported": note.imported}}))
"""


def collected(*args: str) -> dict:
    code = COLLECT.format(frameworks=FRAMEWORKS,
                          args=["--collect-only", "-q", "-p", "no:cacheprovider", *args])
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("tier", ["smoke", "full"])
def test_collecting_the_suites_imports_no_framework(tier):
    result = collected("suites", "--infergate-tier", tier)
    assert result["code"] == 0 and result["items"] > 100, result
    # Where a GPU driver is loaded, asking torch whether CUDA works is the only way to know.
    allowed = {"torch", "numpy"} if tier == "full" and not no_gpu_driver() else set()
    assert set(result["imported"]) <= allowed, (
        f"collecting the {tier} tier imported {sorted(set(result['imported']) - allowed)}: "
        f"import it where a test needs it (python -X importtime -m pytest --collect-only "
        f"suites shows who imports it)")


# A fresh probe process, as spawn_probe starts it, reporting what it imported.
PROBE = """
import json, sys
from infergate.perf import probe
probe.probe(json.load(sys.stdin))
print(json.dumps([m for m in ("torch", "transformers") if m in sys.modules]))
"""


@pytest.mark.parametrize(("backend", "precision"),
                         [("ort_cpu", "fp32"), ("ort_cpu", "int8"), ("openvino", "fp32")])
def test_a_probe_of_an_onnx_artifact_never_imports_torch(store, backend, precision):
    """Its feed and calibration digest come from the parent: torch would add 1.4 s to every
    fresh process (more under callgrind) and its thread pools beside the runtime measured."""
    from infergate.backends import all_backends
    from infergate.build.subject import ModelUnderTest
    from infergate.models import all_models
    from infergate.perf.probe import prepared_request

    subject = ModelUnderTest(all_models()["mlp"], store)
    request = prepared_request(subject, all_backends()[backend], precision, None, threads=1,
                               min_time_s=0.05, slowdown=0.0)
    run = subprocess.run([sys.executable, "-c", PROBE], input=json.dumps(request), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
