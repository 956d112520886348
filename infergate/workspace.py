"""Session-wide state: the artifact store and one lazily built subject/reference per model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from infergate.build.artifacts import ArtifactStore
from infergate.models import all_models

if TYPE_CHECKING:  # both bring torch and numpy: loaded by the first test that needs a model
    from infergate.accuracy.reference import Reference
    from infergate.build.subject import ModelUnderTest


class Workspace:
    def __init__(self, cache_dir: Path, reports_dir: Path):
        self.store = ArtifactStore(cache_dir)
        self.reports_dir = Path(reports_dir)
        self._subjects: dict[str, ModelUnderTest] = {}
        self._references: dict[str, Reference] = {}

    def subject(self, model: str) -> ModelUnderTest:
        if model not in self._subjects:
            from infergate.build.subject import ModelUnderTest

            self._subjects[model] = ModelUnderTest(all_models()[model], self.store)
        return self._subjects[model]

    def reference(self, model: str, runner_for=None) -> Reference:
        """The model's reference, made once; ``runner_for`` (see Reference) at the first
        call decides where PyTorch runs."""
        if model not in self._references:
            from infergate.accuracy.reference import Reference

            self._references[model] = Reference(self.subject(model), runner_for=runner_for)
        return self._references[model]
