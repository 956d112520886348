"""The deterministic figures: instruction counts and peak heap, their verdicts, where a count
moved, and the shim under real valgrind."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from infergate.perf import functions, graph_ops, heap, instructions
from infergate.perf.deterministic import NOISE_TARGET_INSTRUCTIONS
from infergate.perf.injected import InjectedWork


def judge(*args, threshold=0.02, **kwargs):
    """The verdict at a 2 % threshold (the figures below were chosen for it)."""
    return instructions.judge(*args, threshold=threshold, **kwargs)


BASE = {"per_inference": 94.45e6, "spread": 0.0002, "processes": [94.45e6, 94.46e6, 94.47e6]}


def test_a_two_percent_slowdown_fails_with_its_numbers():
    verdict = judge("minilm_short-ort_cpu-fp32", [96.62e6], BASE)
    assert not verdict and verdict.status == "regressed"
    assert str(verdict) == ("minilm_short-ort_cpu-fp32 instructions/inference +2.30 % "
                            "(94.45M → 96.62M, threshold 2 %, noise 0.021 % from 3+1 "
                            "processes)")


def test_unchanged_code_passes_and_a_near_threshold_change_fails():
    assert judge("x", [94.45e6 * 1.00001], BASE).status == "pass"
    assert judge("x", [94.45e6 * 1.015], BASE).status == "pass"
    # A real +2 % that measures +1.99 % is within the noise of the threshold: it fails.
    assert judge("x", [94.45e6 * 1.0199], BASE).status == "regressed"
    # With a wider measured spread, the change must also clear the spread to count at all.
    wide = {**BASE, "processes": [94.45e6, 94.8e6, 95.1e6]}
    assert judge("x", [94.45e6 * 1.006], wide).status == "pass"
    assert judge("x", [94.45e6 * 1.014], wide).status == "regressed"


def test_the_noise_is_measured_not_declared():
    # Processes that agree to 69 instructions (a 288k-instruction model) decide its +4.5 %...
    tiny = {"per_inference": 287_808, "processes": [287_808, 287_840, 287_877]}
    assert judge("x", [287_810], tiny).status == "pass"
    grown = judge("x", [287_808 * 1.045], tiny)
    assert grown.status == "regressed" and "noise 0.024 %" in str(grown)
    # ...and this run's own processes count too, when it has several.
    assert judge("x", [287_808, 287_808 * 1.02], tiny).figures[
        "noise_pct"] == pytest.approx(2.0)


def test_the_minimum_of_processes_discounts_a_one_sided_outlier():
    # A call's extra allocator work only ever adds: the cheapest process is the code's figure.
    verdict = judge("x", [94.45e6 * 1.003, 94.45e6, 94.45e6 * 1.00001], BASE)
    assert verdict.status == "pass" and verdict.figures["processes"] == 3


def test_a_change_within_an_unreproducible_baseline_s_noise_is_undecided():
    shaky = {**BASE, "processes": [94.45e6, 95.0e6, 95.9e6]}  # 1.5 % apart
    verdict = judge("x", [94.45e6 * 1.01], shaky)
    assert verdict.status == "insufficient" and bool(verdict)  # settle() skips it
    assert str(verdict).startswith("x undecided: the baseline's 3 processes disagree by 1.5 %")
    # Far beyond that noise, or surely short of the threshold, it decides.
    assert judge("x", [94.45e6 * 1.05], shaky).status == "regressed"
    assert judge("x", [94.45e6 * 1.0], shaky).status == "pass"


def test_a_moved_count_names_the_functions_that_moved_most_and_the_graph_change():
    base = {**BASE, "functions": {"MlasSgemm (onnxruntime)": 80_000_000, "memset (libc)": 1e6,
                                  "free (libc)": 5e5}}
    now = {"MlasSgemm (onnxruntime)": 82_000_000, "memset (libc)": 1.05e6, "free (libc)": 5e5,
           "MlasGelu (onnxruntime)": 3e5}
    verdict = judge("x", [96.8e6], base, functions_now=now,
                                 graph_change="+1 MatMul, +1 Add")
    assert verdict.status == "regressed"
    assert str(verdict).endswith("moved most: +2000.0k MlasSgemm (onnxruntime), +300.0k "
                                 "MlasGelu (onnxruntime), +50.0k memset (libc); graph: +1 "
                                 "MatMul, +1 Add")
    # Unchanged code says nothing of functions.
    assert "moved most" not in str(judge("x", [94.45e6], base, functions_now=now))


def test_the_default_instruction_threshold_is_one_percent():
    # A compute-bound model's 2 % FLOPs change (~+1.8 %) fails; unchanged code's allocator
    # scatter (up to 0.3 % on a small model under load) passes.
    assert instructions.judge("x", [94.45e6 * 1.012], BASE).status == "regressed"
    assert instructions.judge("x", [94.45e6 * 1.003], BASE).status == "pass"


OPENVINO_TINY = {"per_inference": 341_018, "processes": [341_018, 341_108, 341_219]}


def test_a_small_model_s_threshold_is_sized_from_its_own_work_above_the_runtime_s_floor():
    """A 32-64-64-5 classifier on OpenVINO is 90 % the runtime's fixed cost of a call: its
    hidden layer grown 64 -> 72 moved the count +0.62 %, which 1 % of the whole count let
    through. Sized from the model's own work, the threshold is as fine as the noise allows."""
    floor = [307_300]
    grown = instructions.judge("x", [343_130], OPENVINO_TINY, floors=floor)
    assert grown.status == "regressed", str(grown)
    assert grown.figures["threshold_pct"] == pytest.approx(0.2)  # the finest threshold
    assert grown.figures["floor_per_call"] == 307_300
    assert ("threshold 0.2 %: 1 % of the model's own 33.7k above the runtime's 307.3k a call "
            "would be 0.099 %, finer than the gate resolves (3x its noise, 0.2 % at least)"
            ) in str(grown)
    assert instructions.judge("x", [341_400], OPENVINO_TINY, floors=floor).status == "pass"
    # Without a floor (torch's backends, an old entry) the threshold is of the whole count.
    assert instructions.judge("x", [343_130], OPENVINO_TINY).status == "pass"
    # The baseline's floor stands in for a run that counted none.
    assert instructions.judge("x", [343_130], {**OPENVINO_TINY, "floor": 307_300}
                              ).status == "regressed"
    # Confirmation asks by the same threshold.
    assert instructions.moved([343_130], OPENVINO_TINY, floors=floor)


