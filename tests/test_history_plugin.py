"""--infergate-history and --infergate-history-gate, end to end in a scratch project."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from infergate.history import changes
from infergate.history.store import Store, meta, results, runs

ARGS = ("--models", "mlp", "--backends", "torch", "--precisions", "fp32", "--isolation", "off")


def test_each_session_is_one_run_in_the_history(project, tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    for _ in range(2):
        result, data = project(*ARGS, "--infergate-history", url)
        assert result.ret == 0
        result.stdout.fnmatch_lines([f"infergate: run * (*, 1 results) added in {url}"])
    assert data["run"]["id"]  # the session id keys the run
    with Store.open(url) as store, store.transaction() as c:
        stored = c.execute(sa.select(runs.c.machine_id, runs.c.status)).all()
        rows = c.execute(sa.select(results.c.combo, results.c.cosine)).all()
    assert [s.status for s in stored] == ["finished", "finished"]
    assert stored[0].machine_id == data["environment"]["machine"]["id"]
    assert {r.combo for r in rows} == {"mlp-torch-fp32"} and len(rows) == 2
    assert rows[0].cosine > 0.9999


def test_the_gate_fails_the_run_and_names_the_step(project, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    seen = []

    def planted(key, points, threshold_pct, **kw):
        seen.append((key, threshold_pct))
        step = changes.Change(*key, 0, points[-1].run_id, points[-1].time, "abc1234567",
                              1.0, 0.99, -1.0, 1e-9, True)
        return changes.Alarm(step, 1.0, -7.5)

    monkeypatch.setattr(changes, "alarm", planted)
    result, _ = project(*ARGS, "--infergate-history", url, "--infergate-history-gate", "5",
                        "--infergate-history-figures", "cosine,p50_ms")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert seen and all(t == 5.0 and key[2] == "mlp-torch-fp32" for key, t in seen)
    assert {key[3] for key, _ in seen} == {"cosine"}  # the figures asked for that it has
    result.stdout.fnmatch_lines([
        "*regression step mlp-torch-fp32 cosine on *: -7.5 % * (commit abc1234567)*",
        "*series opened a regression step beyond 5 % (--infergate-history-gate): exit status 1"])


def test_gate_without_history_and_a_newer_database_are_usage_errors(project, tmp_path):
    result, _ = project(*ARGS, "--infergate-history-gate", "5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-history-gate needs --infergate-history*"])
    url = f"sqlite:///{tmp_path / 'h.db'}"
    result, _ = project(*ARGS, "--infergate-history", url, "--infergate-history-figures", "ms")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--infergate-history-figures: unknown ms; valid: p50_ms,*"])
    with Store.open(url) as store, store.transaction() as c:
        c.execute(meta.update().values(value="2"))
    result, data = project(*ARGS, "--infergate-history", url)
    assert result.ret == pytest.ExitCode.USAGE_ERROR and data is None
    result.stderr.fnmatch_lines(["*--infergate-history: *schema version 2, newer than*"])


def test_a_failed_ingest_is_one_line_and_exit_status_6(project, tmp_path, monkeypatch):
    from infergate.history import ingest
    from infergate.history.store import HistoryError

    def unreachable(*args, **kw):
        raise HistoryError("history database postgresql+psycopg://ci@db/x: connection refused")

    monkeypatch.setattr(ingest, "ingest", unreachable)
    result, data = project(*ARGS, "--infergate-history", f"sqlite:///{tmp_path / 'h.db'}")
    assert result.ret == 6 and data["run"]["complete"]  # the reports were still written
    result.stdout.fnmatch_lines(["*could not write the history (*): *connection refused*"])
