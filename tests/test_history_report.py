"""history.html: trend plots with change points, thresholds and outcome colours; filters;
rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from infergate.__main__ import main
from infergate.history.changes import Point
from infergate.history.ingest import ingest
from infergate.history.report import Row, plot
from infergate.history.store import Store
from infergate.report.html import COLOURS
from tests.test_history import ENV, document


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """16 nights of minilm_short: +5 % latency from night 10, cosine broken from night 12;
    and a gru run on another machine, to be filtered out."""
    url = f"sqlite:///{tmp_path_factory.mktemp('history') / 'h.db'}"
    rng = np.random.default_rng(0)
    with Store.open(url) as store:
        for night in range(16):
            broken = night >= 12
            ingest(store, document(night, p50=10 * float(np.exp(rng.normal(0, 0.004)))
                                   * (1.05 if night >= 10 else 1.0),
                                   cosine=0.98 if broken else 0.9999,
                                   outcome="failed" if broken else "passed"), f"n{night}")
        other = document(0, run_id="other", env={**ENV, "machine": {"id": "intel-x"}})
        for e in other["results"]:
            e["id"], e["model"] = "gru-ort_cpu-fp32", "gru"
        ingest(store, other, "other")
    return url


def test_history_page_marks_changes_thresholds_and_outcomes(history, tmp_path, capsys):
    assert main(["history", "report", "--out", str(tmp_path), "--url", history,
                 "--model", "minilm_short"]) == 0
    assert "history.html" in capsys.readouterr().out
    html = (tmp_path / "history.html").read_text()
    assert "gru-ort_cpu-fp32" not in html and "intel-x" not in html  # filtered out
    assert re.search(r"· (\d+) tests × combinations × machines, (\d+) plots", html)[2] == str(
        html.count('<svg class="trend"'))
    plots = dict(re.findall(r'<svg class="trend" data-figure="(\w+)" data-changes="(\d+)"',
                            html))
    assert plots["normalised"] == "1" and plots["cosine"] == "1" and plots["memory_mb"] == "0"
    assert re.search(r"change point: \+[45]\.\d+ % from run 11 \(n100000000\)", html)
    assert "threshold: min_cosine 0.995" in html
    assert "threshold: +10 % over the first level" in html
    # outcome colours: only test_equivalence failed, on its 4 last nights
    assert html.count(f'fill="{COLOURS["failed"]}"') == 4


def test_the_time_axis_shows_the_hour_when_every_run_is_of_one_day():
    def axis(*times):
        rows = [Row(Point(i, t, None, 10.0 + i % 2), "passed", None, None)
                for i, t in enumerate(times)]
        return re.findall(r'<text x="[\d.]+" y="144"(?: text-anchor="end")?>([^<]+)</text>',
                          plot(("m", "mlp-ort_cpu-fp32", "test_latency"), "p50_ms", rows))

    day = datetime(2026, 11, 28, 2, 5, tzinfo=UTC)
    assert axis(day, day + timedelta(hours=3)) == ["2026-11-28 02:05", "2026-11-28 05:05"]
    assert axis(day, day + timedelta(days=3)) == ["2026-11-28", "2026-12-01"]


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="chromium not installed (Debian: apt-get install chromium)")
def test_history_page_renders_in_chromium(history, tmp_path):
    from tests.test_report_browser import chromium

    assert main(["history", "report", "--out", str(tmp_path), "--url", history]) == 0
    dom = chromium("--dump-dom", (tmp_path / "history.html").as_uri())
    assert 'data-ready="1"' in dom
    assert dom.count('<svg class="trend"') == 5 + 5  # both machines, every figure


def test_compare_two_runs_side_by_side(history, tmp_path, capsys):
    """Run 10 (before the latency step) against run 16 (after it, accuracy broken)."""
    assert main(["compare", "10", "16", "--url", history]) == 0
    md = capsys.readouterr().out
    assert "3 with another outcome" not in md and "1 with another outcome" in md
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines()
            if line.startswith("| test_")}
    assert "✅ passed | ❌ failed | cosine | 0.9999 | 0.98 | -1.99 %" in rows["test_equivalence"]
    assert re.search(r"normalised \| [\d.]+ \| [\d.]+ \| \+[45]\.\d+ %", rows["test_latency"])
    assert main(["compare", "10", str(tmp_path / "none.json"), "--url", history]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert main(["compare", "10", "99", "--url", history, "--out", str(tmp_path)]) == 2
    assert "no run 99" in capsys.readouterr().err
    assert main(["compare", "1", "16", "--url", history, "--out", str(tmp_path)]) == 0
    assert "<table>" in (tmp_path / "compare.html").read_text()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(document(0, p50=10.0)))
    b.write_text(json.dumps(document(1, p50=12.0, outcome="failed")))
    assert main(["compare", str(a), str(b)]) == 0
    md = capsys.readouterr().out
    assert "p50_ms" not in md and "normalised | 30 | 36 | +20.00 %" in md
