"""The artifact cache notices damage and remembers a failure for the rest of the run."""

import pytest

from infergate import progress
from infergate.build.artifacts import SESSION_ENV, ArtifactError, ArtifactStore


@pytest.fixture
def said(monkeypatch):
    lines = []
    monkeypatch.setattr(progress, "_sink", lines.append)
    return lines


def _builder(calls):
    def build(folder):
        calls.append(folder)
        (folder / "model.onnx").write_bytes(b"x" * 4096)
    return build


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest", "key"])
def test_a_damaged_cached_artifact_is_rebuilt_with_a_note(tmp_path, said, damage):
    calls = []
    store = ArtifactStore(tmp_path)
    folder = store.get("onnx", {"k": 1}, _builder(calls), "exporting m")
    model = folder / "model.onnx"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[:100])  # as a full disk or a killed copy leaves it
    elif damage == "flip":
        model.write_bytes(b"y" + model.read_bytes()[1:])
    elif damage == "delete":
        model.unlink()
    elif damage == "manifest":  # half a `rm -r`: once taken for an artifact older than manifests
        (folder / "manifest.json").unlink()
        model.unlink()
    else:  # a folder without key.json was never cleared: "Directory not empty" on every run
        (folder / "key.json").unlink()
    again = ArtifactStore(tmp_path).get("onnx", {"k": 1}, _builder(calls), "exporting m")
    assert again == folder and len(calls) == 2
    assert (again / "model.onnx").read_bytes() == b"x" * 4096
    assert any("the cached artifact was damaged" in line for line in said)
    assert (tmp_path / "onnx" / f"damaged-{folder.name}").is_dir()


def test_an_intact_artifact_is_reused(tmp_path):
    calls = []
    for _ in range(3):
        ArtifactStore(tmp_path).get("onnx", {"k": 1}, _builder(calls), "exporting m")
    assert len(calls) == 1


def test_a_failed_build_is_not_tried_again_in_the_same_run(tmp_path, monkeypatch, said):
    monkeypatch.setenv(SESSION_ENV, "run-1")
    attempts = []

    def broken(folder):
        attempts.append(folder)
        raise RuntimeError("exporter exploded")

    for _ in range(3):
        with pytest.raises(ArtifactError, match="exporter exploded"):
            ArtifactStore(tmp_path).get("onnx", {"k": 2}, broken, "exporting m")
    assert len(attempts) == 1
    assert sum("exporting m" in line and "failed after" in line for line in said) == 1
    monkeypatch.setenv(SESSION_ENV, "run-2")  # the next run tries again
    with pytest.raises(ArtifactError, match="exporter exploded"):
        ArtifactStore(tmp_path).get("onnx", {"k": 2}, broken, "exporting m")
    assert len(attempts) == 2
