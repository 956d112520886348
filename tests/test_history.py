"""The run history: the store (SQLite and a real PostgreSQL), ingest, the CLI, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infergate.__main__ import main
from infergate.history.ingest import ingest
from infergate.history.store import HistoryError, Store, meta, results, runs
from infergate.report.document import build_document
from tests import postgres

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"id": "amd-zen4-f25m17s1-avx512bf16-2c-nogpu", "vendor": "AuthenticAMD",
           "family": 25, "isa": ["avx2", "avx512f"]}
ENV = {"machine": MACHINE, "python": "3.11.7", "platform": "Linux-x86_64", "cpu": "AMD EPYC",
       "cpu_count": 2, "gpu": None, "libraries": {"torch": "2.13.0+cpu"}}
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def entries(p50=10.0, cosine=0.99995, outcome="passed"):
    combo = {"model": "minilm_short", "backend": "ort_cpu", "precision": "fp32",
             "tier": "smoke", "id": "minilm_short-ort_cpu-fp32", "duration_s": 1.0}
    return [
        {**combo, "test": "test_equivalence", "outcome": outcome, "reason": "",
         "accuracy": {"status": "pass", "tolerance": {"min_cosine": 0.995},
                      "outputs": {"a": {"cosine": cosine}, "b": {"cosine": 1.0}}}},
        {**combo, "test": "test_latency", "outcome": "passed", "reason": "",
         "latency": {"p50_ms": p50, "normalised": p50 * 3, "verdict": "pass",
                     "threshold_pct": 10.0, "samples_ms": [p50] * 50}},
        {**combo, "test": "test_memory", "outcome": "passed", "reason": "",
         "memory": {"model_peak_mb": 74.8, "peak_rss_mb": 310.0, "verdict": "pass"}},
        {**combo, "test": "test_instructions", "outcome": "passed", "reason": "",
         "instructions": {"instructions_per_inference": 94.44e6, "verdict": "pass"}},
    ]


def document(night=0, run_id=None, env=ENV, commit=None, **kw):
    doc = build_document(entries(**kw), {"tier": "smoke"}, env,
                         run={"complete": True, "status": "finished",
                              "id": run_id or f"session-{night}",
                              "commit": commit or f"n{night:02d}" + "0" * 37, "branch": "main",
                              "ci_job_url": None})
    doc["created"] = (T0 + timedelta(days=night)).isoformat()
    return doc


@pytest.fixture(scope="session")
def pg_server():
    try:
        with postgres.server() as make_url:
            yield make_url
    except postgres.Unavailable as exc:
        yield exc


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path, pg_server):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    if isinstance(pg_server, Exception):
        pytest.skip(f"no PostgreSQL server: {pg_server}")
    return pg_server(f"t{abs(hash(request.node.nodeid)) % 10**8}")


def count(store, table):
    with store.transaction() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_ingest_keeps_figures_and_is_idempotent(url):
    with Store.open(url) as store:
        first = ingest(store, document(), "a.json")
        again = ingest(store, document(outcome="failed", cosine=0.5), "a.json")
        assert [r.run_id for r in first] == [r.run_id for r in again]
        assert not first[0].replaced and again[0].replaced
        assert (count(store, runs), count(store, results)) == (1, 4)
        with store.transaction() as c:
            run = c.execute(sa.select(runs)).one()
            rows = {r.test: r for r in c.execute(sa.select(results))}
        assert run.machine_id == MACHINE["id"] and run.machine["family"] == 25
        assert run.commit == "n00" + "0" * 37 and run.libraries == {"torch": "2.13.0+cpu"}
        # the second ingest replaced the first's results: lowest cosine over the outputs
        assert rows["test_equivalence"].outcome == "failed"
        assert rows["test_equivalence"].cosine == 0.5
        assert rows["test_equivalence"].min_cosine == 0.995
        assert rows["test_latency"].p50_ms == 10.0 and rows["test_latency"].normalised == 30.0
        assert rows["test_latency"].threshold_pct == 10.0
        assert rows["test_memory"].memory_mb == 74.8
        assert rows["test_instructions"].instructions == 94.44e6


def test_a_merged_document_is_one_run_per_machine(tmp_path):
    zen5 = {**ENV, "machine": {**MACHINE, "id": "amd-zen5-f26m2s0-avx512bf16-2c-nogpu"},
            "cpu": "AMD EPYC 9005"}
    doc = document()
    doc["machines"] = {"zen4": ENV, "zen5": zen5}
    doc["results"] = ([{**e, "machine": "zen4"} for e in entries()]
                      + [{**e, "machine": "zen5"} for e in entries(p50=8.0)])
    with Store.open(f"sqlite:///{tmp_path / 'h.db'}") as store:
        done = ingest(store, doc, "merged.json")
        assert sorted(r.machine_id for r in done) == sorted(
            [MACHINE["id"], "amd-zen5-f26m2s0-avx512bf16-2c-nogpu"])
        assert (count(store, runs), count(store, results)) == (2, 8)


def test_a_document_without_a_session_id_is_keyed_by_its_content(tmp_path):
    doc = document()
    del doc["run"]
    with Store.open(f"sqlite:///{tmp_path / 'h.db'}") as store:
        ingest(store, doc, "old.json")
        ingest(store, json.loads(json.dumps(doc)), "copy.json")
        ingest(store, document(night=1) | {"run": {}}, "other.json")
        assert count(store, runs) == 2


def test_a_newer_schema_is_refused_not_written(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with Store.open(url) as store:
        with store.transaction() as c:
            c.execute(meta.update().values(value="99"))
    with pytest.raises(HistoryError, match="schema version 99, newer than this infergate's 1"):
        Store.open(url)
    assert main(["history", "ingest", str(tmp_path / "none.json"), "--url", url]) == 2
    assert "schema version 99" in capsys.readouterr().err


def test_cli_ingest_and_changes(url, tmp_path, capsys):
    files = []
    for night in range(24):  # normalised latency +3 % from night 14, 0.3 % noise
        wobble = 1 + 0.003 * ((night * 7) % 5 - 2) / 2
        doc = document(night, p50=10.0 * wobble * (1.03 if night >= 14 else 1.0))
        files.append(tmp_path / f"r{night}.json")
        files[-1].write_text(json.dumps(doc))
    assert main(["history", "ingest", *map(str, files), "--url", url]) == 0
    assert main(["history", "ingest", str(files[0]), "--url", url]) == 0  # idempotent
    out = capsys.readouterr().out
    assert out.count("added") == 24 and out.count("replaced") == 1
    assert main(["history", "changes", "--url", url, "--figure", "normalised,memory_mb"]) == 0
    out = capsys.readouterr().out
    assert "2 series, 1 change points" in out.replace(url, "")
    assert "test_latency[minilm_short-ort_cpu-fp32]  normalised: +3.0" in out
    assert "from run 15 commit n140000000" in out and "regression" in out
    assert main(["history", "changes", "--url", url, "--json", "--model", "gru"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["history", "changes", "--url", url, "--figure", "speed"]) == 2
    assert "unknown figure 'speed'" in capsys.readouterr().err


def test_a_damaged_database_is_an_error_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with Store.open(url) as store:
        with store.transaction() as c:
            c.execute(sa.text("DROP TABLE results"))
        with pytest.raises(HistoryError, match=r"h\.db: no such table: results"):
            ingest(store, document(), "a.json")
        assert count(store, runs) == 0  # the run's row went with the failed transaction


def test_bad_url_is_an_error_naming_it(capsys):
    assert main(["history", "changes", "--url", "mysqlx://nobody@nowhere/db"]) == 2
    assert "mysqlx://nobody@nowhere/db" in capsys.readouterr().err


def test_concurrent_ingests_lose_nothing(url, tmp_path):
    """Three CI jobs at once on a new database: they race to create the schema, then each
    ingests its own four runs and one run they all share."""
    shared = tmp_path / "shared.json"
    shared.write_text(json.dumps(document(99, run_id="shared")))
    jobs = []
    for job in range(3):
        files = []
        for k in range(4):
            path = tmp_path / f"j{job}-{k}.json"
            path.write_text(json.dumps(document(job * 4 + k, run_id=f"job{job}-{k}")))
            files.append(str(path))
        jobs.append(subprocess.Popen(
            [sys.executable, "-m", "infergate", "history", "ingest", str(shared), *files,
             "--url", url], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    for job in jobs:
        out, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
    with Store.open(url) as store:
        assert (count(store, runs), count(store, results)) == (13, 52)
        assert store.schema_version() == 1 and count(store, meta) == 1


def test_openers_racing_to_create_one_sqlite_file_all_get_in(tmp_path):
    """Shards start together on a new file: SQLite refuses the switch to WAL at once, without
    its busy handler, to whichever comes second (3 of 200 openers here before the retry)."""
    refused = []

    def open_it(url, barrier):
        barrier.wait()
        try:
            with Store.open(url):
                pass
        except HistoryError as exc:
            refused.append(exc)

    for k in range(50):
        barrier = threading.Barrier(4)
        url = f"sqlite:///{tmp_path / f'race{k}.db'}"
        openers = [threading.Thread(target=open_it, args=(url, barrier)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert refused == []
