"""``--infergate-shard K/N``: a run's combinations split over N runners, deterministically.

Every test of one combination goes to the same shard (they share its export, its worker and
its measurements). The split balances the combinations' durations from the run history where
there is one (longest first onto the least-loaded shard), else their count; ties break by
name, so every shard computes the same split without talking to the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class ShardError(ValueError):
    """A malformed --infergate-shard value."""


def parse(value: str) -> tuple[int, int]:
    """"2/4" -> (2, 4): shard 2 of 4, counted from 1."""
    found = _SPEC.match(value or "")
    if not found:
        raise ShardError(f"--infergate-shard {value!r}: expected K/N, e.g. 1/4")
    k, n = int(found[1]), int(found[2])
    if not 1 <= k <= n:
        raise ShardError(f"--infergate-shard {value!r}: K must be 1 to N ({n})")
    return k, n


def assign(combos: Iterable[str], n: int,
           durations: Mapping[str, float] | None = None) -> dict[str, int]:
    """Shard (1..n) of each combination. A combination the history does not know costs the
    median of those it does (all cost 1 without a history)."""
    combos = sorted(set(combos))
    known = sorted(d for c, d in (durations or {}).items() if c in combos and d > 0)
    typical = known[len(known) // 2] if known else 1.0
    cost = {c: (durations or {}).get(c) or typical for c in combos}
    load = [0.0] * n
    shard_of = {}
    for combo in sorted(combos, key=lambda c: (-cost[c], c)):
        lightest = min(range(n), key=lambda i: (load[i], i))
        shard_of[combo] = lightest + 1
        load[lightest] += cost[combo]
    return shard_of


def durations(url: str, machine_id: str | None = None, runs: int = 10) -> dict[str, float]:
    """Seconds each combination took (all its tests together) in the latest of the last
    ``runs`` runs that had it, on ``machine_id`` where given. {} where the history has none."""
    import sqlalchemy as sa

    from infergate.history.store import Store, results
    from infergate.history.store import runs as runs_table

    with Store.open(url) as store, store.transaction() as connection:
        recent = sa.select(runs_table.c.id).order_by(runs_table.c.created.desc()).limit(runs)
        if machine_id:
            recent = recent.where(runs_table.c.machine_id == machine_id)
        rows = connection.execute(
            sa.select(results.c.combo, results.c.test, results.c.duration_s, runs_table.c.created)
            .join(runs_table, results.c.run_id == runs_table.c.id)
            .where(results.c.run_id.in_(recent.scalar_subquery()))).all()
    latest: dict[tuple[str, str], tuple] = {}
    for combo, test, seconds, created in rows:
        if seconds is not None and ((combo, test) not in latest
                                    or created > latest[combo, test][0]):
            latest[combo, test] = (created, seconds)
    total: dict[str, float] = {}
    for (combo, _), (_, seconds) in latest.items():
        total[combo] = total.get(combo, 0.0) + seconds
    return total
