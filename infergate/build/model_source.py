"""The source a model is built from: its spec's module and every module of the user's project
it imports, directly or through others. Artifact keys hash all of it, so editing a helper the
model file imports rebuilds the export instead of reusing a stale one."""

from __future__ import annotations

import hashlib
import inspect
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

# Installed code is covered by the library versions in every artifact key; infergate's own
# modules by the exporter's digest. Only the user's project is walked.
_INSTALLED = tuple({Path(sysconfig.get_paths()[k]).resolve()
                    for k in ("stdlib", "platstdlib", "purelib", "platlib")})
_HARNESS = Path(__file__).resolve().parents[1]  # the infergate package
_MODELS = _HARNESS / "models"  # the built-in models are project code like a user's


def _is_project_file(path: Path) -> bool:
    path = path.resolve()
    if path.is_relative_to(_MODELS):
        return True
    if path.is_relative_to(_HARNESS) or path.is_relative_to(Path(sys.prefix).resolve()):
        return False
    # Another environment's packages reached through a .pth or PYTHONPATH are installed too.
    if {"site-packages", "dist-packages"} & set(path.parts):
        return False
    return not any(path.is_relative_to(root) for root in _INSTALLED)


def _file(module: ModuleType) -> Path | None:
    name = getattr(module, "__file__", None)
    if not name or not name.endswith(".py"):
        return None
    path = Path(name)
    return path if path.is_file() and _is_project_file(path) else None


def _imports(module: ModuleType):
    """Modules ``module`` refers to at its top level: imported modules, and the modules of
    the functions and classes it imported from them. A package's own submodules are not its
    imports (the import system sets them on it: every model would depend on every other)."""
    children = module.__name__ + "."
    for value in list(vars(module).values()):
        if isinstance(value, ModuleType):
            if not value.__name__.startswith(children):
                yield value
        else:
            owner = inspect.getmodule(value) if (inspect.isclass(value)
                                                 or inspect.isfunction(value)) else None
            if owner is not None:
                yield owner


def project_files(*roots: ModuleType) -> list[Path]:
    """The project source files reachable from ``roots`` through imports, sorted."""
    seen: dict[str, Path | None] = {}
    stack = list(roots)
    while stack:
        module = stack.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = path = _file(module)
        if path is not None:
            stack.extend(_imports(module))
    return sorted({p for p in seen.values() if p is not None})


def source_digest(*objects) -> str:
    """Digest of the project source behind ``objects`` (functions, classes or modules): each
    file's path relative to the first one's folder, and its bytes as they are on disk now."""
    # A functools.partial's module is its function's.
    roots = [o if isinstance(o, ModuleType) else inspect.getmodule(getattr(o, "func", o))
             for o in objects]
    files = project_files(*(r for r in roots if r is not None))
    h = hashlib.sha256()
    base = files[0].parent if files else Path()
    for path in files:
        h.update(str(path.relative_to(base) if path.is_relative_to(base) else path.name)
                 .encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]
