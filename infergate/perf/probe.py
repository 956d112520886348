"""One performance measurement in a fresh process:
``python -m infergate.perf.probe < request.json``.

A fresh process per combination keeps memory peaks and allocator state from leaking between
measurements, and makes figures independent of test order. The request names the combination,
the cache dir, threads and protocol; the reply (last stdout line) is JSON with latency
samples, cold-start times and peak memory. Progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path

from infergate import run_budget
from infergate.accuracy.precision import CALIBRATED
from infergate.backends.device_time import DeviceFigures
from infergate.backends.gpu_memory import device_memory_figures
from infergate.failures import ChildFailure, describe_exit, path_first, run_child
from infergate.perf.injected import InjectedWork

MB = 2**20
TIMEOUT_S = 900
STEP_MARK = "[infergate-probe] step: "  # stderr: the step whose limit the probe is under


class ProbeError(RuntimeError):
    """The measuring process failed; the message carries its stderr."""


def run_probe(subject, backend, precision: str, *, threads: int, min_time_s: float,
              slowdown: float = 0.0, prepare=None, limits=None) -> dict:
    """Measure one combination in a fresh process and return its figures.

    Artifacts are built first (by ``prepare()``, e.g. in a worker process; by default in
    this one), so the probe's memory and cold start never include an export or a
    quantization. ``limits`` (``isolation.Limits``) bound its session build and first
    inference as they bound a worker's.
    """
    request = prepared_request(subject, backend, precision, prepare, threads=threads,
                               min_time_s=min_time_s, slowdown=slowdown)
    if limits is not None:
        request["limits"] = {"prepare_s": limits.prepare_s, "first_run_s": limits.first_run_s}
    return spawn_probe(request, source=Path(__file__).resolve().parents[2],
                       lock_dir=subject.store.root)


def prepared_request(subject, backend, precision: str, prepare, **settings) -> dict:
    """The combination's artifacts built (by ``prepare``, else here), then the request a fresh
    process measures it from."""
    if prepare is None:
        backend.prepare(subject, precision)
    else:
        prepare()
    dims = subject.spec.benchmark_dims()
    request = probe_request(subject.spec.name, backend.name, precision, subject.store.root,
                            subject.fingerprint, dims=dims, **settings)
    request.update(where_found(subject, backend), feed=str(subject.feed_path(**dims)))
    if precision in CALIBRATED:  # the quantized artifact's key; the probe cannot make it
        request["calibration_digest"] = subject.calibration_digest
    return request


def where_found(subject, backend) -> dict:
    """Where a fresh process finds the spec and backend classes: a user's or a planted
    fault's as well as the registry's."""
    from infergate.isolation import backend_reference, spec_reference

    return {"spec_ref": spec_reference(subject.spec), "backend_ref": backend_reference(backend)}


def counted_request(subject, backend, precision: str, *, slowdown: float = 0.0,
                    prepare=None) -> dict:
    """The request for counting one combination under callgrind (``spawn_counted``), its
    artifacts built first, as for ``run_probe``."""
    from infergate.perf.instructions import shim_path

    request = prepared_request(subject, backend, precision, prepare, threads=1,
                               min_time_s=0.0, slowdown=slowdown)
    request["shim"] = str(shim_path(subject.store.root))
    return request


def run_counted(requests: list[dict]) -> list:
    """Count one model and backend's combinations in a fresh process under callgrind, with
    this tree's infergate and the probes' fixed memory layout: per request, its reply or the
    exception that ended its count."""
    from infergate.perf.instructions import spawn_counted

    return spawn_counted(requests, source=Path(__file__).resolve().parents[2],
                         preexec_fn=_fixed_layout)


@contextmanager
def measurement_lock(lock_dir: Path):
    """One measurement at a time per cache, even across pytest-xdist workers: two probes
    sharing two cores would time each other."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "probe.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def probe_request(model: str, backend: str, precision: str, cache_dir: Path, fingerprint: str,
                  *, dims: dict, threads: int, min_time_s: float, slowdown: float = 0.0) -> dict:
    return {"model": model, "backend": backend, "precision": precision,
            "cache_dir": str(Path(cache_dir).resolve()), "fingerprint": fingerprint,
            "threads": threads, "dims": dims, "protocol": {"min_time_s": min_time_s},
            "slowdown": slowdown}


