"""Another revision of this project, checked out beside the working tree for A/B timing.

Stored baselines carry the between-run scatter of the runner (about 3 % on the CI machine
type, run to run and day to day), which no number of processes in one run averages away.
Measuring the base revision in the same run, alternating its processes with the change's,
leaves only process-to-process scatter. The checkout is a plain ``git archive`` extract with
its own artifact cache: artifact keys hash the model's code and weights, the exporter and
transforms and library versions, but not every helper an artifact depends on (training data,
calibration feeds), and a shared cache must never hand one side's build to the other.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


class RevisionError(RuntimeError):
    """The revision cannot be checked out or prepared; the message says why."""


@dataclass(frozen=True)
class Checkout:
    rev: str  # as the user named it
    sha: str
    source: Path  # holds the revision's infergate package
    cache_dir: Path  # its own artifact cache

    @property
    def label(self) -> str:
        return f"{self.rev} ({self.sha[:10]})"


def _git(*args: str) -> str | bytes:
    proc = subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True, check=False)
    if proc.returncode:
        raise RevisionError(f"git {' '.join(args)} failed in {PROJECT}: "
                            f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode() if args[0] != "archive" else proc.stdout


def checkout(rev: str, cache_root: Path) -> Checkout:
    """Extract ``rev`` (anything ``git rev-parse`` takes) under ``cache_root``, once per
    commit; the extract appears whole or not at all."""
    if shutil.which("git") is None:
        raise RevisionError("--infergate-perf-against needs git, which is not installed")
    if not (PROJECT / "infergate" / "__init__.py").is_file() or not (PROJECT / ".git").exists():
        raise RevisionError(f"--infergate-perf-against times revisions of infergate's own "
                            f"source checkout; this infergate is installed ({PROJECT}), so "
                            f"there is none to check out. Compare your runs with the stored "
                            f"baselines, or `python -m infergate compare RUN_A RUN_B`")
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except RevisionError as exc:
        raise RevisionError(f"--infergate-perf-against {rev!r}: not a commit of this repository "
                            f"(fetch it first in a shallow clone)") from exc
    home = Path(cache_root).resolve() / "revisions" / sha
    source = home / "src"
    if not (source / "infergate" / "__init__.py").is_file():
        home.mkdir(parents=True, exist_ok=True)
        blob = _git("archive", "--format=tar", sha)
        tmp = Path(tempfile.mkdtemp(prefix="src.", dir=home))
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / "infergate" / "__init__.py").is_file():
            shutil.rmtree(tmp)
            raise RevisionError(f"--infergate-perf-against {rev!r} ({sha[:10]}) has no "
                                f"infergate package")
        try:
            os.rename(tmp, source)
        except OSError:  # another worker got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return Checkout(rev, sha, source, home / "cache")


# Runs with the revision's own infergate: only names every revision since the performance
# gate has (all_models, all_backends, ModelUnderTest, ArtifactStore, Backend.prepare).
_PREPARE = """
import json, sys
from pathlib import Path
from infergate.build.artifacts import ArtifactStore
from infergate.backends import all_backends
from infergate.models import all_models
from infergate.build.subject import ModelUnderTest
model, backend, precision, cache = sys.argv[1:5]
if model not in all_models() or backend not in all_backends():
    print(json.dumps({"missing": True})); sys.exit(0)
subject = ModelUnderTest(all_models()[model], ArtifactStore(Path(cache)))
all_backends()[backend].prepare(subject, precision)
known = {"fingerprint": subject.fingerprint}
if precision in ("int8", "fp8") and hasattr(type(subject), "calibration_digest"):
    known["calibration_digest"] = subject.calibration_digest
print(json.dumps(known))
"""


def prepare(ref: Checkout, model: str, backend: str, precision: str) -> dict | None:
    """Build the revision's artifacts for one combination with the revision's code; returns
    what its probes need to find them (the model fingerprint, and the calibration digest of
    a calibrated precision where the revision has one), or None when the revision lacks the
    combination."""
    env = {**os.environ, "PYTHONPATH": str(ref.source)}
    proc = subprocess.run([sys.executable, "-c", _PREPARE, model, backend, precision,
                           str(ref.cache_dir)], capture_output=True, text=True, env=env,
                          cwd=ref.source, check=False)
    if proc.returncode or not proc.stdout.strip():
        raise RevisionError(f"{model}-{backend}-{precision}: preparing {ref.label} failed "
                            f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if reply.get("missing") else reply


def run_reference_probe(ref: Checkout, prepared: dict, model: str, backend: str,
                        precision: str, *, dims: dict, threads: int, min_time_s: float,
                        lock_dir: Path, feed: Path | None = None) -> dict:
    """One fresh-process measurement with the revision's code and artifacts (``prepared``:
    what ``prepare`` returned), under the same lock as this tree's probes. ``feed``: this
    tree's saved inputs, so both sides run one feed and neither imports torch for it (a
    revision from before saved feeds ignores it and makes its own)."""
    from infergate.perf.probe import probe_request, spawn_probe

    request = probe_request(model, backend, precision, ref.cache_dir, prepared["fingerprint"],
                            dims=dims, threads=threads, min_time_s=min_time_s)
    request.update({k: v for k, v in prepared.items() if k != "fingerprint"})
    if feed is not None:
        request["feed"] = str(feed)
    return spawn_probe(request, source=ref.source, lock_dir=lock_dir)
