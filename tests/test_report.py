"""Reports: results.json, summary.md, report.html, the merge CLI, and the session hook."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infergate.report.document import SCHEMA, build_document, write_reports

EVIL = 'tensor <b>"x"</b> & <script>alert(1)</script>'
ENV = {"python": "3.11.7", "platform": "Linux-x86_64", "cpu": "Test CPU", "cpu_count": 2,
       "cpu_features": ["avx2"], "libraries": {"torch": "2.13.0+cpu"}}


def entry(test, model, backend, precision, outcome, reason="", **data):
    return {"test": test, "id": f"{model}-{backend}-{precision}", "model": model,
            "backend": backend, "precision": precision, "tier": "smoke", "outcome": outcome,
            "reason": reason, "duration_s": 0.1, **data}


def accuracy(cosine, max_abs):
    return {"accuracy": {"outputs": {"logits": {"cosine": cosine, "max_abs": max_abs}},
                         "message": "closest to failing: logits"},
            "settings": {"threads": 2}}


def latency(p50, baseline, verdict):
    return {"latency": {"p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3,
                        "mean_ms": p50, "stddev_ms": 0.1, "cov": 0.02, "min_ms": p50 * 0.9,
                        "throughput_per_s": 1000 / p50, "samples": 200, "normalised": 1.5,
                        "baseline": baseline and {"p50_ms": baseline, "normalised": 1.4},
                        "delta_pct": baseline and 100 * (p50 / baseline - 1),
                        "verdict": verdict, "p_value": 0.001}}


def sample_results():
    eq = "test_equivalence"
    return [
        entry(eq, "mlp", "torch", "fp32", "passed", **accuracy(1.0, 1e-7)),
        entry(eq, "mlp", "ort_cpu", "int8", "failed", EVIL, **accuracy(0.91234, 0.4)),
        entry(eq, "mlp", "openvino", "bf16", "error", "RuntimeError: exporter exploded\nmore"),
        entry(eq, "gru", "ort_cpu", "int8", "xfailed", "known: GRU QDQ", **accuracy(0.87, 2.0)),
        entry(eq, "gru", "openvino", "bf16", "skipped", "'openvino' is not installed"),
        entry("test_task_accuracy", "mlp", "torch", "fp32", "passed",
              task={"score": 0.998, "message": "score 0.998"}),
        entry("test_batch_invariance", "mlp", "ort_cpu", "fp32", "passed"),
        entry("test_latency", "mlp", "torch", "fp32", "passed", **latency(2.0, 2.0, "pass")),
        entry("test_latency", "mlp", "ort_cpu", "fp32", "failed", "p50 regressed by 25 %",
              **latency(1.0, 0.8, "regressed")),
        entry("test_memory", "mlp", "ort_cpu", "fp32", "passed",
              memory={"peak_rss_mb": 310.0, "baseline_mb": 300.0, "delta_pct": 3.3,
                      "verdict": "pass"}),
        entry("test_instructions", "mlp", "ort_cpu", "fp32", "failed", "+2.3 %",
              instructions={"per_inference": 96.62e6, "baseline_per_inference": 94.45e6,
                            "delta_pct": 2.3, "verdict": "regressed"}),
    ]


def sample_document(env=ENV, results=None):
    return build_document(results if results is not None else sample_results(),
                          {"tier": "smoke"}, env)


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    paths = write_reports(tmp_path / "out", sample_document())
    return {name: path.read_text(encoding="utf-8") for name, path in paths.items()}


def test_results_json_has_a_summary_per_outcome(reports):
    data = json.loads(reports["results.json"])
    assert data["schema"] == SCHEMA
    summary = data["summary"]
    assert (summary["total"], summary["passed"], summary["failed"], summary["error"],
            summary["xfailed"], summary["skipped"], summary["xpassed"]) == (11, 5, 3, 1, 1, 1, 0)
    assert summary["by_test"]["test_equivalence"]["failed"] == 1
    assert all({"outcome", "reason"} <= e.keys() for e in data["results"])


def test_summary_md_tables_figures_and_failures(reports):
    md = reports["summary.md"]
    assert "| model | torch fp32 | openvino bf16 | ort_cpu int8 |" in md
    assert "| mlp | ✅ 1.0000 | 💥 | ❌ 0.9123 |" in md
    assert "| gru |  | ⏭ | xfail 0.8700 |" in md
    assert "✅ 0.998" in md  # task score
    assert "### test_batch_invariance (ort_cpu fp32)\n\n- ✅ mlp" in md
    # the failure list: first line only, HTML escaped (GitHub renders inline HTML)
    assert "`test_equivalence[mlp-openvino-bf16]`: RuntimeError: exporter exploded\n" in md
    assert "&lt;script&gt;" in md and "<script>" not in md


def test_summary_md_performance_table(reports):
    md = reports["summary.md"]
    row = next(line for line in md.splitlines() if line.startswith("| mlp-ort_cpu-fp32 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # p50, baseline, delta, verdict, speed-up over torch fp32 (2.0 / 1.0), peak, baseline, delta
    assert cells[1:10] == ["1", "0.8", "+25.0 %", "❌ regressed", "2.00×", "310", "300",
                           "+3.3 %", "✅ pass"]
    # no heap figures recorded, runtime MB (none recorded), then the instruction count, its
    # change and verdict
    assert cells[10:17] == ["", "", "", "", "96.62", "+2.30 %", "❌ regressed"]


def test_the_latency_comparison_column_names_an_a_b_revision():
    """In an A/B run the column holds the revision's p50, and its header says so."""
    from infergate.report.view import perf_table, performance_rows

    def run(*against):
        results = [entry("test_latency", m, "ort_cpu", "fp32", "passed",
                         latency={**latency(1.0, 0.9, "pass")["latency"], "against": a})
                   for m, a in zip(("mlp", "gru"), against, strict=True)]
        header, _ = perf_table(performance_rows({"results": results}))
        return header[2]

    assert run("baseline", "baseline") == "baseline p50 ms"
    assert run("HEAD (ab12cd34ef)", "HEAD (ab12cd34ef)") == "HEAD (ab12cd34ef) p50 ms (A/B)"
    assert run("baseline", "HEAD (ab12cd34ef)") == "baseline or HEAD (ab12cd34ef) p50 ms"