def spawn_probe(request: dict, *, source: Path, lock_dir: Path) -> dict:
    """Run ``python -m infergate.perf.probe`` with the infergate found in ``source`` (this one, or
    another revision's for A/B) and return its reply."""
    # A fixed hash seed and no address-space randomisation give every probe the same memory
    # layout: on this machine type that took the MLP's between-process scatter from tens of
    # percent to about one.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path_first(source)}
    label = f"{request['model']}-{request['backend']}-{request['precision']}"
    with measurement_lock(lock_dir):
        limit, said = run_budget.clamp(TIMEOUT_S)
        try:
            proc = run_child([sys.executable, "-m", "infergate.perf.probe"],
                             input=json.dumps(request), env=env, timeout=limit,
                             preexec_fn=_fixed_layout,
                             cwd=source)  # `-m` puts the cwd first on sys.path
        except subprocess.TimeoutExpired as exc:
            raise ChildFailure("timeout", label, "measurement (fresh process)",
                               f"no reply within {said}; the measuring process was killed",
                               _text(exc.stderr)[-4000:]) from None
    late = _late_step(proc)
    if late is not None:
        step, limit = late
        raise ChildFailure("timeout", label, f"{step} (measurement, fresh process)",
                           f"no reply within its limit of {limit}; the measuring process "
                           f"ended itself", proc.stderr[-4000:])
    if proc.returncode < 0:  # a signal: the backend crashed (or was killed)
        raise ChildFailure("crashed", label, "measurement (fresh process)",
                           f"the measuring process ended with {describe_exit(proc.returncode)}",
                           proc.stderr[-4000:])
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ProbeError(f"{label}: measuring process exited {proc.returncode}:\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def step_limit(step: str, limit_s: float | None):
    """``step`` may take ``limit_s`` seconds: past it, faulthandler's watchdog (a thread of
    its own that needs no GIL, which a native hang may hold) prints every thread's stack and
    ends the process; the parent names the step from the mark (``_late_step``)."""
    if limit_s is None:
        yield
        return
    import faulthandler

    sys.stderr.write(f"{STEP_MARK}{step} ({limit_s:g} s)\n")
    sys.stderr.flush()
    faulthandler.dump_traceback_later(limit_s, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _late_step(proc) -> tuple[str, str] | None:
    """The (step, limit) a probe that ended itself at a step's limit was in, else None."""
    if proc.returncode != 1 or "\nTimeout (" not in f"\n{proc.stderr}":
        return None
    marks = [line.removeprefix(STEP_MARK) for line in proc.stderr.splitlines()
             if line.startswith(STEP_MARK)]
    if not marks:
        return None
    step, _, limit = marks[-1].rpartition(" (")
    return step, limit.rstrip(")")


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


ADDR_NO_RANDOMIZE = 0x0040000  # linux/personality.h


def _personality(persona: int = 0xFFFFFFFF) -> int | None:
    """personality(2): sets ``persona`` and returns the previous one (0xFFFFFFFF only
    queries); None where it cannot be called."""
    try:
        import ctypes

        current = ctypes.CDLL(None).personality(persona)
    except (OSError, AttributeError):
        return None
    return None if current == -1 else current


def _fixed_layout() -> None:
    """In the child before exec: turn off address-space randomisation where Linux lets us
    (the probe records whether it is off)."""
    current = _personality()
    if current is not None:
        _personality(current | ADDR_NO_RANDOMIZE)


def address_randomization() -> bool | None:
    """Whether this process's address space is randomised (None where unknown)."""
    current = _personality()
    return None if current is None else not current & ADDR_NO_RANDOMIZE


def _seconds(call, synchronize=lambda: None, repeat: int = 7) -> float:
    """Median seconds of ``call`` (sizing injected work, not measuring)."""
    import statistics

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_parts_mb() -> dict[str, float]:
    """This process's resident memory split into anonymous and file-backed (Linux), MB."""
    parts = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile"):
                    parts[name[3:].lower()] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return parts


def _combination(request: dict):
    """The request's backend, its model under test (artifacts found by the fingerprint, no
    torch module built) and the seeded feed."""
    from infergate.backends import all_backends
    from infergate.build.artifacts import ArtifactStore
    from infergate.build.subject import ModelUnderTest
    from infergate.models import all_models

    if request.get("sys_path"):  # a project at another revision (A/B): its packages
        from infergate.perf.revision import put_on_path

        put_on_path(request["sys_path"])
    if request.get("model_file"):  # and its model file
        from infergate.models import use_model_files

        use_model_files([request["model_file"]])
    if "spec_ref" in request:
        from infergate.isolation import find_backend, find_spec

        spec, backend = find_spec(*request["spec_ref"]), find_backend(*request["backend_ref"])
    else:  # a revision's (before references, or a project's model at a revision)
        spec, backend = all_models()[request["model"]], all_backends()[request["backend"]]
    subject = ModelUnderTest(spec, ArtifactStore(Path(request["cache_dir"])),
                             fingerprint=request["fingerprint"],
                             calibration_digest=request.get("calibration_digest"))
    if request.get("feed"):  # saved by the parent: no torch here unless the backend needs it
        import numpy as np

        with np.load(request["feed"]) as saved:
            return backend, subject, {name: saved[name] for name in saved.files}
    return backend, subject, subject.inputs(seed=0, **request["dims"])


def probe(request: dict) -> dict:
    from infergate.perf.measure import pin_threads

    threads = request["threads"]
    pinned = pin_threads(threads)  # before frameworks start their pools

    from infergate.backends.warmup import build_graphs
    from infergate.perf.measure import (
        Calibration,
        Protocol,
        current_rss_bytes,
        measure_latency,
        peak_rss_bytes,
        reset_peak_rss,
    )

    backend, subject, feed = _combination(request)
    for module in backend.requires + backend.precision_requires.get(request["precision"], ()):
        importlib.import_module(module)  # library load is not the model's memory
    dims = request["dims"]
    nvml = NvmlPhases(backend.device == "cuda")
    nvml.read("before")

    # Memory in three layers (issue 11). The harness's own: the latency yardstick's buffers
    # and numpy's BLAS. The runtime's: what the framework costs before any model - its code
    # paged in, plugins, pools - fixed, but moved by the host (OpenVINO's by 17-25 MB between
    # CI runners of one type with identical libraries): recorded, not gated. The model's: the
    # peak above the initialised runtime, the gated figure.
    rss_before, parts_before = current_rss_bytes(), _rss_parts_mb()
    peak_reset = reset_peak_rss()
    calibration = Calibration()
    calibration()
    build_graphs()  # the runtime warm-up's ONNX graphs: onnx's import is the harness's too
    rss_harness = current_rss_bytes()
    t_init = time.perf_counter()
    runtime = backend.initialise_runtime(request["precision"], threads,
                                         cache_dir=subject.store.root)
    init_s = time.perf_counter() - t_init
    nvml.read("runtime")
    rss_runtime, parts_runtime = current_rss_bytes(), _rss_parts_mb()
    setup_peak = peak_rss_bytes()
    reset_peak_rss()  # the high-water mark from here on is the model's
    limits = request.get("limits", {})
    t0 = time.perf_counter()
    with step_limit("prepare (session creation, compile)", limits.get("prepare_s")):
        runner = backend.prepare(subject, request["precision"])  # artifacts are cached
        t1 = time.perf_counter()
        runner.threads = threads
        runner.activate()
    t2 = time.perf_counter()
    with step_limit("first inference", limits.get("first_run_s")):
        runner.run(feed)
        runner.synchronize()
    t3 = time.perf_counter()
    nvml.read("load")

    work = InjectedWork(request.get("slowdown", 0.0))
    if work.fraction:  # the gate's own benchmark: +x % real work, sized by time
        work.size(_seconds(lambda: runner.run(feed), runner.synchronize), _seconds(work.unit))

    def infer():
        runner.run(feed)
        work()

    latency = measure_latency(infer, runner.synchronize, dims["batch"],
                              Protocol(**request.get("protocol", {})), calibrate=calibration)
    peak, parts_end = peak_rss_bytes(), _rss_parts_mb()
    device = _device_figures(runner, feed, nvml) if isinstance(runner, DeviceFigures) else None
    allocator = runner.memory_stats()
    runner.deactivate()
    return {
        **({"device": {**device, "memory": device_memory_figures(
            nvml.figures, allocator, runner.allocator_figure)}} if device else {}),
        "latency": latency.as_dict(),
        "cold_start": {"runtime_init_s": init_s, "prepare_s": t1 - t0, "load_s": t2 - t1,
                       "first_inference_s": t3 - t2},
        "memory": {
            # Gated: the model's load and runs, above the initialised runtime.
            "model_peak_mb": (peak - rss_runtime) / MB,
            "runtime_overhead_mb": (rss_runtime - rss_harness) / MB,
            "harness_mb": (rss_harness - rss_before) / MB,
            # All of it above the state after imports (the figure gated before issue 11).
            "peak_rss_mb": (max(peak, setup_peak) - rss_before) / MB,
            "rss_before_mb": rss_before / MB, "rss_runtime_mb": rss_runtime / MB,
            # Anonymous (heap, pools) vs file-backed (code, mapped weights) resident memory.
            "rss_parts_mb": {"before": parts_before, "runtime": parts_runtime,
                             "end": parts_end},
            "runtime_init": runtime, "peak_reset": peak_reset, "allocator": allocator},
        "settings": {**runner.settings, **pinned,
                     "address_randomization": address_randomization(),
                     "python_hash_seed": os.environ.get("PYTHONHASHSEED")},
        "protocol": asdict(Protocol(**request.get("protocol", {}))),
    }


class NvmlPhases:
    """NVML's figure for this process at named phases of the probe (GPU backends only: a
    CPU backend's probe never loads NVML)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.figures: dict[str, float] = {}
        if enabled:
            # NVML is reference-counted: held open here, each reading's init/shutdown pair
            # is a count, not a library start whose host memory the model would be charged.
            with contextlib.suppress(Exception):
                import pynvml

                pynvml.nvmlInit()

    def read(self, phase: str) -> None:
        if self.enabled:
            from infergate.backends.gpu_memory import nvml_process_mb

            used = nvml_process_mb().get("nvml_process_used_mb")
            if used is not None:
                self.figures[phase] = used


def _device_figures(runner, feed, nvml: NvmlPhases) -> dict:
    """Device time after the host measurement (its events' cost stays out of the gated host
    figures), then NVML's reading after the runs."""
    from infergate.perf.measure import measure_device_time

    runner.timer = runner.device_timer()
    try:
        timed = measure_device_time(lambda: runner.run(feed), runner.synchronize, runner.timer)
    finally:
        runner.timer = None
    timed.synchronization = runner.synchronization
    nvml.read("run")
    return {"time": timed.as_dict(), "synchronization": runner.synchronization}


def count_each(request: dict) -> dict:
    """Under callgrind: load the backend's libraries and the model's feed once, then count each
    of the model and backend's ``request["children"]`` combinations (its precisions) in a
    forked child of its own, which reads its precision from ``request-<k>.json`` of the dump
    directory. The parent's state at each fork does not depend on which precisions the
    process counts, so neither do a combination's figures, and the import (10-23 s under
    valgrind) is paid once per model and backend. The reply gives each child's end; its
    figures are in ``reply-<k>.json`` and its stderr in ``stderr-<k>.txt``
    (``spawn_counted`` reads them)."""
    from infergate.perf.instructions import Shim
    from infergate.perf.measure import pin_threads

    start = time.perf_counter()
    pinned = pin_threads(1)
    shim = Shim(request["shim"])
    if not shim.on_valgrind:
        raise RuntimeError("counting needs valgrind: run it through spawn_counted")
    backend, subject, feed = _combination(request)
    for module in backend.requires:  # the libraries every precision loads: once, here
        importlib.import_module(module)
    imported_s = round(time.perf_counter() - start, 1)
    dumps, limit = Path(request["dump_dir"]), int(request["child_timeout_s"])
    ends = [None] * request["children"]  # nothing the loop keeps grows between forks
    for k in range(request["children"]):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _count_child(k, shim, backend, subject, feed, pinned, dumps)
        ends[k] = _wait_child(pid, limit)
    return {"import_s": imported_s, "ends": ends}


def _stop_clock_threads() -> None:
    """Stop threads that wake on the clock: callgrind counts every thread, so their wake-ups
    (and the GIL hand-overs) landed in counted calls at random. tqdm's monitor is one, started
    by the first progress bar of each tqdm class (transformers' weight loading): it moved
    torch's MiniLM count 0.16 % between processes."""
    import threading

    monitor = sys.modules.get("tqdm._monitor")
    if monitor is None:
        return
    for thread in threading.enumerate():
        if isinstance(thread, monitor.TMonitor):
            thread.tqdm_cls.monitor_interval = 0  # no new one for a later bar
            thread.exit()
            thread.tqdm_cls.monitor = None


def _count_child(k, shim, backend, subject, feed, pinned, dumps: Path):
    """A forked child's whole life: count its combination, write the reply, leave without
    the parent's exit handlers."""
    code = 1
    try:
        with open(dumps / f"stderr-{k}.txt", "w") as err:
            os.dup2(err.fileno(), 2)
        from infergate.build.subject import ModelUnderTest

        request = json.loads((dumps / f"request-{k}.json").read_text())
        subject = ModelUnderTest(subject.spec, subject.store, fingerprint=subject.fingerprint,
                                 calibration_digest=request.get("calibration_digest"))
        reply = count(k, request, shim, backend, subject, feed, dumps)
        reply["settings"].update(pinned)
        partial = dumps / f"reply-{k}.json.partial"
        partial.write_text(json.dumps(reply))
        os.replace(partial, dumps / f"reply-{k}.json")
        code = 0
    except BaseException:  # noqa: BLE001 - the parent reads it from stderr-<k>.txt
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _wait_child(pid: int, limit_s: int) -> dict:
    """How a counting child ended: ``{"exit": n}``, ``{"signal": n}`` or, past ``limit_s``
    (then it is killed), ``{"timeout": limit_s}``."""
    import signal

    late = []

    def kill(*_):
        late.append(True)
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, kill)
    signal.alarm(limit_s)
    _, status = os.waitpid(pid, 0)  # retried after the handler (PEP 475)
    signal.alarm(0)
    if late:
        return {"timeout": limit_s}
    return ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
            else {"exit": os.WEXITSTATUS(status)})


