"""On-disk artifact cache: ONNX exports, quantized models, trained weights, compiler caches.

Each artifact lives in ``<root>/<kind>/<digest>/`` where the digest hashes everything that
produced it (model fingerprint, precision, parameters, library versions, the source of the
exporter and transforms modules). A change to any of those gives a new digest, so a stale
artifact is never reused. Builds happen in a private temporary directory that is renamed into
place only when complete, so a crash or a parallel worker never leaves or sees a half-written
artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from infergate import progress


class ArtifactError(RuntimeError):
    """Building an artifact failed; the message says where its partial output was kept."""


def digest(key: Mapping[str, Any]) -> str:
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the given distributions (``"absent"`` when not installed)."""
    found = {}
    for name in distributions:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def code_digest(module: ModuleType) -> str:
    """Digest of a module's source: an artifact built by changed code is a new artifact
    (a cached export must not outlive an edit to the exporter)."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:20]


def hash_file(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / digest(key)

    def get(self, kind: str, key: Mapping[str, Any], build: Callable[[Path], None],
            describe: str) -> Path:
        """The directory holding the artifact for ``key``, building it on a cache miss.

        ``build(tmpdir)`` writes the artifact's files into ``tmpdir``.
        """
        final = self.path_for(kind, key)
        if (final / "key.json").exists():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with progress.step(f"{describe} (cache miss: {final})"):
                build(tmp)
        except Exception as exc:
            kept = final.parent / f"failed-{final.name}"
            shutil.rmtree(kept, ignore_errors=True)
            tmp.rename(kept)
            raise ArtifactError(
                f"{describe} failed: {type(exc).__name__}: {exc}\n"
                f"partial artifacts kept in {kept}") from exc
        (tmp / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))
        try:
            tmp.rename(final)
        except OSError:  # another worker finished first: theirs is as good as ours
            if not (final / "key.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return final
