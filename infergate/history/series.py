"""Series out of the history: (machine id, test, combination, figure) -> points in run order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import sqlalchemy as sa

from infergate.history.changes import Point
from infergate.history.store import FIGURES, Store, results, runs

Key = tuple[str, str, str, str]  # machine_id, test, combo, figure


@dataclass(frozen=True)
class Filter:
    machine: str | None = None
    model: str | None = None
    backend: str | None = None
    precision: str | None = None
    figure: str | None = None

    def where(self):
        clauses = []
        for value, column in ((self.machine, runs.c.machine_id), (self.model, results.c.model),
                              (self.backend, results.c.backend),
                              (self.precision, results.c.precision)):
            if value:
                clauses.append(column.in_(value.split(",")))
        return clauses


def load_series(store: Store, selection: Filter = Filter()) -> dict[Key, list[Point]]:
    figures = [f for f in FIGURES if not selection.figure or f in selection.figure.split(",")]
    if not figures:
        raise ValueError(f"unknown figure {selection.figure!r}; figures: {', '.join(FIGURES)}")
    query = (sa.select(runs.c.id, runs.c.created, runs.c.commit, runs.c.machine_id,
                       results.c.test, results.c.combo,
                       *(results.c[f] for f in figures))
             .join(runs, runs.c.id == results.c.run_id)
             .where(*selection.where())
             .order_by(runs.c.created, runs.c.id))
    series: dict[Key, list[Point]] = {}
    with store.transaction() as connection:
        for row in connection.execute(query):
            time = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
            for figure in figures:
                value = row._mapping[figure]
                if value is not None:
                    series.setdefault((row.machine_id, row.test, row.combo, figure), []).append(
                        Point(row.id, time, row.commit, float(value)))
    return series
