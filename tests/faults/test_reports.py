"""The reports survive what is in them and what renders them: a lone surrogate in a message,
a renderer's bug, an unwritable job summary (issue 25, faults 4, 5 and 12)."""

import json

import pytest

from infergate.report import document
from infergate.report.document import ReportsIncomplete, write_reports
from tests.test_report import sample_document, sample_results

ONE = ("--models", "mlp", "--backends", "ort_cpu", "--precisions", "fp32")


def test_a_lone_surrogate_in_a_message_is_written_as_its_escape(tmp_path, monkeypatch):
    """A path decoded with surrogateescape, quoted in an exception, once killed the session
    with UnicodeEncodeError before any report was written."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    results = sample_results()
    results[0] = {**results[0], "outcome": "failed",
                  "reason": "OSError: cannot open '/data/w\udcffeights.bin'"}
    paths = write_reports(tmp_path, sample_document(results=results))
    assert set(paths) == {"results.json", "summary.md", "report.html"}
    for path in paths.values():
        path.read_text(encoding="utf-8")  # valid UTF-8 throughout
    assert "w\\udcffeights.bin" in paths["summary.md"].read_text(encoding="utf-8")
    reasons = [r["reason"] for r in json.loads(paths["results.json"].read_text())["results"]]
    assert "OSError: cannot open '/data/w\udcffeights.bin'" in reasons


def test_a_renderer_bug_costs_its_view_never_results_json(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

    def broken(_):
        raise KeyError("p50")

    monkeypatch.setattr(document, "render_html", broken)
    with pytest.raises(ReportsIncomplete) as caught:
        write_reports(tmp_path, sample_document())
    assert set(caught.value.written) == {"results.json", "summary.md"}
    assert caught.value.failures == [f"the reports: {tmp_path / 'report.html'}: rendering it "
                                     f"failed: KeyError: 'p50'"]
    assert len(json.loads((tmp_path / "results.json").read_text())["results"]) == len(
        sample_results())


def test_an_unwritable_job_summary_is_named_and_the_results_line_kept(project, pytester,
                                                                      monkeypatch):
    (pytester.path / "summary-dir").mkdir()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(pytester.path / "summary-dir"))
    result, _ = project(*ONE)
    assert result.ret == 6
    result.stdout.fnmatch_lines([
        "*infergate: 1 results -> */out/ (results.json, summary.md, report.html)",
        f"*infergate: could not write the job summary (GITHUB_STEP_SUMMARY="
        f"{pytester.path / 'summary-dir'}): Is a directory (exit status 6)"])
    assert "could not write the reports" not in result.stdout.str()
