"""Messages that pointed the wrong way (issue 25, fault 11): each says what is wrong, where."""

import json

import numpy as np
import pytest

from infergate.accuracy.compare import judge
from infergate.accuracy.precision import DEFAULT_TOLERANCES
from infergate.perf.baselines import SCHEMA, BaselineError, BaselineStore

FP32 = DEFAULT_TOLERANCES["fp32"]


@pytest.mark.parametrize("content,why", [
    # It said "(schema 'infergate.baseline/2')" of a file whose schema was right (issue 25).
    ({"schema": SCHEMA, "entries": []}, "its 'entries' is a JSON array, not an "
                                                  "object of entries by model/backend/precision"),
    ({"schema": SCHEMA}, "it has no 'entries'"),
    ([1, 2], "its top level is a JSON array, not an object"),
])
def test_a_baseline_of_the_wrong_shape_says_which_part_is_wrong(tmp_path, content, why):
    path = tmp_path / "shape.json"
    path.write_text(json.dumps(content))
    with pytest.raises(BaselineError) as raised:
        BaselineStore(path).load()
    assert str(raised.value).startswith(f"{path}: not an {SCHEMA} file: {why}; ")


def test_an_update_says_which_bad_entry_of_another_combination_it_dropped(tmp_path):
    """Issue 25 fault 11: a partial update dropped another combination's bad entry without a
    line."""
    store = BaselineStore(tmp_path / "m.json")
    good = {"memory": {"model_peak_mb": 2.0}}
    (tmp_path / "m.json").write_text(json.dumps({"schema": SCHEMA, "entries": {
        "a/b/fp32": {"memory": {"model_peak_mb": -1}}, "c/d/fp32": {"memory": "x"},
        "e/f/fp32": good}}))
    merged = store.merge({"c/d/fp32": good})
    assert list(merged["dropped"]) == ["a/b/fp32"]  # c/d/fp32 was re-taken, not dropped
    note, = store.merge_notes(merged)
    assert note.startswith(f"infergate: dropped the bad entry 'a/b/fp32' from {store.path} "
                           f"(memory.model_peak_mb must be")
    assert note.endswith("); this update did not re-take it")
    assert sorted(store.load()["entries"]) == ["c/d/fp32", "e/f/fp32"]
    assert store.merge_notes(store.merge({"e/f/fp32": good})) == []


def test_a_non_finite_expected_output_says_whose_it_is_and_when_the_inputs_brought_it():
    """Issue 25 fault 11: batch invariance's expected side is the backend's own batched run,
    and NaN inputs read as a NaN reference."""
    expected = {"y": np.array([1.0, np.nan, 3.0, np.nan])}
    actual = {"y": np.array([1.0, 2.0, 3.0, 4.0])}
    v = judge(actual, expected, FP32, label="m")
    assert not v and "reference output 'y' has 2 NaN/Inf values (of 4); nothing to compare " \
                     "against" in str(v)
    v = judge(actual, expected, FP32, label="m", expected_as="the batched run's output")
    assert "the batched run's output 'y' has 2 NaN/Inf values" in str(v)
    feed = {"x": np.array([[0.5, np.nan], [np.inf, 1.0]], np.float32), "ids": np.arange(4)}
    v = judge(actual, expected, FP32, label="m", feed=feed)
    assert "has 2 NaN/Inf values (of 4), from its inputs (x: 2 of 4 NaN/Inf); nothing" in str(v)
