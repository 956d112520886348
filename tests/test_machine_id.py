"""Machine ids from what decides the kernels, read from the CPUs the runners are made of."""

import json
from pathlib import Path

import pytest

from infergate import machine_id
from infergate.perf import baselines

DATA = Path(__file__).parent / "data" / "cpuinfo"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cpu(monkeypatch):
    """This process's machine as if it ran on the CPU in ``tests/data/cpuinfo/<name>``."""
    def use(name: str) -> dict:
        monkeypatch.setenv(machine_id.CPUINFO_ENV, str(DATA / name))
        monkeypatch.setattr(machine_id.environment, "cpu_count", lambda: 2)
        return baselines.machine()
    return use


def test_zen4_and_zen5_get_different_ids_though_both_say_amd_epyc(cpu):
    zen4, zen5 = cpu("amd-epyc-zen4.cpuinfo"), cpu("amd-epyc-zen5-partial.cpuinfo")
    assert zen4["id"] == "amd-zen4-f25m17s1-avx512bf16-2c-nogpu"
    assert zen5["id"].startswith("amd-zen5-f26m2-") and zen5["id"] != zen4["id"]
    # What the old id made of them: one id for two generations.
    assert zen4["legacy_id"] == zen5["legacy_id"] == "amd-epyc-2c-nogpu"
    assert {"avx512_bf16", "avx512_vnni", "avx512f"} <= set(zen4["isa"])
    assert zen4["cache_size"] == "1024 KB" and zen4["uarch"] == "zen4"


def test_intel_without_a_known_model_is_named_by_numbers(cpu):
    intel = cpu("intel-xeon-f6m167.cpuinfo")
    assert intel["id"] == "intel-f6m167s1-amx-2c-nogpu"
    assert intel["uarch"] is None and "amx_int8" in intel["isa"]


def test_gpu_model_and_capability_are_part_of_the_id():
    fields = {"vendor_id": "GenuineIntel", "cpu family": "6", "model": "143", "stepping": "8",
              "flags": "avx2 avx512f amx_bf16"}
    ident = machine_id.identify(fields, 16, {"name": "NVIDIA H100 80GB HBM3", "capability": "90"})
    assert ident["id"] == "intel-sapphirerapids-f6m143s8-amx-16c-nvidia-h100-80gb-hbm3-sm90"


def test_messages_show_the_components(cpu):
    text = machine_id.describe(cpu("amd-epyc-zen4.cpuinfo"))
    assert "family 25 model 17 stepping 1" in text and "avx512_bf16" in text
    assert "cache 1024 KB" in text and "amd-epyc-zen4.cpuinfo" in text


def test_an_unreadable_cpuinfo_override_is_an_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv(machine_id.CPUINFO_ENV, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="INFERGATE_CPUINFO=.*nope"):
        baselines.machine()


def test_the_committed_baseline_is_found_by_the_zen4_id_only(cpu):
    for name, found in (("amd-epyc-zen4.cpuinfo", True), ("amd-epyc-zen5-partial.cpuinfo", False),
                        ("intel-xeon-f6m167.cpuinfo", False)):
        store, note = baselines.locate(REPO / "baselines", cpu(name))
        assert store.path.exists() is found, name
        assert note == ""
    zen4 = json.loads(baselines.locate(REPO / "baselines", cpu("amd-epyc-zen4.cpuinfo"))[0]
                      .path.read_text())
    assert zen4["machine"]["family"] == 25 and zen4["machine"]["legacy_id"] == "amd-epyc-2c-nogpu"


def test_a_fleet_declares_two_ids_equivalent_with_a_reason(cpu, tmp_path):
    zen5 = cpu("amd-epyc-zen5-partial.cpuinfo")
    (tmp_path / "amd-zen4-x.json").write_text("{}")
    table = tmp_path / baselines.EQUIVALENT_FILE
    table.write_text(json.dumps({zen5["id"]: {"use": "amd-zen4-x", "reason": "same fleet"}}))
    store, note = baselines.locate(tmp_path, zen5)
    assert store.path == tmp_path / "amd-zen4-x.json"
    assert "declared equivalent" in note and "same fleet" in note
    # Its own file, once it has one, wins over the declaration.
    (tmp_path / f"{zen5['id']}.json").write_text("{}")
    store, note = baselines.locate(tmp_path, zen5)
    assert store.path == tmp_path / f"{zen5['id']}.json" and note == ""


def test_an_equivalence_without_a_reason_is_refused(cpu, tmp_path):
    zen5 = cpu("amd-epyc-zen5-partial.cpuinfo")
    (tmp_path / baselines.EQUIVALENT_FILE).write_text(json.dumps({zen5["id"]: {"use": "x"}}))
    with pytest.raises(baselines.BaselineError, match="equivalent.json.*reason"):
        baselines.locate(tmp_path, zen5)


def test_migrate_rekeys_an_old_baseline_by_the_cpu_it_was_taken_on(tmp_path):
    old = tmp_path / "amd-epyc-2c-nogpu.json"
    entry = {"memory": {"model_peak_mb": 1.0}}
    old.write_text(json.dumps({"schema": baselines.SCHEMA, "entries": {"m/b/p": entry},
                               "machine": {"id": "amd-epyc-2c-nogpu", "cpu": "AMD EPYC",
                                           "cores": 2, "gpu": None}}))
    fields, _ = machine_id.read_cpuinfo(DATA / "amd-epyc-zen4.cpuinfo")
    target = baselines.migrate(old, fields, tmp_path)
    data = json.loads(target.read_text())
    assert target.name == "amd-zen4-f25m17s1-avx512bf16-2c-nogpu.json"
    assert data["entries"] == {"m/b/p": entry}
    assert data["machine"]["migrated_from"] == old.name
    with pytest.raises(baselines.BaselineError, match="already keyed by hardware"):
        baselines.migrate(target, fields, tmp_path)