def count(k: int, request: dict, shim, backend, subject, feed, dumps: Path) -> dict:
    """Count each warm inference of one combination as its own dump
    (``infergate-call-<k>-<i>``), and account the heap while the runtime builds the model and
    while it runs. Injected work is sized in instructions, from one counted call and one
    unit."""
    from infergate.perf.injected import SIZING_UNITS
    from infergate.perf.instructions import WARMUP, call_dump, calls_for, dump_totals

    clock = [time.perf_counter()]  # phase ends, for the cost of counting (valgrind's time)
    for module in backend.precision_requires.get(request["precision"], ()):
        importlib.import_module(module)
    clock.append(time.perf_counter())
    before = shim.heap_mark()
    runner = backend.prepare(subject, request["precision"])
    runner.threads = 1
    runner.activate()
    build_peak = shim.heap_peak() - before
    _stop_clock_threads()
    shim.heap_mark()  # from here, the high-water mark of running it
    clock.append(time.perf_counter())
    for _ in range(WARMUP):
        runner.run(feed)
    clock.append(time.perf_counter())
    work = InjectedWork(request.get("slowdown", 0.0))
    if work.fraction:
        for name, call in (("model", lambda: runner.run(feed)),
                           ("units", lambda: work.unit(SIZING_UNITS))):
            shim.start()
            call()
            shim.stop(f"infergate-size-{k}-{name}")
        totals = dump_totals(dumps, own=True)
        work.size(totals[f"infergate-size-{k}-model"],
                  totals[f"infergate-size-{k}-units"] / SIZING_UNITS)

    def counted(i: int) -> None:
        shim.start()
        runner.run(feed)
        work()
        shim.stop(call_dump(k, i))

    counted(0)
    first_peak = shim.heap_peak()  # reading the dump below is not the model's heap
    more_warmup, calls = calls_for(dump_totals(dumps, own=True)[call_dump(k, 0)])
    shim.heap_mark()
    for _ in range(more_warmup):
        runner.run(feed)
        work()
    for i in range(1, calls):
        counted(i)
    run_peak = max(first_peak, shim.heap_peak()) - before
    clock.append(time.perf_counter())
    runner.deactivate()
    floor_calls = (count_floor(k, backend, request["precision"], shim, subject.store.root, dumps)
                   if request.get("floor", True) else 0)
    clock.append(time.perf_counter())
    phases = ("import_s", "load_s", "warmup_s", "counted_s", "floor_s")
    return {"instructions": {"calls": calls, "warmup": WARMUP + more_warmup,
                             "floor_calls": floor_calls,
                             "cpu_view": shim.cpu_brand(),
                             "injected_units_per_call": work.per_call,
                             "phases_s": {name: round(b - a, 1) for name, (a, b) in
                                          zip(phases, pairwise(clock), strict=True)}},
            "heap": {"run_peak_bytes": run_peak, "build_peak_bytes": build_peak},
            "settings": {**runner.settings,
                         "address_randomization": address_randomization(),
                         "python_hash_seed": os.environ.get("PYTHONHASHSEED")}}


def count_floor(k: int, backend, precision: str, shim, cache_dir: Path, dumps: Path) -> int:
    """Count the backend's floor (``Backend.floor_runner``: the tiny graph on the model's own
    call path) after the model, each call its own dump (``floor_dump``); how many calls were
    counted, 0 where the backend has no floor. The model's calls already specialised the
    interpreter on that path: a floor needs the runtime's warm-up only."""
    from infergate.backends.warmup import tiny_feed
    from infergate.perf.instructions import FLOOR_CALLS, WARMUP, floor_dump

    runner = backend.floor_runner(precision, cache_dir)
    if runner is None:
        return 0
    runner.threads = 1
    runner.activate()
    feed = tiny_feed()

    def counted(i: int) -> None:
        shim.start()
        runner.run(feed)
        shim.stop(floor_dump(k, i))

    for _ in range(WARMUP):
        runner.run(feed)
    for i in range(FLOOR_CALLS):
        counted(i)
    runner.deactivate()
    return FLOOR_CALLS


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = count_each(request) if request.get("mode") == "instructions" else probe(request)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