def test_one_process_a_backend_and_precision_counts_the_floor_for_the_session():
    """The floor does not depend on the model (an ONNX Runtime session built under valgrind:
    ~4 s a child), so the cheapest model's process counts it and every other shares it; ONNX
    Runtime's fp16 and int8_dynamic run fp32's floor graph, so they share that one."""
    from types import SimpleNamespace

    from infergate.backends import all_backends
    from infergate.plugin.instruction_counts import CountSession

    def combo(model, backend, precision):
        return SimpleNamespace(spec=SimpleNamespace(name=model),
                               backend=all_backends()[backend], precision=precision)

    session = CountSession.__new__(CountSession)  # its planning only: no pytest config
    session.floors = {}
    session._expected_cost = lambda group: {"big": 9e9, "small": 1.0}[group[0][0].spec.name]
    big = [(combo("big", "ort_cpu", "fp32"), {}), (combo("big", "ort_cpu", "int8"), {})]
    small = [(combo("small", "ort_cpu", "fp32"), {}), (combo("small", "ort_cpu", "fp16"), {})]
    session._plan_floors([big, small])
    assert [r["floor"] for _, r in big + small] == [False, True, True, False]
    assert set(session.floors) == {("ort_cpu", "fp32"), ("ort_cpu", "int8")}
    again = [(combo("big", "ort_cpu", "fp32"), {})]  # a confirmation: the floor is known
    session._plan_floors([again])
    assert again[0][1]["floor"] is False
    session.floors[("ort_cpu", "fp32")].append(62_700)
    assert session._floors(big[0][0], [{"instructions": {}}]) == [62_700]
    assert session._floors(big[0][0], [{"instructions": {"floor": 62_650}}]) == [62_650]


def test_the_threshold_follows_the_noise_and_never_loosens_past_the_whole_count_s():
    from infergate.perf.deterministic import FINEST_THRESHOLD, NOISE_MARGIN, threshold_for

    assert threshold_for(0.01, 100e6, None, 0.0) == 0.01
    assert threshold_for(0.01, 100e6, 1e6, 0.0) == pytest.approx(0.0099)  # a big model: 1 %
    assert threshold_for(0.01, 400e3, 300e3, 0.0) == pytest.approx(0.0025)
    assert threshold_for(0.01, 400e3, 399e3, 0.0) == FINEST_THRESHOLD
    assert threshold_for(0.01, 400e3, 399e3, 0.001) == pytest.approx(NOISE_MARGIN * 0.001)
    assert threshold_for(0.01, 400e3, 399e3, 0.02) == 0.01  # noisier: the whole count's 1 %
    assert threshold_for(0.01, 400e3, 500e3, 0.0) == FINEST_THRESHOLD  # a floor above it


