"""--infergate-shard K/N: a deterministic split of the combinations, balanced by history."""

import json
import subprocess
import sys

import pytest

from infergate import shards
from infergate.history.ingest import ingest
from infergate.history.store import Store


@pytest.mark.parametrize("bad", ["", "3", "0/2", "3/2", "a/b", "1/0"])
def test_a_malformed_shard_is_a_clear_error(bad):
    with pytest.raises(shards.ShardError, match="--infergate-shard"):
        shards.parse(bad)


def test_every_combination_lands_on_exactly_one_shard_the_same_way_every_time():
    combos = [f"m{i}-b-fp32" for i in range(11)]
    first = shards.assign(combos, 3)
    assert shards.assign(reversed(combos), 3) == first  # order of collection does not matter
    assert set(first) == set(combos) and set(first.values()) == {1, 2, 3}
    assert sorted(list(first.values()).count(k) for k in (1, 2, 3)) == [3, 4, 4]


def test_history_durations_balance_the_shards():
    durations = {"big-b-fp32": 100.0, "mid-b-fp32": 60.0, "a-b-fp32": 30.0, "c-b-fp32": 30.0}
    split = shards.assign(durations, 2, durations)
    load = {k: sum(d for c, d in durations.items() if split[c] == k) for k in (1, 2)}
    assert sorted(load.values()) == [100.0, 120.0]  # by count it would be 130 / 90 or worse
    # A combination the history has not seen yet costs the median of those it has.
    assert set(shards.assign([*durations, "new-b-fp32"], 2, durations)) >= {"new-b-fp32"}


def _document(run_id: str, seconds: dict) -> dict:
    env = {"machine": {"id": "m1"}, "libraries": {}, "python": "3.11"}
    return {"schema": "infergate.results/1", "created": "2026-11-27T20:00:00+00:00",
            "run": {"id": run_id, "complete": True, "status": "passed"}, "environment": env,
            "results": [{"test": "test_equivalence", "id": combo, "model": combo.split("-")[0],
                         "backend": "b", "precision": "fp32", "outcome": "passed",
                         "duration_s": s} for combo, s in seconds.items()]}


def test_durations_come_from_the_latest_run_of_this_machine(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with Store.open(url) as store:
        ingest(store, _document("r1", {"x-b-fp32": 5.0, "y-b-fp32": 1.0}), "r1.json")
        later = _document("r2", {"x-b-fp32": 7.0})
        later["created"] = "2026-11-28T20:00:00+00:00"
        ingest(store, later, "r2.json")
    assert shards.durations(url, "m1") == {"x-b-fp32": 7.0, "y-b-fp32": 1.0}
    assert shards.durations(url, "another-machine") == {}


def test_two_shards_in_parallel_cover_the_run_once_into_one_history(project, pytester):
    """Two processes, one database: the union of the shards is the whole selection, no
    combination twice, both runs in the history, and the merged report has them all."""
    project  # noqa: B018  (its conftest and suite files, run here as two processes)
    history = f"sqlite:///{pytester.path / 'history.db'}"
    select = ["--infergate-models", "mlp", "--infergate-backends", "torch,ort_cpu",
              "--infergate-precisions", "fp32", "--infergate-isolation", "off",
              "--infergate-history", history, "-p", "no:cacheprovider", "test_equivalence.py"]
    shards_run = [subprocess.Popen(
        [sys.executable, "-m", "pytest", *select, f"--infergate-shard={k}/2",
         f"--infergate-reports-dir=out{k}", f"--infergate-cache-dir={pytester.path / 'cache'}"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in (1, 2)]
    outputs = [p.communicate(timeout=600)[0] for p in shards_run]
    assert [p.returncode for p in shards_run] == [0, 0], outputs
    assert all("shard" in o and "of 2 combinations, balanced by count" in o for o in outputs)
    ids = [{r["id"] for r in json.loads((pytester.path / f"out{k}/results.json").read_text())
            ["results"]} for k in (1, 2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == {"mlp-torch-fp32", "mlp-ort_cpu-fp32"}
    merged = subprocess.run([sys.executable, "-m", "infergate", "report", "out1/results.json",
                             "out2/results.json", "--out", "merged"], cwd=pytester.path,
                            capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    document = json.loads((pytester.path / "merged/results.json").read_text())
    assert {r["id"] for r in document["results"]} == ids[0] | ids[1]
    durations = shards.durations(history)
    assert set(durations) == ids[0] | ids[1]
