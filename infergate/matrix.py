"""The model x backend x precision matrix: which combinations exist and how each is marked."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from infergate.accuracy.precision import PRECISIONS
from infergate.backends import Backend, all_backends
from infergate.backends.base import absent
from infergate.models import all_models, project_models
from infergate.spec import ModelSpec, WithoutIsa


class SelectionError(ValueError):
    """An unknown name in --infergate-models, --infergate-backends, --infergate-precisions or
    --infergate-tier."""


@dataclass(frozen=True)
class Combination:
    spec: ModelSpec
    backend: Backend
    precision: str
    skip: str | None = None  # backend unavailable here: the reason
    xfail: str | None = None  # known failure declared in the ModelSpec: the reason

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.backend.name}-{self.precision}"

    @property
    def tier(self) -> str:
        return "full" if "full" in (self.spec.tier, self.backend.tier) else "smoke"

    def __str__(self) -> str:
        return self.id


@dataclass(frozen=True)
class Selection:
    """What the user asked for. ``None`` means "all, subject to the tier"."""

    models: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    tier: str = "smoke"

    @classmethod
    def parse(cls, models: str | None, backends: str | None, precisions: str | None,
              tier: str) -> Selection:
        def names(option, raw, valid):
            if raw is None:
                return None
            chosen = tuple(n.strip() for n in raw.split(",") if n.strip())
            unknown = [n for n in chosen if n not in valid]
            if unknown or not chosen:
                raise SelectionError(
                    f"{option}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                    f"valid: {', '.join(valid)}")
            return chosen

        if tier not in ("smoke", "full"):
            raise SelectionError(f"--infergate-tier: unknown {tier!r}; valid: smoke, full")
        return cls(names("--infergate-models", models, list(all_models())),
                   names("--infergate-backends", backends, list(all_backends())),
                   names("--infergate-precisions", precisions, list(PRECISIONS)), tier)

    def _tier_allows(self, tier: str, explicitly_chosen: bool) -> bool:
        # Naming a full-tier model or backend explicitly is enough to run it.
        return explicitly_chosen or self.tier == "full" or tier == "smoke"

    def combinations(self) -> list[Combination]:
        combos = []
        # Unnamed, the project's own models where it has any; the built-in ones otherwise.
        chosen = self.models if self.models is not None else (project_models() or None)
        for spec in all_models().values():
            if chosen is not None and spec.name not in chosen:
                continue
            if not self._tier_allows(spec.tier, self.models is not None):
                continue
            for backend in all_backends().values():
                if self.backends is not None and backend.name not in self.backends:
                    continue
                if not self._tier_allows(backend.tier, self.backends is not None):
                    continue
                for precision in backend.precisions:
                    if self.precisions is not None and precision not in self.precisions:
                        continue
                    if (backend.name, precision) in spec.unsupported:
                        continue
                    combos.append(Combination(
                        spec, backend, precision,
                        skip=backend.unavailable_reason(precision) or _missing(spec),
                        xfail=_known_failure(spec, backend.name, precision)))
        return combos


def _missing(spec: ModelSpec) -> str | None:
    """Why ``spec`` cannot be built here (a module it requires is absent), or None."""
    return absent(spec.name, spec.requires)


@cache
def _host_isa() -> frozenset[str]:
    from infergate.machine_id import this_machine

    return frozenset(this_machine()["isa"])


def _known_failure(spec: ModelSpec, backend: str, precision: str) -> str | None:
    """The reason ``spec`` is known to fail there, on this CPU; None where it must pass."""
    known = spec.known_failures.get((backend, precision))
    if isinstance(known, WithoutIsa):
        return None if _host_isa() & set(known.isa) else known.reason
    return known
