"""The model registry. Built-in models: one line per model in ``_MODULES``. A project's own
models come from outside the package, each a ``SPEC = ModelSpec(...)``:

- the entry-point group ``infergate.models`` (an installed package's ``name = "pkg.mod:SPEC"``,
  or a module defining ``SPEC``);
- model files: ``--infergate-model-file PATH`` or the ini key ``infergate_model_files``, each a
  ``.py`` file or a folder of them (files starting with ``_`` are helpers, not models).

Every model is selectable by name; when the project has models of its own, a run without
``--infergate-models`` judges those and leaves the built-in ones out.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

from infergate.spec import ModelSpec, SpecError, WithoutIsa

ZOO = "pip install 'infergate[zoo]'"  # how the built-in models' requirements install


# ONNX Runtime's dynamic int8 is u8s8 MatMulInteger: on x86 CPUs without VNNI its kernels
# saturate the pairwise int16 sums. 7-bit weights would avoid it, but cost MiniLM's real
# weights far more (token-state cosine 0.93 -> 0.76 on the Zen 3 guest).
ORT_DYNAMIC_INT8_WITHOUT_VNNI = WithoutIsa(
    isa=("avx512_vnni", "avx_vnni"),
    reason="ONNX Runtime's u8s8 dynamic int8 saturates on x86 CPUs without VNNI (AMD EPYC "
           "Zen 3 guest: RMSE vs fp64 8.5x PyTorch int8_dynamic's for mlp, 8.3x for gru)")

_MODULES = (
    "mlp",
    "digits_cnn",
    "gru",
    "minilm",
    "minilm_short",
    "resnet50",
    "gpt2",
)
ENTRY_POINTS = "infergate.models"
_FILES_PACKAGE = "infergate_model_files"  # where files loaded by path live in sys.modules

_model_files: tuple[Path, ...] = ()


def _spec_of(module: ModuleType, where: str) -> ModelSpec:
    spec = getattr(module, "SPEC", None)
    if spec is None:
        raise SpecError(f"{where}: defines no SPEC = ModelSpec(...)")
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"{where}: SPEC is a {type(spec).__name__}, not a ModelSpec")
    return spec


@contextmanager
def _importing(where: str):
    """Any error while a model's code is imported, as a SpecError naming where it came from."""
    try:
        yield
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except Exception as exc:  # e.g. ModelSpec(...) missing a field: a TypeError
        raise SpecError(f"{where}: importing it raised {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # an unguarded `sys.exit(main())` at the bottom of the file
        raise SpecError(f"{where}: importing it called sys.exit({exc.code!r}); a script's "
                        f"entry point belongs under `if __name__ == \"__main__\":`") from None


def _load(qualified: str) -> ModelSpec:
    found = importlib.util.find_spec(qualified)
    if found is None:
        raise SpecError(f"{__file__}: registers {qualified!r}, but no such module exists")
    with _importing(found.origin):
        module = importlib.import_module(qualified)
    return _spec_of(module, found.origin)


def module_name_for(path: Path) -> str:
    """The module a model file is loaded as: unique per file (two folders may both hold a
    ``model.py``), the same in every process (workers find the spec by it)."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"{_FILES_PACKAGE}.{path.stem}_{digest}"


def load_file(path: Path | str) -> ModuleType:
    """Import one model file by its path (once per process). Its folder goes on sys.path, so
    it may import its own helpers beside it."""
    path = Path(path).resolve()
    name = module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise SpecError(f"{path}: model file not found")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    found = importlib.util.spec_from_file_location(name, path)
    if found is None or found.loader is None:
        raise SpecError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        with _importing(str(path)):
            found.loader.exec_module(module)
    except SpecError:
        del sys.modules[name]  # a fixed file loads afresh
        raise
    return module


def expand(paths: Iterable[Path | str]) -> list[Path]:
    """Model files: each path a ``.py`` file, or a folder whose ``*.py`` files (not ``_*``)
    are each one model, in name order."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files += sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        elif path.suffix == ".py" and path.is_file():
            files.append(path)
        else:
            raise SpecError(f"{path}: model file not found (a .py file or a folder of them)")
    return [f.resolve() for f in files]


def use_model_files(paths: Iterable[Path | str]) -> None:
    """Register model files for this process (the plugin calls it from the command line and
    the ini file); the registry is read again on next use."""
    global _model_files
    _model_files = tuple(dict.fromkeys(expand(paths)))
    _all.cache_clear()


def model_files() -> tuple[Path, ...]:
    """The model files registered for this process (``use_model_files``)."""
    return _model_files


def _from_entry_points() -> list[tuple[str, ModelSpec]]:
    found = []
    for point in sorted(importlib.metadata.entry_points(group=ENTRY_POINTS),
                        key=lambda p: p.name):
        where = f"entry point {point.name} = {point.value!r} ({ENTRY_POINTS})"
        with _importing(where):
            loaded = point.load()
        spec = _spec_of(loaded, where) if isinstance(loaded, ModuleType) else loaded
        if not isinstance(spec, ModelSpec):
            raise SpecError(f"{where}: is a {type(spec).__name__}, not a ModelSpec")
        found.append((where, spec))
    return found


@cache
def _all() -> dict[str, tuple[ModelSpec, str | None]]:
    """name -> (spec, where it came from; None for a built-in model)."""
    specs: dict[str, tuple[ModelSpec, str | None]] = {}

    def add(spec: ModelSpec, where: str, project: bool) -> None:
        if spec.name in specs:
            earlier = specs[spec.name][1] or f"infergate's built-in {spec.name!r}"
            raise SpecError(f"{where}: model name {spec.name!r} is already taken by {earlier}")
        specs[spec.name] = (spec, where if project else None)

    for module_name in _MODULES:
        add(_load(f"{__name__}.{module_name}"), module_name, project=False)
    for where, spec in _from_entry_points():
        add(spec, where, project=True)
    for path in _model_files:
        add(_spec_of(load_file(path), str(path)), str(path), project=True)
    return specs


def all_models() -> dict[str, ModelSpec]:
    return {name: spec for name, (spec, _) in _all().items()}


def project_models() -> tuple[str, ...]:
    """Names of the project's own models (entry points, then model files): what a run without
    --infergate-models judges, where there are any (else the built-in models)."""
    return tuple(name for name, (_, where) in _all().items() if where is not None)


def defined_in(spec: ModelSpec) -> str:
    """Where ``spec`` is defined, as its usage errors name it: the model file or the entry
    point it was registered from, else the file (or module) of its ``build``."""
    registered, where = _all().get(spec.name, (None, None))
    if registered is spec and where:
        return where
    module = sys.modules.get(spec.build.__module__)
    return getattr(module, "__file__", None) or spec.build.__module__


def source_file(spec: ModelSpec) -> str:
    """The model file a worker process loads ``spec`` from ("" where it is importable by its
    module name: built-in, entry point, or defined elsewhere in importable code)."""
    module = sys.modules.get(spec.build.__module__)
    if module is None or not spec.build.__module__.startswith(_FILES_PACKAGE + "."):
        return ""
    return getattr(module, "__file__", "") or ""
