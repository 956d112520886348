"""Checking out another revision for A/B timing (--perf-against): infergate's own, the
repository of a project's model files, or (infergate installed) that of pytest's rootdir."""

import subprocess
import sys

import pytest

from infergate.build.artifacts import ArtifactStore
from infergate.build.subject import ModelUnderTest
from infergate.models import load_file
from infergate.perf.probe import ProbeError
from infergate.perf.revision import (
    PROJECT,
    RevisionError,
    checkout,
    prepare,
    put_on_path,
    run_reference_probe,
)
from tests.test_model_files import model_file

pytestmark = pytest.mark.skipif(not (PROJECT / ".git").exists(),
                                reason="not a git checkout: --perf-against needs one")


def test_checkout_extracts_the_revision_once(tmp_path):
    ref = checkout("HEAD", tmp_path)
    assert len(ref.sha) == 40 and ref.label == f"HEAD ({ref.sha[:10]})"
    marker = ref.source / "infergate" / "__init__.py"
    assert marker.is_file() and ref.cache_dir.parent == ref.source.parent
    before = marker.stat().st_mtime_ns
    again = checkout(ref.sha, tmp_path)
    assert (again.sha, again.source, again.cache_dir) == (ref.sha, ref.source, ref.cache_dir)
    assert marker.stat().st_mtime_ns == before
    assert [p.name for p in ref.source.parent.iterdir() if p.name.startswith("src.")] == []


def test_an_unknown_revision_is_a_clear_error(tmp_path):
    with pytest.raises(RevisionError, match="'no-such-branch': not a commit of /"):
        checkout("no-such-branch", tmp_path)


def test_an_installed_infergate_says_it_has_no_revisions_to_time(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "infergate").mkdir(parents=True)
    (site / "infergate" / "__init__.py").write_text("")
    monkeypatch.setattr("infergate.perf.revision.PROJECT", site)
    with pytest.raises(RevisionError, match=r"this infergate is installed .*site-packages"):
        checkout("HEAD", tmp_path / "cache")


def test_an_installed_infergate_times_the_rootdir_s_repository_without_model_files(
        tmp_path, monkeypatch, model_repo):
    """Models from entry points of the project's own package: the revision's processes
    import that package from the extract (root or src/), with the installed infergate."""
    site = tmp_path / "site-packages"
    (site / "infergate").mkdir(parents=True)
    (site / "infergate" / "__init__.py").write_text("")
    monkeypatch.setattr("infergate.perf.revision.PROJECT", site)
    repo = model_repo.parents[1]
    ref = checkout("HEAD", tmp_path / "cache", project=repo / "models")
    assert (ref.extract / "models" / "affine.py").is_file() and ref.model_files == {}
    assert ref.source == ref.extract.parent and ref.python_path == [str(ref.extract)]
    with pytest.raises(RevisionError, match=f"{tmp_path} is not in a git repository and this "
                                            f"infergate is installed"):
        checkout("HEAD", tmp_path / "cache", project=tmp_path)


def test_prepare_builds_with_the_revision_s_own_code_and_cache(tmp_path):
    ref = checkout("HEAD", tmp_path)
    prepared = prepare(ref, "mlp", "ort_cpu", "fp32")
    assert prepared and len(prepared["fingerprint"]) == 20
    assert "calibration_digest" not in prepared  # only a calibrated precision needs one
    assert list((ref.cache_dir / "onnx").glob("*/model.onnx"))
    assert prepare(ref, "no_such_model", "ort_cpu", "fp32") is None


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