def test_html_is_self_contained_and_escaped(reports):
    page = reports["report.html"]
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "<link" not in page and "src=" not in page
    assert 'id="matrix"' in page and 'id="chart-accuracy"' in page
    assert 'id="chart-latency"' in page and 'id="chart-memory"' in page


def test_html_cells_link_to_their_full_message(reports):
    page = reports["report.html"]
    anchor = "r-test_equivalence-mlp-openvino-bf16-"
    assert f'href="#{anchor}"' in page
    details = page[page.index(f'<details id="{anchor}"'):]
    assert "RuntimeError: exporter exploded\nmore" in details[:details.index("</details>")]


def test_html_and_markdown_without_performance_entries(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    results = [e for e in sample_results()
               if not {"latency", "memory", "instructions"} & e.keys()]
    paths = write_reports(tmp_path, sample_document(results=results))
    assert "Performance" not in paths["summary.md"].read_text()
    assert 'id="chart-latency"' not in paths["report.html"].read_text()


def test_nan_metrics_render_as_nan(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    results = [entry("test_equivalence", "mlp", "openvino", "int8", "failed", "NaN",
                     **accuracy(float("nan"), float("inf")))]
    paths = write_reports(tmp_path, sample_document(results=results))
    assert json.loads(paths["results.json"].read_text())["results"][0]["accuracy"]
    assert "❌ nan" in paths["summary.md"].read_text()


def test_github_step_summary_is_appended(tmp_path, monkeypatch):
    step = tmp_path / "step_summary.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    paths = write_reports(tmp_path / "out", sample_document())
    text = step.read_text()
    assert text.startswith("earlier step\n")
    assert paths["summary.md"].read_text() in text


def test_writes_leave_no_temporary_files(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = tmp_path / "out"
    write_reports(out, sample_document())
    write_reports(out, sample_document())  # replacing existing files too
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json",
                                                     "summary.md"]


# --- the CLI ------------------------------------------------------------------------------

def cli(*args, env_extra=None):
    return subprocess.run([sys.executable, "-m", "infergate", *map(str, args)],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          env={"PATH": "/usr/bin:/bin", **(env_extra or {})})


def save(path, document):
    path.write_text(json.dumps(document))
    return path


def test_cli_help():
    result = cli("--help")
    assert result.returncode == 0 and "report" in result.stdout


def test_cli_merges_shards_and_warns_on_same_machine_duplicates(tmp_path):
    results = sample_results()
    first = save(tmp_path / "a.json", sample_document(results=results[:6]))
    changed = {**results[5], "outcome": "failed", "reason": "shard b says no"}
    second = save(tmp_path / "b.json", sample_document(results=[changed, *results[6:]]))
    result = cli("report", first, second, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "warning: test_task_accuracy[mlp-torch-fp32]" in result.stderr
    assert "keeping " + str(second) in result.stderr
    merged = json.loads((tmp_path / "out/results.json").read_text())
    keys = [(e["test"], e["id"]) for e in merged["results"]]
    assert len(keys) == len(set(keys)) == len(results)
    task = next(e for e in merged["results"] if e["test"] == "test_task_accuracy")
    assert task["outcome"] == "failed" and "machine" not in task
    assert (tmp_path / "out/report.html").exists() and (tmp_path / "out/summary.md").exists()


def test_cli_keeps_both_machines(tmp_path):
    other = {**ENV, "cpu": "Other CPU", "cpu_count": 64}
    first = save(tmp_path / "a.json", sample_document())
    second = save(tmp_path / "b.json", sample_document(env=other))
    result = cli("report", first, second, "--out", tmp_path / "out")
    assert result.returncode == 0 and "warning" not in result.stderr
    merged = json.loads((tmp_path / "out/results.json").read_text())
    assert len(merged["results"]) == 2 * len(sample_results())
    assert set(merged["machines"]) == {"Test CPU (2 cores)", "Other CPU (64 cores)"}
    md = (tmp_path / "out/summary.md").read_text()  # one matrix per machine
    assert "### Machine Other CPU (64 cores)" in md and "### Machine Test CPU (2 cores)" in md
    assert "Other CPU (64 cores)" in (tmp_path / "out/report.html").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not valid JSON"),
    ('{"schema": "something/9", "results": []}', "not an infergate results file"),
    (json.dumps({"schema": SCHEMA, "environment": {}, "results": [{"id": "x"}]}),
     "'results' must be a list"),
])
def test_cli_bad_file_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = save(tmp_path / "good.json", sample_document())
    result = cli("report", good, bad, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert f"{bad}: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# --- the session hook, under xdist --------------------------------------------------------

def test_xdist_session_writes_every_report_once(project):
    pytest.importorskip("xdist")
    result, data = project("-n", "2", "--models", "mlp,gru", "--backends", "torch",
                           "--precisions", "fp32,fp16")
    result.assert_outcomes(passed=4)
    ids = [e["id"] for e in data["results"]]
    assert sorted(ids) == ["gru-torch-fp16", "gru-torch-fp32", "mlp-torch-fp16",
                           "mlp-torch-fp32"]
    assert data["summary"]["passed"] == 4
    out = Path(result.stdout.str().split("results -> ")[1].split("/ (")[0])
    assert (out / "summary.md").read_text().count("| mlp |") == 1
    assert (out / "report.html").read_text().count('data-id="mlp-torch-fp16"') == 1
    assert not list(out.glob(".*.tmp"))
