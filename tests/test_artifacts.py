"""Artifact cache: keys change when inputs change, builds are atomic, failures keep files."""

import pytest
import torch

from infergate.build.artifacts import ArtifactError, ArtifactStore, digest
from infergate.build.subject import ModelUnderTest


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

    from infergate.build import onnx_export, onnx_transforms
    from infergate.build.artifacts import code_digest

    module = types.ModuleType("edited")
    module.__file__ = str(tmp_path / "edited.py")
    (tmp_path / "edited.py").write_text("X = 1\n")
    before = code_digest(module)
    (tmp_path / "edited.py").write_text("X = 2\n")
    assert code_digest(module) != before

    subject = ModelUnderTest(tiny_spec, store)
    key = dict(subject.onnx_key)
    assert key["exporter"] == code_digest(onnx_export)
    monkeypatch.setattr("infergate.build.subject.code_digest", lambda m: "edited")
    assert ModelUnderTest(tiny_spec, store).onnx_key != key
    assert onnx_transforms._CODE == code_digest(onnx_transforms)


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """``make(package, {module: source})`` writes a package of the user's project on sys.path
    and returns its ``model`` module's SPEC; the package leaves sys.modules afterwards."""
    import importlib
    import sys

    made = []

    def make(package: str, modules: dict[str, str]):
        (tmp_path / package).mkdir()
        for name, source in {"__init__": "", **modules}.items():
            (tmp_path / package / f"{name}.py").write_text(source)
        made.append(package)
        return importlib.import_module(f"{package}.model").SPEC

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for name in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[name]


def test_an_edit_to_a_helper_the_model_imports_rebuilds_its_export(tmp_path, user_project):
    """The model file is unchanged; a module of the user's project it imports is edited."""
    spec = user_project("userproj", {
        "blocks": "import torch\n\ndef head(width):\n    return torch.nn.Linear(width, 3)\n",
        "model": "import torch\nfrom infergate.spec import Dim, ModelSpec\n"
                 "from userproj.blocks import head\n"
                 "class Net(torch.nn.Module):\n"
                 "    def __init__(self):\n        super().__init__()\n"
                 "        self.head = head(6)\n"
                 "    def forward(self, x):\n        return self.head(x)\n"
                 "def build(store):\n    torch.manual_seed(0)\n    return Net().eval()\n"
                 "def make_inputs(batch, seed):\n    return {'x': torch.randn(batch, 6)}\n"
                 "SPEC = ModelSpec(name='user_model', build=build, make_inputs=make_inputs,\n"
                 "                 outputs=('y',), dims={'batch': Dim(1, 4, 2)},\n"
                 "                 dynamic_axes={'x': {0: 'batch'}})\n"})
    store = ArtifactStore(tmp_path / "cache")
    first = ModelUnderTest(spec, store)
    assert first.onnx_path.is_file()
    assert ModelUnderTest(spec, store).onnx_path == first.onnx_path  # unchanged: reused
    # The edit changes the weights' draw nowhere: only the source tells them apart.
    (tmp_path / "userproj" / "blocks.py").write_text(
        "import torch\n\ndef head(width):\n    return torch.nn.Linear(width, 3)  # v2\n")
    second = ModelUnderTest(spec, store)
    assert second.fingerprint != first.fingerprint
    assert second.onnx_path != first.onnx_path and second.onnx_path.is_file()


def test_an_edit_to_a_module_build_imports_lazily_changes_the_fingerprint(tmp_path,
                                                                          user_project):
    """A model file may keep torch off its top level (fast collection) and import its network
    inside ``build``: the modules defining the built layers are part of the key too."""
    spec = user_project("lazyproj", {
        "nets": "import torch\n\nclass Net(torch.nn.Sequential):\n"
                "    def __init__(self):\n        super().__init__(torch.nn.Linear(6, 3))\n",
        "model": "from infergate.spec import Dim, ModelSpec\n"
                 "def build(store):\n    import torch\n    from lazyproj.nets import Net\n"
                 "    torch.manual_seed(0)\n    return Net().eval()\n"
                 "def make_inputs(batch, seed):\n    import torch\n"
                 "    return {'input': torch.randn(batch, 6)}\n"
                 "SPEC = ModelSpec(name='lazy_model', build=build, make_inputs=make_inputs,\n"
                 "                 outputs=('y',), dims={'batch': Dim(1, 4, 2)},\n"
                 "                 dynamic_axes={'input': {0: 'batch'}})\n"})
    store = ArtifactStore(tmp_path / "cache")
    first = ModelUnderTest(spec, store).fingerprint
    assert ModelUnderTest(spec, store).fingerprint == first
    nets = tmp_path / "lazyproj" / "nets.py"
    nets.write_text(nets.read_text() + "# v2\n")
    assert ModelUnderTest(spec, store).fingerprint != first