def test_improvement_and_override_threshold():
    assert judge("x", [90e6], BASE).status == "improved"
    loose = judge("x", [94.45e6 * 1.04], BASE, threshold=0.05, reason="why")
    assert loose.status == "pass" and "threshold 5 %" in str(loose) and "(why)" in str(loose)


def test_moved_asks_for_confirmation_only_where_one_process_would_not_pass():
    assert not instructions.moved([94.45e6 * 1.004], BASE, 0.02)
    assert not instructions.moved([94.45e6 * 1.01], BASE, 0.02)  # passes: more only lower it
    assert instructions.moved([94.45e6 * 1.0199], BASE, 0.02)  # a 2 % change not ruled out
    assert instructions.moved([94.45e6 * 0.975], BASE, 0.02)  # improved: confirm before saying


def test_make_entry_keeps_every_process_the_spread_and_the_cheapest_functions():
    replies = [{"instructions": {"per_inference": v, "calls": 3, "valgrind": "3.19.0",
                                 "cpu_view": "cpu", "functions": {"f": v}}}
               for v in (100.5, 100.0, 100.1)]
    entry = instructions.make_entry(replies, measured_on="host")
    assert entry["per_inference"] == 100.0 and entry["processes"] == [100.5, 100.0, 100.1]
    assert entry["spread"] == pytest.approx(0.005) and entry["measured_on"] == "host"
    assert entry["functions"] == {"f": 100.0} and "floor" not in entry
    floored = [{"instructions": {**r["instructions"], "floor": f}}
               for r, f in zip(replies, (60.0, 59.0, 61.0), strict=True)]
    assert instructions.make_entry(floored, measured_on="host")["floor"] == 59.0


def test_calls_per_process_grow_as_the_model_shrinks():
    assert instructions.calls_for(300e3) == (12, 16)
    assert instructions.calls_for(10e6) == (5, 4)
    assert instructions.calls_for(95e6) == (0, 2)


def test_dump_totals_reads_totals_of_named_dumps(tmp_path):
    (tmp_path / "callgrind.out.1.1").write_text(textwrap.dedent("""\
        desc: Trigger: Client Request: infergate-call-0
        events: Ir
        summary: 0
        fn=(1) f
        0 5
        totals: 283446
        """))
    (tmp_path / "callgrind.out.1").write_text("desc: Trigger: Program termination\n"
                                              "summary: 9\ntotals: 9\n")
    assert instructions.dump_totals(tmp_path) == {"infergate-call-0": 283446}


def test_injected_work_carries_fractions_over_calls():
    work = InjectedWork(0.5)
    work.size(model_cost=3.0, unit_cost=1.0)  # 1.5 units a call
    done = []
    work.unit = lambda count=1: done.append(count)
    for _ in range(4):
        work()
    assert sum(done) == 6 and done == [2, 1, 2, 1]  # nearest unit, the rest carried


