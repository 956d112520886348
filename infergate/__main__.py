"""``python -m infergate report RESULTS.json [...] --out DIR``: re-render or merge reports.
``python -m infergate baselines diff CANDIDATE.json``: what a baseline update would change."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infergate import baselines
from infergate.report import ReportError, load_results, merge, write_reports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infergate", description="infergate: inference deployment gate tools")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="render results.json, summary.md and report.html from results files",
        description="Render results.json, summary.md and report.html into --out from one or "
                    "more results.json files. Several shards or machines merge into one "
                    "report: the same test and id from the same machine keeps the later "
                    "file's entry (with a warning); from different machines both are kept.")
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
    return parser


def baselines_diff(candidate_path: Path, baselines_dir: Path) -> int:
    try:
        if not candidate_path.exists():
            raise baselines.BaselineError(f"{candidate_path}: no such file")
        candidate = baselines.BaselineStore(candidate_path).load()
        current = baselines.BaselineStore(
            baselines_dir / f"{candidate['machine']['id']}.json").load()
    except (baselines.BaselineError, KeyError) as exc:
        print(f"python -m infergate baselines diff: error: {exc}", file=sys.stderr)
        return 2
    print(f"{baselines_dir / (candidate['machine']['id'] + '.json')}:")
    print("\n".join(baselines.diff(candidate, current)) or "no entries in the candidate")
    return 0


def report(results: list[Path], out: Path) -> int:
    try:
        sources = [(str(path), load_results(path)) for path in results]
    except ReportError as exc:
        print(f"python -m infergate report: error: {exc}", file=sys.stderr)
        return 2
    document, warnings = merge(sources)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    written = write_reports(out, document)
    print(f"{len(document['results'])} results -> " + ", ".join(map(str, written.values())))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "baselines":
        return baselines_diff(args.candidate, args.baselines_dir)
    return report(args.results, args.out)


if __name__ == "__main__":
    sys.exit(main())
