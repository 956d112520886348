"""One performance measurement in a fresh process: ``python -m infergate.probe < request.json``.

A fresh process per combination keeps memory peaks and allocator state from leaking between
measurements, and makes figures independent of test order. The request names the combination,
the cache dir, threads and protocol; the reply (last stdout line) is JSON with latency
samples, cold-start times and peak memory. Progress goes to stderr.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

MB = 2**20
TIMEOUT_S = 900


class ProbeError(RuntimeError):
    """The measuring process failed; the message carries its stderr."""


def run_probe(subject, backend, precision: str, *, threads: int, min_time_s: float,
              slowdown: float = 0.0) -> dict:
    """Measure one combination in a fresh process and return its figures.

    Artifacts are built here first, so the probe's memory and cold start never include an
    export or a quantization.
    """
    backend.prepare(subject, precision)
    request = probe_request(subject.spec.name, backend.name, precision, subject.store.root,
                            subject.fingerprint, dims=subject.spec.benchmark_dims(),
                            threads=threads, min_time_s=min_time_s, slowdown=slowdown)
    return spawn_probe(request, source=Path(__file__).resolve().parents[1],
                       lock_dir=subject.store.root)


def probe_request(model: str, backend: str, precision: str, cache_dir: Path, fingerprint: str,
                  *, dims: dict, threads: int, min_time_s: float, slowdown: float = 0.0) -> dict:
    return {"model": model, "backend": backend, "precision": precision,
            "cache_dir": str(Path(cache_dir).resolve()), "fingerprint": fingerprint,
            "threads": threads, "dims": dims, "protocol": {"min_time_s": min_time_s},
            "slowdown": slowdown}


def spawn_probe(request: dict, *, source: Path, lock_dir: Path) -> dict:
    """Run ``python -m infergate.probe`` with the infergate found in ``source`` (this one, or
    another revision's for A/B) and return its reply."""
    # A fixed hash seed and no address-space randomisation give every probe the same memory
    # layout: on this machine type that took the MLP's between-process scatter from tens of
    # percent to about one.
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(
        [str(source), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    label = f"{request['model']}-{request['backend']}-{request['precision']}"
    # One measurement at a time per cache, even across pytest-xdist workers: two probes
    # sharing two cores would time each other.
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "probe.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run([sys.executable, "-m", "infergate.probe"],
                              input=json.dumps(request), capture_output=True, text=True,
                              env=env, timeout=TIMEOUT_S, preexec_fn=_fixed_layout,
                              cwd=source)  # `-m` puts the cwd first on sys.path
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ProbeError(f"{label}: measuring process exited {proc.returncode}:\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def probe(request: dict) -> dict:
    from infergate.measure import pin_threads

    threads = request["threads"]
    pinned = pin_threads(threads)  # before frameworks start their pools

    from infergate.artifacts import ArtifactStore
    from infergate.backends import all_backends
    from infergate.measure import (
        Protocol,
        current_rss_bytes,
        measure_latency,
        peak_rss_bytes,
        reset_peak_rss,
    )
    from infergate.models import all_models
    from infergate.subject import ModelUnderTest

    spec = all_models()[request["model"]]
    backend = all_backends()[request["backend"]]
    for module in backend.requires + backend.precision_requires.get(request["precision"], ()):
        importlib.import_module(module)  # library load is not the model's memory
    subject = ModelUnderTest(spec, ArtifactStore(Path(request["cache_dir"])),
                             fingerprint=request["fingerprint"])
    dims = request["dims"]
    feed = subject.inputs(seed=0, **dims)

    rss_before = current_rss_bytes()
    peak_reset = reset_peak_rss()
    t0 = time.perf_counter()
    runner = backend.prepare(subject, request["precision"])  # artifacts are already cached
    t1 = time.perf_counter()
    runner.threads = threads
    runner.activate()
    t2 = time.perf_counter()
    runner.run(feed)
    runner.synchronize()
    t3 = time.perf_counter()

    slowdown = request.get("slowdown", 0.0)

    def infer():
        start = time.perf_counter()
        runner.run(feed)
        if slowdown:  # the gate's own benchmark: +x % work, proportional to this call
            runner.synchronize()
            _spin(slowdown * (time.perf_counter() - start))

    latency = measure_latency(infer, runner.synchronize, dims["batch"],
                              Protocol(**request.get("protocol", {})))
    peak = peak_rss_bytes()
    allocator = runner.memory_stats()
    runner.deactivate()
    return {
        "latency": latency.as_dict(),
        "cold_start": {"prepare_s": t1 - t0, "load_s": t2 - t1, "first_inference_s": t3 - t2},
        "memory": {"peak_rss_mb": (peak - rss_before) / MB, "rss_before_mb": rss_before / MB,
                   "peak_reset": peak_reset, "allocator": allocator},
        "settings": {**runner.settings, **pinned,
                     "address_randomization": address_randomization(),
                     "python_hash_seed": os.environ.get("PYTHONHASHSEED")},
        "protocol": asdict(Protocol(**request.get("protocol", {}))),
    }


def main() -> int:
    request = json.loads(sys.stdin.read())
    result = probe(request)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
