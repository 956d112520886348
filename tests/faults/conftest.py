"""Planting faults in a scratch run's registry (see injected.py)."""

from dataclasses import replace

import pytest

from infergate.backends import all_backends
from infergate.models import all_models
from tests.faults.injected import faulty_backend


@pytest.fixture
def plant(monkeypatch):
    """``plant(fault, at, precision=None, **spec_changes)``: ort_cpu in the scratch run gets
    the fault (at one precision only, if given); torch stays healthy beside it."""
    def _plant(fault, at, precision=None, **spec_changes):
        backends = {**all_backends(), "ort_cpu": faulty_backend(fault, at, precision)()}
        monkeypatch.setattr("infergate.matrix.all_backends", lambda: backends)
        if spec_changes:
            spec = replace(all_models()["mlp"], **spec_changes)
            for module in ("infergate.matrix", "infergate.workspace"):
                monkeypatch.setattr(f"{module}.all_models", lambda: {"mlp": spec})
    return _plant
