"""The run history: every run's results in a database (SQLite by default, PostgreSQL for a
fleet), change points found in each series (combination x figure x machine id).

``store`` owns the schema and the connection, ``ingest`` turns results.json into rows,
``changes`` finds steps, ``provenance`` records which commit and CI job a run was.
SQLAlchemy and ruptures are imported only here: ``import infergate`` never needs them.
"""

import importlib.util

NEEDS = ("sqlalchemy", "ruptures")  # infergate[history] (pyproject.toml)


def unavailable() -> str | None:
    """What the history lacks here, with the install that brings it; None when it can run."""
    missing = [module for module in NEEDS if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return f"the run history needs {' and '.join(missing)}: pip install 'infergate[history]'"
