"""Merged reports: one matrix per machine id; shards of one machine's run stay one matrix."""

import json
import re
import shutil

import pytest

from infergate.report.document import merge, write_reports
from tests.test_report import ENV, accuracy, cli, entry, latency, sample_document, save

# Two kinds of runner whose CPUs print the same name, cores and OS: only the hardware id
# (infergate.machine_id) tells them apart, as it does for their baselines.
ZEN4 = {**ENV, "cpu": "AMD EPYC", "machine": {"id": "amd-zen4-f25m17s1-avx512bf16-2c-nogpu"}}
ZEN5 = {**ENV, "cpu": "AMD EPYC", "machine": {"id": "amd-zen5-f26m2s0-avx512bf16-2c-nogpu"}}
EQ = "test_equivalence"


def run(env, outcome, cosine, p50=2.0):
    reason = "" if outcome == "passed" else f"logits: cosine {cosine} < 0.99"
    return sample_document(env=env, results=[
        entry(EQ, "mlp", "ort_cpu", "int8", outcome, reason, **accuracy(cosine, 0.1)),
        entry(EQ, "mlp", "torch", "fp32", "passed", **accuracy(1.0, 0.0)),
        entry("test_latency", "mlp", "ort_cpu", "int8", "passed", **latency(p50, p50, "pass")),
    ])


def sections(markdown: str) -> dict[str, str]:
    """Markdown text under each '### Machine X' heading."""
    parts = re.split(r"^### Machine (.+)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def machine_divs(html: str) -> dict[str, str]:
    parts = re.split(r'<div class="machine" data-machine="([^"]+)">', html)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.fixture
def two_machines(tmp_path, monkeypatch):
    """The same combination on two machine ids: passed on zen4, failed on zen5."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    document, warnings = merge([("zen4.json", run(ZEN4, "passed", 0.999)),
                                ("zen5.json", run(ZEN5, "failed", 0.9, p50=3.0))])
    paths = write_reports(tmp_path, document)
    return document, warnings, {k: p.read_text(encoding="utf-8") for k, p in paths.items()}


def test_two_machine_ids_keep_both_verdicts(two_machines):
    document, warnings, _ = two_machines
    assert warnings == []
    verdicts = {(e["machine"], e["outcome"]) for e in document["results"]
                if e["test"] == EQ and e["precision"] == "int8"}
    assert verdicts == {(ZEN4["machine"]["id"], "passed"), (ZEN5["machine"]["id"], "failed")}
    assert set(document["machines"]) == {ZEN4["machine"]["id"], ZEN5["machine"]["id"]}


def test_markdown_has_one_matrix_per_machine(two_machines):
    md = two_machines[2]["summary.md"]
    found = sections(md)
    assert list(found) == [ZEN4["machine"]["id"], ZEN5["machine"]["id"]]
    zen4, zen5 = found.values()
    for text in found.values():  # each its own matrix and performance table, models as rows
        assert text.count(f"#### {EQ}") == 1 and text.count("#### Performance") == 1
        assert "| mlp |" in text and " @ " not in text
    assert "✅ 0.9990" in zen4 and "❌" not in zen4
    assert "| mlp | ✅ 1.0000 | ❌ 0.9000 |" in zen5 and "| mlp-ort_cpu-int8 | 3 |" in zen5
    assert "2 machines, one matrix each" in md


def test_html_has_one_matrix_per_machine(two_machines):
    html = two_machines[2]["report.html"]
    matrix = html.split('<section id="matrix">', 1)[1].split("</section>", 1)[0]
    found = machine_divs(matrix)
    assert list(found) == [ZEN4["machine"]["id"], ZEN5["machine"]["id"]]
    zen4, zen5 = found.values()
    assert zen4.count('<table class="grid"') == zen5.count('<table class="grid"') == 2
    cell = 'data-id="mlp-ort_cpu-int8" data-test="test_equivalence"'
    assert f'<td class="c passed" {cell}' in zen4 and "c failed" not in zen4
    assert f'<td class="c failed" {cell}' in zen5
    performance = html.split('<section id="performance">', 1)[1]
    assert all(f"<h3>Machine {m}</h3>" in performance for m in found)


def test_shards_of_one_machine_stay_one_matrix(tmp_path):
    """Shards ran on two runners of one kind (their kernels differ): one machine."""
    results = run(ZEN4, "passed", 0.999)["results"]
    runner_b = {**ZEN4, "platform": "Linux-6.1-x86_64"}
    document, warnings = merge([("shard1.json", sample_document(ZEN4, results[:1])),
                                ("shard2.json", sample_document(runner_b, results[1:]))])
    assert warnings == [] and "machines" not in document
    assert all("machine" not in e for e in document["results"])
    write_reports(tmp_path, document)
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "### Machine" not in md and md.count(f"### {EQ}") == 1
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'class="machine"' not in html and html.count('<table class="grid"') == 2


def test_cli_merge_of_two_machines(tmp_path):
    first = save(tmp_path / "zen4.json", run(ZEN4, "passed", 0.999))
    second = save(tmp_path / "zen5.json", run(ZEN5, "failed", 0.9))
    result = cli("report", first, second, "--out", tmp_path / "out")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    assert len(json.loads((tmp_path / "out/results.json").read_text())["results"]) == 6
    assert len(sections((tmp_path / "out/summary.md").read_text())) == 2


@pytest.mark.skipif(not shutil.which("chromium") and not shutil.which("chromium-browser"),
                    reason="chromium not installed (Debian: apt-get install chromium)")
def test_per_machine_matrices_render_in_chromium(two_machines, tmp_path):
    from tests.test_report_browser import chromium

    dom = chromium("--dump-dom", (tmp_path / "report.html").as_uri())
    assert 'data-ready="1"' in dom
    assert len(machine_divs(dom)) == 2
