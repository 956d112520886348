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
from infergate.spec import SpecError


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


MANIFEST = "manifest.json"  # each file's size and sha256, written with the artifact
# Set by the pytest plugin for one run, inherited by its workers and probes: a build that
# failed in this run is not tried again by every later test.
SESSION_ENV = "INFERGATE_SESSION"


def _manifest(folder: Path) -> dict[str, dict]:
    return {str(f.relative_to(folder)): {"size": f.stat().st_size,
                                         "sha256": hash_file(f).hexdigest()}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}


def _fsync_tree(folder: Path) -> None:
    for path in [*sorted(folder.rglob("*")), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._verified: set[Path] = set()

    def path_for(self, kind: str, key: Mapping[str, Any]) -> Path:
        return self.root / kind / digest(key)

    def damage(self, folder: Path) -> str | None:
        """How a cached artifact differs from what was written (a truncated file, a missing
        one, no manifest or key to check it by), or None. Sizes every time, hashes once per
        process."""
        if not (folder / "key.json").exists():
            return "its key.json is missing (a half-written or half-deleted artifact)"
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():  # nothing to check it against: never trusted
            return "its manifest is missing (a half-deleted artifact)"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"its manifest is unreadable ({exc})"
        for name, expected in manifest.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != expected["size"]:
                return f"{name} is {path.stat().st_size} bytes, {expected['size']} were written"
        if folder not in self._verified:
            for name, expected in manifest.items():
                if hash_file(folder / name).hexdigest() != expected["sha256"]:
                    return f"{name}'s content changed since it was written"
            self._verified.add(folder)
        return None

    def get(self, kind: str, key: Mapping[str, Any], build: Callable[[Path], None],
            describe: str) -> Path:
        """The directory holding the artifact for ``key``, building it on a cache miss, or
        again when the cached one was damaged.

        ``build(tmpdir)`` writes the artifact's files into ``tmpdir``.
        """
        final = self.path_for(kind, key)
        if final.exists():  # any folder there: intact, or moved aside and built again
            damaged = self.damage(final)
            if damaged is None:
                return final
            aside = final.parent / f"damaged-{final.name}"
            shutil.rmtree(aside, ignore_errors=True)
            final.rename(aside)
            progress.say(f"{describe}: the cached artifact was damaged ({damaged}); moved to "
                         f"{aside}, building it again")
        kept = final.parent / f"failed-{final.name}"
        earlier = self._failed_this_session(kept)
        if earlier:
            raise ArtifactError(f"{describe} failed earlier in this run, not tried again: "
                                f"{earlier}\npartial artifacts kept in {kept}")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with progress.step(f"{describe} (cache miss: {final})"):
                build(tmp)
        except SpecError:  # the model's spec is wrong, not the build: nothing worth keeping
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as exc:
            shutil.rmtree(kept, ignore_errors=True)
            tmp.rename(kept)
            message = f"{type(exc).__name__}: {exc}"
            (kept / "failure.json").write_text(json.dumps(
                {"session": os.environ.get(SESSION_ENV), "error": message}))
            raise ArtifactError(f"{describe} failed: {message}\n"
                                f"partial artifacts kept in {kept}") from exc
        (tmp / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1, default=str))
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1))
        _fsync_tree(tmp)  # on disk before the rename publishes it
        try:
            tmp.rename(final)
        except OSError:  # another worker finished first: theirs is as good as ours
            if not (final / "key.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _failed_this_session(kept: Path) -> str | None:
        session = os.environ.get(SESSION_ENV)
        if not session:
            return None
        try:
            record = json.loads((kept / "failure.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record["error"] if record.get("session") == session else None
