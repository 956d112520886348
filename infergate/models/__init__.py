"""The model registry: one line per model in ``_MODULES``.

Each module under ``infergate/models/`` defines ``SPEC = ModelSpec(...)``.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache

from infergate.spec import ModelSpec, SpecError

_MODULES = (
    "mlp",
    "digits_cnn",
    "gru",
    "minilm",
    "minilm_short",
    "resnet50",
    "gpt2",
)


def _load(qualified: str) -> ModelSpec:
    found = importlib.util.find_spec(qualified)
    if found is None:
        raise SpecError(f"{__file__}: registers {qualified!r}, but no such module exists")
    where = found.origin
    try:
        spec = getattr(importlib.import_module(qualified), "SPEC", None)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    except Exception as exc:  # e.g. ModelSpec(...) missing a field: a TypeError
        raise SpecError(f"{where}: importing it raised {type(exc).__name__}: {exc}") from None
    if spec is None:
        raise SpecError(f"{where}: defines no SPEC = ModelSpec(...)")
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"{where}: SPEC is a {type(spec).__name__}, not a ModelSpec")
    return spec


@cache
def all_models() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for module_name in _MODULES:
        spec = _load(f"{__name__}.{module_name}")
        if spec.name in specs:
            raise SpecError(f"{module_name}: model name {spec.name!r} is registered twice")
        specs[spec.name] = spec
    return specs
