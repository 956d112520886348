"""Checking out another revision for A/B timing (--perf-against)."""

import pytest

from infergate.perf.revision import PROJECT, RevisionError, checkout, prepare

pytestmark = pytest.mark.skipif(not (PROJECT / ".git").exists(),
                                reason="not a git checkout: --perf-against needs one")


def test_checkout_extracts_the_revision_once(tmp_path):
    ref = checkout("HEAD", tmp_path)
    assert len(ref.sha) == 40 and ref.label == f"HEAD ({ref.sha[:10]})"
    marker = ref.source / "infergate" / "__init__.py"
    assert marker.is_file() and ref.cache_dir.parent == ref.source.parent
    before = marker.stat().st_mtime_ns
    again = checkout(ref.sha, tmp_path)
    assert (again.sha, again.source, again.cache_dir) == (ref.sha, ref.source, ref.cache_dir)
    assert marker.stat().st_mtime_ns == before
    assert [p.name for p in ref.source.parent.iterdir() if p.name.startswith("src.")] == []


def test_an_unknown_revision_is_a_clear_error(tmp_path):
    with pytest.raises(RevisionError, match="'no-such-branch': not a commit of this repo"):
        checkout("no-such-branch", tmp_path)


def test_an_installed_infergate_says_it_has_no_revisions_to_time(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "infergate").mkdir(parents=True)
    (site / "infergate" / "__init__.py").write_text("")
    monkeypatch.setattr("infergate.perf.revision.PROJECT", site)
    with pytest.raises(RevisionError, match=r"this infergate is installed .*site-packages"):
        checkout("HEAD", tmp_path / "cache")


def test_prepare_builds_with_the_revision_s_own_code_and_cache(tmp_path):
    ref = checkout("HEAD", tmp_path)
    prepared = prepare(ref, "mlp", "ort_cpu", "fp32")
    assert prepared and len(prepared["fingerprint"]) == 20
    assert "calibration_digest" not in prepared  # only a calibrated precision needs one
    assert list((ref.cache_dir / "onnx").glob("*/model.onnx"))
    assert prepare(ref, "no_such_model", "ort_cpu", "fp32") is None