def test_view_id_names_valgrind_and_its_cpu():
    assert instructions.view_id("Intel(R) Core(TM) i7-4910MQ CPU @ 2.90GHz").endswith(
        "intel-r-core-tm-i7-4910mq-cpu-2-90ghz")


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
def test_the_shim_counts_only_between_start_and_stop_under_real_valgrind(tmp_path):
    """Counting 2x the work counts 2x the instructions, and valgrind's CPU is the canned
    one whatever the host."""
    shim = instructions.shim_path(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        from infergate.perf.instructions import Shim
        shim = Shim({str(shim)!r})
        assert shim.on_valgrind
        def work(n):
            total = 0
            for i in range(n):
                total += i * i
            return total
        for n, name in ((20000, "one"), (40000, "two")):
            shim.start(); work(n); shim.stop(name)
        print(shim.cpu_brand())
        """)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          f"--callgrind-out-file={tmp_path}/callgrind.out.%p", sys.executable,
                          "-c", script], capture_output=True, text=True, check=True)
    totals = instructions.dump_totals(tmp_path)
    assert totals["two"] / totals["one"] == pytest.approx(2.0, rel=0.05)
    assert "i7-4910MQ" in out.stdout  # valgrind's canned CPUID, not this host's


def test_functions_are_named_by_library_and_fold_the_rest(tmp_path):
    assert functions.name_of("./malloc/./malloc/malloc.c:_int_free "
                             "[/usr/lib/x86_64-linux-gnu/libc.so.6]") == "_int_free (libc)"
    assert functions.name_of(
        "???:0x0000000001bc4840'2 [/v/lib/python3.11/site-packages/onnxruntime/capi/"
        "onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so]") == (
        "onnxruntime_pybind11_state+0x1bc4840 (onnxruntime)")
    assert functions.name_of("0x000000000493b718'2 [???]") == "jit+0x493b718 (generated code)"
    assert functions.changed({"a": 10, "b": 5, functions.OTHER: 3},
                             {"a": 10, "b": 9, "c": 2, functions.OTHER: 1}) == [
        ("b", 4), (functions.OTHER, -2), ("c", 2)]


def test_the_op_histogram_of_an_onnx_graph_and_its_change(tmp_path):
    from onnx import TensorProto, helper, save

    def graph(ops):
        nodes = [helper.make_node(op, ["x"], ["x"]) for op in ops]
        value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
        return helper.make_model(helper.make_graph(nodes, "g", [value], [value]))

    save(graph(["MatMul", "Add", "Relu"]), tmp_path / "a.onnx")
    save(graph(["MatMul", "MatMul", "Add", "Add", "Add"]), tmp_path / "b.onnx")
    old, new = (graph_ops.histogram(str(tmp_path / n)) for n in ("a.onnx", "b.onnx"))
    assert old == {"Add": 1, "MatMul": 1, "Relu": 1}
    assert graph_ops.change(old, new) == "+2 Add, +1 MatMul, -1 Relu"
    assert graph_ops.change(old, old) == "" and graph_ops.histogram(str(tmp_path)) == {}


def test_the_heap_verdict_judges_both_figures_and_names_the_one_that_grew():
    base = heap.make_entry([{"heap": {"run_peak_bytes": 10_000_000,
                                      "build_peak_bytes": 8_000_000 + i}} for i in (0, 96, 40)])
    same = heap.judge("x", [{"run_peak_bytes": 10_000_000, "build_peak_bytes": 8_000_010}], base,
                      threshold=0.02)
    assert same.status == "pass"
    doubled = heap.judge("x", [{"run_peak_bytes": 10_600_000, "build_peak_bytes": 8_000_000}],
                         base, threshold=0.02)
    assert doubled.status == "regressed"
    assert doubled.figures["run_peak_bytes_delta_pct"] == pytest.approx(6.0)
    assert "while it runs +6.00 % (9.54 → 10.11 MB" in str(doubled)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "12"])
def test_a_zero_negative_or_nan_heap_figure_is_refused_when_loaded(tmp_path, bad):
    from infergate.perf.baselines import SCHEMA, BaselineError, BaselineStore

    entry = {"heap": {"run_peak_bytes": bad, "build_peak_bytes": 5,
                      "processes": [{"run_peak_bytes": 5, "build_peak_bytes": 5}]}}
    path = tmp_path / "callgrind-view.json"
    path.write_text(json.dumps({"schema": SCHEMA, "entries": {"m/ort_cpu/fp32": entry}}))
    with pytest.raises(BaselineError, match=r"callgrind-view.json: entry 'm/ort_cpu/fp32': "
                                            r"heap.run_peak_bytes must be a finite positive"):
        BaselineStore(path).load()


@pytest.mark.parametrize("bad", [0, -5, float("nan"), None])
def test_a_zero_negative_or_nan_floor_is_refused_when_loaded(tmp_path, bad):
    from infergate.perf.baselines import SCHEMA, BaselineError, BaselineStore

    entry = {"instructions": {"per_inference": 9, "processes": [9], "floor": bad}}
    path = tmp_path / "callgrind-view.json"
    path.write_text(json.dumps({"schema": SCHEMA, "entries": {"m/ort_cpu/fp32": entry}}))
    with pytest.raises(BaselineError, match=r"callgrind-view.json: entry 'm/ort_cpu/fp32': "
                                            r"instructions.floor must be a finite positive"):
        BaselineStore(path).load()


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
def test_the_preloaded_shim_accounts_the_heap_under_real_valgrind(tmp_path):
    """A 40 MB buffer held and freed shows as its size in the high-water mark, and the live
    figure returns to where it was."""
    shim = instructions.shim_path(tmp_path)
    script = textwrap.dedent(f"""
        import ctypes
        from infergate.perf.instructions import Shim
        shim = Shim({str(shim)!r})
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        start = shim.heap_mark()
        block = libc.malloc(40 << 20)
        libc.free(block)
        print(shim.heap_peak() - start, shim.lib.ig_heap_live() - start)
        """)
    out = subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                          f"--callgrind-out-file={tmp_path}/callgrind.out.%p", sys.executable,
                          "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_PRELOAD": str(shim)})
    peak, live = map(int, out.stdout.split())
    assert (40 << 20) <= peak < (40 << 20) + 65536 and abs(live) < 65536


def test_a_corrupt_portable_baseline_is_one_usage_error_naming_file_and_entry(project,
                                                                             pytester):
    from infergate.perf.baselines import SCHEMA

    folder = pytester.path / "baselines"
    folder.mkdir()
    bad = folder / "callgrind-3-19-0-some-cpu.json"
    bad.write_text(json.dumps({"schema": SCHEMA, "entries": {"mlp/ort_cpu/fp32": {
        "instructions": {"per_inference": 1e5, "processes": [1e5]},
        "heap": {"run_peak_bytes": float("nan"), "build_peak_bytes": 1,
                 "processes": [{"run_peak_bytes": 1, "build_peak_bytes": 1}]}}}}))
    result, _ = project("--models", "mlp", tests=("test_instructions.py",), counts=False)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{bad}: entry 'mlp/ort_cpu/fp32': heap.run_peak_bytes must "
                                 f"be a finite positive number of bytes*"])
    bad.write_text("{truncated")
    result, _ = project("--models", "mlp", tests=("test_instructions.py",), counts=False)
    result.stderr.fnmatch_lines([f"*{bad}: not readable JSON*"])


def test_the_heap_is_judged_beyond_the_range_its_baseline_processes_spanned():
    # Under load ONNX Runtime's heap landed in states ~2 % apart on unchanged code.
    base = heap.make_entry([{"heap": {"run_peak_bytes": v, "build_peak_bytes": 8_000_000}}
                            for v in (10_050_000, 10_260_000, 10_050_000)])
    high_state = heap.judge("x", [{"run_peak_bytes": 10_260_000,
                                   "build_peak_bytes": 8_000_000}], base, threshold=0.02)
    assert high_state.status == "pass" and "(9.58–9.78 → 9.78 MB)" in str(high_state)
    grown = heap.judge("x", [{"run_peak_bytes": 10_560_000, "build_peak_bytes": 8_000_000}],
                       base, threshold=0.02)
    assert grown.status == "regressed" and grown.figures["run_peak_bytes_delta_pct"] == (
        pytest.approx(2.92, abs=0.01))


@pytest.mark.skipif(instructions.unavailable_reason() is not None,
                    reason=str(instructions.unavailable_reason()))
@pytest.mark.nightly  # 42-49 s on 2 cores: the pull-request CI's budget
def test_a_combination_counts_the_same_alone_or_beside_its_other_precisions(tmp_path):
    """One valgrind process counts a model and backend's precisions, each in a forked child:
    a combination's figures do not depend on which others share its process, or in which
    order, so a baseline taken by the full tier serves the smoke tier's counts. Within the
    counts' own noise (a few hundred instructions on this model, from call to call) and of
    the heap's (a few dozen bytes)."""
    from infergate.backends import all_backends
    from infergate.build.artifacts import ArtifactStore
    from infergate.build.subject import ModelUnderTest
    from infergate.models import all_models
    from infergate.perf.probe import counted_request, run_counted

    subject = ModelUnderTest(all_models()["mlp"], ArtifactStore(tmp_path))
    ort = all_backends()["ort_cpu"]
    fp32, int8 = (counted_request(subject, ort, p) for p in ("fp32", "int8"))
    alone, = run_counted([fp32])
    after, beside = run_counted([int8, fp32])
    for reply in (alone, after, beside):
        assert not isinstance(reply, Exception), reply
    assert beside["instructions"]["per_inference"] == pytest.approx(
        alone["instructions"]["per_inference"], abs=NOISE_TARGET_INSTRUCTIONS)
    assert beside["instructions"]["floor"] == pytest.approx(
        alone["instructions"]["floor"], abs=NOISE_TARGET_INSTRUCTIONS)
    for figure, bytes_alone in alone["heap"].items():  # within a few dozen bytes
        assert beside["heap"][figure] == pytest.approx(bytes_alone, rel=1e-3)
    assert after["instructions"]["per_inference"] < alone["instructions"]["per_inference"]
