"""Artifact cache: keys change when inputs change, builds are atomic, failures keep files."""

import pytest
import torch

from infergate.artifacts import ArtifactError, ArtifactStore, digest
from infergate.subject import ModelUnderTest


def test_digest_is_order_independent_and_sensitive():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})


def test_cache_hit_skips_build(tmp_path):
    store = ArtifactStore(tmp_path)
    calls = []

    def build(tmp):
        calls.append(tmp)
        (tmp / "x.txt").write_text("hello")

    first = store.get("kind", {"k": 1}, build, "test")
    second = store.get("kind", {"k": 1}, build, "test")
    assert first == second and len(calls) == 1
    assert (first / "x.txt").read_text() == "hello"
    store.get("kind", {"k": 2}, build, "test")
    assert len(calls) == 2


def test_failed_build_is_not_cached_and_keeps_its_files(tmp_path):
    store = ArtifactStore(tmp_path)

    def build(tmp):
        (tmp / "partial.onnx").write_text("half")
        raise RuntimeError("converter exploded")

    with pytest.raises(ArtifactError, match="converter exploded") as info:
        store.get("kind", {"k": 1}, build, "converting")
    assert "partial artifacts kept in" in str(info.value)
    kept = tmp_path / "kind" / f"failed-{digest({'k': 1})}"
    assert (kept / "partial.onnx").exists()
    assert not store.path_for("kind", {"k": 1}).exists()


def test_fingerprint_changes_with_weights(tiny_spec, store):
    a = ModelUnderTest(tiny_spec, store)
    b = ModelUnderTest(tiny_spec, store)
    assert a.fingerprint == b.fingerprint
    with torch.no_grad():
        b.module.fc1.weight[0, 0] += 1.0
    b.__dict__.pop("fingerprint", None)
    assert a.fingerprint != b.fingerprint


def test_onnx_export_is_cached_by_key(tiny_spec, store):
    subject = ModelUnderTest(tiny_spec, store)
    path = subject.onnx_path
    assert path.exists()
    again = ModelUnderTest(tiny_spec, store)
    assert again.onnx_path == path
    assert (path.parent / "key.json").exists()


def test_an_edit_to_the_exporter_or_transforms_is_a_new_artifact(tiny_spec, store, tmp_path,
                                                                 monkeypatch):
    import types

    from infergate import onnx_export, onnx_transforms
    from infergate.artifacts import code_digest

    module = types.ModuleType("edited")
    module.__file__ = str(tmp_path / "edited.py")
    (tmp_path / "edited.py").write_text("X = 1\n")
    before = code_digest(module)
    (tmp_path / "edited.py").write_text("X = 2\n")
    assert code_digest(module) != before

    subject = ModelUnderTest(tiny_spec, store)
    key = dict(subject.onnx_key)
    assert key["exporter"] == code_digest(onnx_export)
    monkeypatch.setattr("infergate.subject.code_digest", lambda m: "edited")
    assert ModelUnderTest(tiny_spec, store).onnx_key != key
    assert onnx_transforms._CODE == code_digest(onnx_transforms)
