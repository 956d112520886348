"""Another revision of this project, checked out beside the working tree for A/B timing.

Stored baselines carry the between-run scatter of the runner (about 3 % on the CI machine
type, run to run and day to day), which no number of processes in one run averages away.
Measuring the base revision in the same run, alternating its processes with the change's,
leaves only process-to-process scatter. The checkout is a plain ``git archive`` extract with
its own artifact cache: artifact keys hash the model's code and weights, the exporter and
transforms and library versions, but not every helper an artifact depends on (training data,
calibration feeds), and a shared cache must never hand one side's build to the other.

Which repository: where the project has model files of its own (``--infergate-model-file``,
``infergate_model_files``), the git repository holding them, timed with this same infergate
(a team A/B-tests its change to its models); else infergate's own source checkout, each side
with its own infergate; else (infergate installed) the repository of pytest's rootdir. A
project's revision imports its own packages from the extract (``put_on_path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


class RevisionError(RuntimeError):
    """The revision cannot be checked out or prepared; the message says why."""


@dataclass(frozen=True)
class Checkout:
    rev: str  # as the user named it
    sha: str
    # first on its processes' path, their cwd: the extract or this infergate's source checkout
    # (where they import infergate from), or the extract's parent for an installed infergate
    source: Path
    cache_dir: Path  # its own artifact cache
    extract: Path  # the repository at the revision
    # this tree's model files -> their copies at the revision (None: not there)
    model_files: dict[str, Path | None] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        return f"{self.rev} ({self.sha[:10]})"

    @property
    def python_path(self) -> list[str]:
        """sys.path entries of its processes beyond infergate's: a project's own packages
        at the revision (flat or src layout), where the project is not infergate."""
        if self.source == self.extract:
            return []
        return [str(p) for p in (self.extract, self.extract / "src") if p.is_dir()]


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if proc.returncode:
        raise RevisionError(f"git {' '.join(args)} failed in {repo}: "
                            f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


def _extract(repo: Path, sha: str, into: Path) -> None:
    """``git archive`` of ``sha`` unpacked into ``into`` as it streams (a team's repository
    may be large: it never sits in memory whole)."""
    with subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", sha],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(into, filter="data")
            unreadable = ""
        except tarfile.TarError as exc:  # git stopped writing (missing objects, say)
            unreadable = f"; its output could not be unpacked: {exc}"
        error = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode or unreadable:
        shutil.rmtree(into, ignore_errors=True)
        raise RevisionError(f"git archive {sha} failed in {repo}: {error}{unreadable}")


def _toplevel(path: Path) -> Path | None:
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except RevisionError:
        return None


def _repository(model_files: list[Path]) -> Path | None:
    """The one git repository holding the project's model files (None without any)."""
    found: dict[Path, Path] = {}
    for path in model_files:
        top = _toplevel(path.parent)
        if top is None:
            raise RevisionError(f"--infergate-perf-against: model file {path} is not in a git "
                                f"repository, so it has no revision to time against")
        found.setdefault(top, path)
    if len(found) > 1:
        raise RevisionError("--infergate-perf-against: the model files come from more than "
                            "one git repository (" + ", ".join(
                                f"{f} in {top}" for top, f in found.items())
                            + "); A/B one repository's models per run")
    return next(iter(found), None)


def _is_source_checkout() -> bool:
    return (PROJECT / "infergate" / "__init__.py").is_file() and (PROJECT / ".git").exists()


def checkout(rev: str, cache_root: Path, model_files=(), project: Path | None = None
             ) -> Checkout:
    """Extract ``rev`` (anything ``git rev-parse`` takes) under ``cache_root``, once per
    commit (the extract appears whole or not at all), of: the repository holding
    ``model_files`` (the project's own, by path); without any, infergate's source checkout;
    where infergate is installed, the repository of ``project`` (pytest's rootdir), whose
    packages (entry-point models) the revision's processes then import from the extract."""
    if shutil.which("git") is None:
        raise RevisionError("--infergate-perf-against needs git, which is not installed")
    model_files = [Path(f).resolve() for f in model_files]
    repo = _repository(model_files)
    if repo is None and _is_source_checkout():
        repo = PROJECT
    elif repo is None:
        repo = _toplevel(Path(project)) if project is not None else None
        if repo is None:
            where = f"{project} is not in a git repository" if project else "no project given"
            raise RevisionError(
                f"--infergate-perf-against times revisions of your project's git repository "
                f"(the one holding your model files, or else pytest's rootdir) or of "
                f"infergate's own source checkout; {where} and this infergate is installed "
                f"({PROJECT}), so there is nothing to check out. Compare your runs with the "
                f"stored baselines, or `python -m infergate compare RUN_A RUN_B`")
    try:
        sha = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except RevisionError as exc:
        raise RevisionError(f"--infergate-perf-against {rev!r}: not a commit of {repo} "
                            f"(fetch it first in a shallow clone)") from exc
    home = Path(cache_root).resolve() / "revisions" / sha
    extract = home / "src"
    if not extract.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="src.", dir=home))
        _extract(repo, sha, tmp)
        if repo == PROJECT and not (tmp / "infergate" / "__init__.py").is_file():
            shutil.rmtree(tmp)
            raise RevisionError(f"--infergate-perf-against {rev!r} ({sha[:10]}) has no "
                                f"infergate package")
        try:
            os.rename(tmp, extract)
        except OSError:  # another worker got there first
            shutil.rmtree(tmp, ignore_errors=True)
    if repo == PROJECT:  # infergate's own revision, with its own infergate
        source = extract
    elif _is_source_checkout():  # a project's, with this infergate's source
        source = PROJECT
    else:  # a project's, with this infergate as installed: nothing goes ahead of the stdlib
        source = home
    copies = {str(f): extract / f.relative_to(repo) for f in model_files}
    return Checkout(rev, sha, source, home / "cache", extract,
                    {f: (c if c.is_file() else None) for f, c in copies.items()})


