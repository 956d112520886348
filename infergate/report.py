"""results.json: every combination's outcome and metrics, plus the environment."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from infergate import environment
from infergate.atomic import atomic_write_text

SCHEMA = "infergate.results/1"


def _finite(value):
    """JSON has no inf/nan: write them as strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_results(path: Path, results: list[dict], selection: dict) -> dict:
    document = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment.describe(),
        "selection": selection,
        "results": sorted(results, key=lambda r: (r["test"], r["id"])),
    }
    atomic_write_text(path, json.dumps(_finite(document), indent=1, default=str) + "\n")
    return document
