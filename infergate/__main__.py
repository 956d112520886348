"""``infergate report RESULTS.json [...] --out DIR``: re-render or merge reports.
``infergate baselines diff CANDIDATE.json``: what a baseline update would change.
``infergate baselines migrate OLD.json --cpuinfo FILE``: re-key an old baseline.
``infergate history ingest|changes|report``: the run history (infergate/history/cli.py).
``infergate compare RUN_A RUN_B``: two runs side by side.
(The console script ``infergate``, or ``python -m infergate``.)"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infergate import machine_id
from infergate.history import cli as history_cli
from infergate.perf import baselines
from infergate.report.document import (
    ReportError,
    ReportsIncomplete,
    load_results,
    merge,
    write_reports,
)


def _prog() -> str:
    """How this was started: the ``infergate`` console script or ``python -m infergate``."""
    return "infergate" if Path(sys.argv[0]).name == "infergate" else "python -m infergate"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_prog(), description="infergate: inference deployment gate tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="render results.json, summary.md and report.html from results files",
        description="Render results.json, summary.md and report.html into --out from one or "
                    "more results.json files. Several shards or machines merge into one "
                    "report: the same test and id from the same machine id keeps the later "
                    "file's entry (with a warning); from different machine ids both are "
                    "kept, and the report shows one matrix per machine.")
    report.add_argument("results", nargs="+", type=Path, metavar="RESULTS.json")
    report.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for the rendered files (created if missing)")
    base = commands.add_parser("baselines", help="inspect baseline updates before committing")
    base_commands = base.add_subparsers(dest="baselines_command", required=True, metavar="ACTION")
    diff = base_commands.add_parser(
        "diff", help="show what merging a candidate into the machine's baseline would change",
        description="Compare a candidate (reports/baseline-candidate-<machine>.json, written by "
                    "every performance run) with the committed baseline for that machine.")
    diff.add_argument("candidate", type=Path, metavar="CANDIDATE.json")
    diff.add_argument("--baselines-dir", type=Path, default=Path("baselines"))
    migrate = base_commands.add_parser(
        "migrate", help="re-key a baseline taken under the old model-name machine id",
        description="Baselines used to be keyed by the CPU's model name, which hypervisors "
                    "mask (Zen 4 and Zen 5 runners were both amd-epyc-2c-nogpu). Given the "
                    "/proc/cpuinfo of the machine type the baseline was taken on, write it "
                    "under its hardware id beside the old file; then delete the old file.")
    migrate.add_argument("old", type=Path, metavar="OLD.json")
    migrate.add_argument("--cpuinfo", required=True, type=Path, metavar="FILE",
                         help="/proc/cpuinfo (first processor block) of the machine it was "
                              "taken on")
    history_cli.add_parser(commands)
    history_cli.add_compare_parser(commands)
    return parser


def baselines_migrate(old: Path, cpuinfo: Path) -> int:
    try:
        fields, _ = machine_id.read_cpuinfo(cpuinfo)
        target = baselines.migrate(old, fields, old.parent)
    except (baselines.BaselineError, ValueError) as exc:
        print(f"{_prog()} baselines migrate: error: {exc}", file=sys.stderr)
        return 2
    print(f"{old} -> {target}; delete {old} once the new file is committed")
    return 0


def baselines_diff(candidate_path: Path, baselines_dir: Path) -> int:
    try:
        if not candidate_path.exists():
            raise baselines.BaselineError(f"{candidate_path}: no such file")
        candidate = baselines.BaselineStore(candidate_path).load()
        current = baselines.BaselineStore(
            baselines_dir / f"{candidate['machine']['id']}.json").load()
    except (baselines.BaselineError, KeyError) as exc:
        print(f"{_prog()} baselines diff: error: {exc}", file=sys.stderr)
        return 2
    print(f"{baselines_dir / (candidate['machine']['id'] + '.json')}:")
    print("\n".join(baselines.diff(candidate, current)) or "no entries in the candidate")
    return 0


def report(results: list[Path], out: Path) -> int:
    try:
        sources = [(str(path), load_results(path)) for path in results]
    except ReportError as exc:
        print(f"{_prog()} report: error: {exc}", file=sys.stderr)
        return 2
    document, warnings = merge(sources)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        written, failures = write_reports(out, document), []
    except ReportsIncomplete as exc:
        written, failures = exc.written, exc.failures
    print(f"{len(document['results'])} results -> " + ", ".join(map(str, written.values())))
    for failure in failures:
        print(f"{_prog()} report: could not write {failure}", file=sys.stderr)
    return 6 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "history":
        return history_cli.run(args)
    if args.command == "compare":
        return history_cli.compare(args)
    if args.command == "baselines" and args.baselines_command == "migrate":
        return baselines_migrate(args.old, args.cpuinfo)
    if args.command == "baselines":
        return baselines_diff(args.candidate, args.baselines_dir)
    return report(args.results, args.out)


if __name__ == "__main__":
    sys.exit(main())