# Runs with the revision's own infergate: only names every revision since the performance
# gate has (all_models, all_backends, ModelUnderTest, ArtifactStore, Backend.prepare), but
# use_model_files and put_on_path, which only a project's A/B asks for (with this infergate).
_PREPARE = """
import json, sys
from pathlib import Path
from infergate.build.artifacts import ArtifactStore
from infergate.backends import all_backends
from infergate.models import all_models
from infergate.build.subject import ModelUnderTest
model, backend, precision, cache = sys.argv[1:5]
if sys.argv[5:]:  # a project's: its model file's copy ("" for one found by name), folders
    from infergate.models import use_model_files
    from infergate.perf.revision import put_on_path
    put_on_path(sys.argv[6:])
    use_model_files([f for f in sys.argv[5:6] if f])
if model not in all_models() or backend not in all_backends():
    print(json.dumps({"missing": True})); sys.exit(0)
subject = ModelUnderTest(all_models()[model], ArtifactStore(Path(cache)))
all_backends()[backend].prepare(subject, precision)
known = {"fingerprint": subject.fingerprint}
if precision in ("int8", "fp8") and hasattr(type(subject), "calibration_digest"):
    known["calibration_digest"] = subject.calibration_digest
print(json.dumps(known))
"""


def put_on_path(folders: list[str]) -> None:
    """In a revision's process: its project's packages (``Checkout.python_path``) ahead of the
    installed ones, an editable install of the same package included, but behind the standard
    library, which a file at a repository's root (an ``inspect.py``) must not shadow."""
    site = next((i for i, entry in enumerate(sys.path)
                 if Path(entry).name in ("site-packages", "dist-packages")), len(sys.path))
    sys.path[site:site] = [f for f in folders if f not in sys.path]


def _copy_of(ref: Checkout, model_file: str) -> str | None:
    """The revision's copy of a project's model file ("" for a model found by name; None
    where the revision has no such file)."""
    if not model_file:
        return ""
    copy = ref.model_files.get(model_file)
    return None if copy is None else str(copy)


def prepare(ref: Checkout, model: str, backend: str, precision: str,
            model_file: str = "") -> dict | None:
    """Build the revision's artifacts for one combination with the revision's code; returns
    what its probes need to find them (the model fingerprint, and the calibration digest of
    a calibrated precision where the revision has one), or None when the revision lacks the
    combination. ``model_file``: this tree's file of a project's model ("" for a model found
    by name), whose copy at the revision is built."""
    copy = _copy_of(ref, model_file)
    if copy is None:
        return None
    # infergate's own revision takes no more arguments for a model found by name.
    project = [copy, *ref.python_path] if copy or ref.python_path else []
    from infergate.failures import path_first

    env = {**os.environ, "PYTHONPATH": path_first(ref.source)}
    proc = subprocess.run([sys.executable, "-c", _PREPARE, model, backend, precision,
                           str(ref.cache_dir), *project], capture_output=True, text=True,
                          env=env, cwd=ref.source, check=False)
    if proc.returncode or not proc.stdout.strip():
        raise RevisionError(f"{model}-{backend}-{precision}: preparing {ref.label} failed "
                            f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if reply.get("missing") else reply


def run_reference_probe(ref: Checkout, prepared: dict, model: str, backend: str,
                        precision: str, *, dims: dict, threads: int, min_time_s: float,
                        lock_dir: Path, feed: Path | None = None,
                        model_file: str = "") -> dict:
    """One fresh-process measurement with the revision's code and artifacts (``prepared``:
    what ``prepare`` returned), under the same lock as this tree's probes. ``feed``: this
    tree's saved inputs, so both sides run one feed and neither imports torch for it (a
    revision from before saved feeds ignores it and makes its own). ``model_file``: as for
    ``prepare``."""
    from infergate.perf.probe import ProbeError, probe_request, spawn_probe

    request = probe_request(model, backend, precision, ref.cache_dir, prepared["fingerprint"],
                            dims=dims, threads=threads, min_time_s=min_time_s)
    request.update({k: v for k, v in prepared.items() if k != "fingerprint"})
    if feed is not None:
        request["feed"] = str(feed)
    # Both read by this infergate's probe: a project's A/B never runs another one.
    copy = _copy_of(ref, model_file)
    if copy:
        request["model_file"] = copy
    if ref.python_path:
        request["sys_path"] = ref.python_path
    try:
        return spawn_probe(request, source=ref.source, lock_dir=lock_dir)
    except ProbeError as exc:  # e.g. its model takes other inputs than this tree's feed
        raise ProbeError(f"{ref.label}, measured for A/B on this tree's feed: {exc}") from None
