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
    # Runs apart (a year of a fleet is a few thousand): their time is parsed once, not once
    # per result row, which took 90 % of a year-scale pass.
    run_query = sa.select(runs.c.id, runs.c.created, runs.c.commit)
    if selection.machine:
        run_query = run_query.where(runs.c.machine_id.in_(selection.machine.split(",")))
    series: dict[Key, list[Point]] = {}
    with store.transaction() as connection:
        info = {}
        for run_id, created, commit in connection.execute(run_query):
            info[run_id] = (created if created.tzinfo else created.replace(tzinfo=UTC), commit)
        for figure in figures:  # one query per figure: only the rows that have it
            column = results.c[figure]
            query = (sa.select(results.c.run_id, runs.c.machine_id, results.c.test,
                               results.c.combo, column)
                     .join(runs, runs.c.id == results.c.run_id)
                     .where(column.is_not(None), *selection.where())
                     .order_by(runs.c.created, runs.c.id))
            for run_id, machine, test, combo, value in connection.execute(query).all():
                time, commit = info[run_id]
                series.setdefault((machine, test, combo, figure), []).append(
                    Point(run_id, time, commit, value))
    return series
