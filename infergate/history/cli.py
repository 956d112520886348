"""``python -m infergate history ingest|changes|report``: the parsers and what they run.

The parsers import nothing heavy; SQLAlchemy and ruptures load when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infergate.history import unavailable

PROG = "python -m infergate history"


def add_parser(commands) -> None:
    history = commands.add_parser(
        "history", help="the run history: ingest results, list change points, trend plots",
        description="Every run's results in a database (SQLite by default, PostgreSQL with "
                    "--url postgresql+psycopg://user@host/db), and the steps found in them.")
    actions = history.add_subparsers(dest="history_command", required=True, metavar="ACTION")
    url_help = "database URL (default: sqlite:///.infergate/history.db)"
    ingest = actions.add_parser(
        "ingest", help="add results.json files to the history (idempotent)",
        description="Add each results.json as a run (one per machine in a merged file). The "
                    "same run ingested again replaces its results: it stays one run.")
    ingest.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    ingest.add_argument("--url", default=None, help=url_help)
    changes = actions.add_parser(
        "changes", help="list change points in every series",
        description="Steps in each series (machine id x test x combination x figure): the run "
                    "and commit where the new level starts, its size and its significance "
                    "(Welch t-test between the segments either side).")
    changes.add_argument("--url", default=None, help=url_help)
    report = actions.add_parser(
        "report", help="write history.html: trend plots per combination",
        description="A self-contained page of trend plots per machine and combination, one "
                    "per figure: each run coloured by its outcome, change points and "
                    "thresholds marked.")
    report.add_argument("--out", required=True, type=Path, metavar="DIR")
    report.add_argument("--url", default=None, help=url_help)
    for parser in (changes, report):
        for name in ("machine", "model", "backend", "precision", "figure"):
            parser.add_argument(f"--{name}", default=None,
                                help=f"only these {name}s (comma list)")
    changes.add_argument("--regressions", action="store_true",
                         help="only steps in the worse direction")
    changes.add_argument("--json", action="store_true", help="one JSON object per change")


def _fail(action: str, message: str) -> int:
    print(f"{PROG} {action}: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if why := unavailable():
        return _fail(args.history_command, why)
    from infergate.history.store import HistoryError, Store, default_url
    from infergate.report.document import ReportError, load_results

    action = args.history_command
    try:
        store = Store.open(args.url or default_url())
    except HistoryError as exc:
        return _fail(action, str(exc))
    try:
        if action == "ingest":
            from infergate.history.ingest import ingest

            for path in args.results:
                for done in ingest(store, load_results(path), str(path)):
                    print(f"{path}: {done}")
            return 0
        if action == "report":
            from infergate.history import report
            from infergate.history.series import Filter

            path = report.write(store, args.out, Filter(args.machine, args.model, args.backend,
                                                        args.precision, args.figure))
            print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
            return 0
        return _changes(store, args)
    except (HistoryError, ReportError, ValueError) as exc:
        return _fail(action, str(exc))
    finally:
        store.close()


def _changes(store, args) -> int:
    from infergate.history.changes import find_changes
    from infergate.history.series import Filter, load_series

    selection = Filter(args.machine, args.model, args.backend, args.precision, args.figure)
    series = load_series(store, selection)
    found = [c for key, points in sorted(series.items()) for c in find_changes(key, points)
             if c.regression or not args.regressions]
    if args.json:
        for change in found:
            print(json.dumps(change.as_dict()))
        return 0
    print(f"{len(series)} series, {len(found)} change points ({store.url})")
    for c in found:
        commit = f" commit {c.commit[:10]}" if c.commit else ""
        kind = "regression" if c.regression else "improvement"
        print(f"{c.machine_id}  {c.test}[{c.combo}]  {c.figure}: {c.delta_pct:+.2f} % "
              f"({c.before:.5g} → {c.after:.5g}) from run {c.run_id}{commit} "
              f"({c.time:%Y-%m-%d %H:%M}), p={c.p_value:.2g}, {kind}")
    return 0


def add_compare_parser(commands) -> None:
    compare = commands.add_parser(
        "compare", help="two runs side by side: outcomes, key figures, deltas, verdicts",
        description="Compare run B with run A: each a results.json file or, with --url, a "
                    "run id of the history. Markdown on stdout; with --out, compare.md and "
                    "compare.html there.")
    compare.add_argument("run_a", metavar="RUN_A")
    compare.add_argument("run_b", metavar="RUN_B")
    compare.add_argument("--url", default=None,
                         help="history database for run ids (default: sqlite:///"
                              ".infergate/history.db)")
    compare.add_argument("--out", type=Path, default=None, metavar="DIR")


def compare(args: argparse.Namespace) -> int:
    run_ids = [run for run in (args.run_a, args.run_b) if run.isdigit() and not Path(run).exists()]
    if run_ids and (why := unavailable()):  # two results.json files need no database
        print(f"python -m infergate compare: error: {why}", file=sys.stderr)
        return 2
    from infergate.history import compare as side_by_side
    from infergate.report.document import ReportError, load_results

    errors = (ReportError, ValueError)
    if run_ids:
        from infergate.history.store import HistoryError, Store, default_url

        errors += (HistoryError,)
    store = None
    try:
        sides = []
        for run in (args.run_a, args.run_b):
            if run in run_ids:
                if store is None:
                    store = Store.open(args.url or default_url())
                sides.append((f"run {run} of {store.url}",
                              side_by_side.rows_of_run(store, int(run))))
            else:
                sides.append((run, side_by_side.rows_of_document(load_results(Path(run)))))
    except errors as exc:
        print(f"python -m infergate compare: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()
    (name_a, a), (name_b, b) = sides
    rows = side_by_side.compare(a, b)
    if args.out:
        for path in side_by_side.write(args.out, rows, name_a, name_b):
            print(path)
    else:
        print(side_by_side.render_markdown(rows, name_a, name_b), end="")
    return 0