@pytest.fixture
def model_repo(tmp_path):
    """A project's git repository with one committed model file, models/affine.py."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    path = model_file(repo / "models", "affine")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "affine")
    return path


def test_a_project_s_revision_is_its_model_files_repository_run_with_this_infergate(
        tmp_path, model_repo):
    path = model_repo
    path.write_text(path.read_text().replace("Linear(6, 3)", "Linear(6, 3, bias=False)"))
    added = model_file(path.parent, "added_since")
    ref = checkout("HEAD", tmp_path / "cache", [path, added])
    assert ref.source == PROJECT and ref.extract.match("revisions/*/src")
    copy = ref.model_files[str(path)]
    assert copy == ref.extract / "models" / "affine.py" and "bias=False" not in copy.read_text()
    assert ref.model_files[str(added)] is None
    assert str(ref.extract) in ref.python_path

    # The revision's model is built from its copy, into the revision's own cache: its
    # fingerprint is the committed file's, not this tree's edited one.
    prepared = prepare(ref, "affine", "ort_cpu", "fp32", str(path))
    store = ArtifactStore(tmp_path / "tree-cache")
    edited = ModelUnderTest(load_file(path).SPEC, store).fingerprint
    committed = ModelUnderTest(load_file(copy).SPEC, store).fingerprint
    assert prepared["fingerprint"] == committed != edited
    assert list((ref.cache_dir / "onnx").glob("*/model.onnx"))
    # A model the revision does not have yet: nothing to A/B, not an error.
    assert prepare(ref, "added_since", "ort_cpu", "fp32", str(added)) is None


def test_model_files_outside_one_git_repository_are_clear_errors(tmp_path, model_repo):
    loose = model_file(tmp_path, "loose")
    with pytest.raises(RevisionError, match=f"model file {loose} is not in a git repository"):
        checkout("HEAD", tmp_path / "cache", [model_repo, loose])
    other = tmp_path / "other"
    other.mkdir()
    _git(other, "init", "-q")
    with pytest.raises(RevisionError, match="more than one git repository"):
        checkout("HEAD", tmp_path / "cache", [model_repo, model_file(other, "elsewhere")])
    with pytest.raises(RevisionError, match=f"'v9': not a commit of {model_repo.parents[1]}"):
        checkout("v9", tmp_path / "cache", [model_repo])


def test_a_revision_whose_model_takes_other_inputs_fails_naming_the_revision(tmp_path,
                                                                            model_repo):
    """Both sides run this tree's feed: where the revision's model cannot take it, its
    runtime's message says so, under the revision's name."""
    path = model_repo
    path.write_text(path.read_text().replace("6", "8"))  # this tree's model takes x: (batch, 8)
    ref = checkout("HEAD", tmp_path / "cache", [path])
    prepared = prepare(ref, "affine", "ort_cpu", "fp32", str(path))
    subject = ModelUnderTest(load_file(path).SPEC, ArtifactStore(tmp_path / "tree-cache"))
    dims = subject.spec.benchmark_dims()
    with pytest.raises(ProbeError, match=r"HEAD \(\w+\), measured for A/B on this tree's "
                                         r"feed: affine-ort_cpu-fp32: measuring process exited"
                                         r"(.|\n)*x"):
        run_reference_probe(ref, prepared, "affine", "ort_cpu", "fp32", dims=dims, threads=1,
                            min_time_s=0.05, lock_dir=tmp_path, feed=subject.feed_path(**dims),
                            model_file=str(path))


def test_a_revision_s_processes_import_its_own_packages_ahead_of_installed_ones(
        tmp_path, model_repo, monkeypatch):
    """A package at the repository's root that the model imports (installed, say, in
    editable mode: here on sys.path) is the revision's copy in the revision's processes."""
    repo = model_repo.parents[1]
    (repo / "mylayers").mkdir()
    (repo / "mylayers" / "__init__.py").write_text("WIDTH = 3\n")
    model_repo.write_text(model_repo.read_text().replace(
        "self.linear = torch.nn.Linear(6, 3)",
        "from mylayers import WIDTH\n        self.linear = torch.nn.Linear(6, WIDTH)"))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "width from mylayers")
    monkeypatch.syspath_prepend(str(repo))
    spec = load_file(model_repo).SPEC
    committed = ModelUnderTest(spec, ArtifactStore(tmp_path / "a")).fingerprint
    # This tree's edit; another size, so a bytecode cache of the same second is not reused.
    (repo / "mylayers" / "__init__.py").write_text("WIDTH = 12\n")
    monkeypatch.delitem(sys.modules, "mylayers")
    edited = ModelUnderTest(spec, ArtifactStore(tmp_path / "b")).fingerprint
    ref = checkout("HEAD", tmp_path / "cache", [model_repo])
    prepared = prepare(ref, "affine", "ort_cpu", "fp32", str(model_repo))
    assert prepared["fingerprint"] == committed != edited


def test_put_on_path_goes_behind_the_standard_library_and_ahead_of_site_packages(
        monkeypatch):
    stdlib, site = "/usr/lib/python3.11", "/venv/lib/python3.11/site-packages"
    monkeypatch.setattr(sys, "path", ["", stdlib, site, "/editable/src"])
    put_on_path(["/rev/src", stdlib])
    assert sys.path == ["", stdlib, "/rev/src", site, "/editable/src"]


def test_an_archive_git_cannot_write_is_a_clear_error_and_leaves_nothing(tmp_path):
    from infergate.perf.revision import _extract

    into = tmp_path / "src.x"
    into.mkdir()
    with pytest.raises(RevisionError, match=r"git archive 0{40} failed in .*: fatal"):
        _extract(PROJECT, "0" * 40, into)
    assert not into.exists()
