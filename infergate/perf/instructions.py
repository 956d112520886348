"""Instructions per inference, counted under valgrind's callgrind: a figure that is the same
in every process and on every runner.

Wall time on shared 2-core runners moves 3 % between runs and 50 % with a busy neighbour;
an instruction count does not. Callgrind runs the code on its own virtual CPU: it reports
the same canned CPUID (an AVX2 Intel Core i7) on every host, so oneDNN, MLAS and OpenVINO
pick the same kernels on Zen 4, Zen 5 and Xeon alike. Only the timed loop is counted: the
probe switches instrumentation on and off around it through callgrind's client requests,
from a tiny C shim built here with gcc against <valgrind/callgrind.h>.

What the figure cannot judge: bf16 (valgrind's CPU has no AVX-512, so torch and OpenVINO run
another path than the real one), more than one thread (spin-waits make counts scatter
20-80 %), and models so small that per-op overhead dominates their count.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

HEADER = Path("/usr/include/valgrind/callgrind.h")
INSTALL = "install it with `apt-get install valgrind` (Debian/Ubuntu; .ci/run does this as root)"
LOOP_DUMP = "infergate-loop"  # the name of the dump that holds the counted loop
CALLS = 1  # counted inferences per process: fixed, so counts compare between processes
WARMUP = 2  # uncounted calls first: lazy initialisation and caches are not the model's cost
# A MiniLM-short process takes 20-150 s (torch.compile ~250 s: it compiles under valgrind).
TIMEOUT_S = 1800
# The counted process gets a fixed environment, not the caller's: its size and contents move
# the stack and heap layout, and with them allocator paths (ONNX Runtime's count sat 0.4 %
# higher in every process of a pytest run than from a shell, until the environment was
# fixed). Kept from the caller: what locates programs and files.
KEEP = ("PATH", "HOME", "TMPDIR", "LD_LIBRARY_PATH")
# Deterministic layout and thread pools (the probe pins intra-op threads to 1 itself); inductor
# must not compile for the host's AVX-512, which valgrind's CPU lacks (SIGILL).
ENVIRONMENT = {"LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3"}

SHIM_SOURCE = r"""
#include <valgrind/callgrind.h>
#include <cpuid.h>
#include <string.h>
int ig_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void ig_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void ig_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
/* The CPU brand as the running code sees it: under valgrind, its canned CPUID. */
int ig_cpu_brand(char *out) {
    unsigned int r[12];
    if (!__get_cpuid(0x80000002, r, r + 1, r + 2, r + 3)) return 0;
    __get_cpuid(0x80000003, r + 4, r + 5, r + 6, r + 7);
    __get_cpuid(0x80000004, r + 8, r + 9, r + 10, r + 11);
    memcpy(out, r, 48);
    out[48] = 0;
    return 1;
}
"""


class CountError(RuntimeError):
    """Counting failed; the message carries valgrind's stderr."""


@cache
def valgrind_version() -> str | None:
    exe = shutil.which("valgrind")
    if exe is None:
        return None
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    return out.removeprefix("valgrind-") or None


def unavailable_reason() -> str | None:
    """Why instructions cannot be counted here, with how to fix it; None when they can."""
    if valgrind_version() is None:
        return f"valgrind is not installed: {INSTALL}"
    if not HEADER.exists():
        return f"{HEADER} is missing (valgrind's headers): {INSTALL}"
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        return "no C compiler (gcc) to build the callgrind client-request shim"
    return None


def shim_path(cache_dir: Path) -> Path:
    """The shim, built once per source and valgrind version under ``cache_dir``."""
    digest = hashlib.sha256((SHIM_SOURCE + str(valgrind_version())).encode()).hexdigest()[:12]
    target = Path(cache_dir) / "callgrind-shim" / f"libinfergate-cg-{digest}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        source, built = Path(tmp) / "shim.c", Path(tmp) / "shim.so"
        source.write_text(SHIM_SOURCE)
        compiler = shutil.which("gcc") or shutil.which("cc")
        proc = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(built),
                               str(source)], capture_output=True, text=True)
        if proc.returncode:
            raise CountError(f"building the callgrind shim failed:\n{proc.stderr[-2000:]}")
        os.replace(built, target)  # whole or not at all, even with two builders
    return target


class Shim:
    """The client requests, called from the probe process."""

    def __init__(self, path: str | Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.ig_stop.argtypes = [ctypes.c_char_p]

    @property
    def on_valgrind(self) -> bool:
        return bool(self.lib.ig_on_valgrind())

    def cpu_brand(self) -> str:
        buffer = ctypes.create_string_buffer(64)
        return buffer.value.decode(errors="replace").strip() if self.lib.ig_cpu_brand(
            buffer) else "unknown"

    def start(self) -> None:
        self.lib.ig_start()

    def stop(self, name: str) -> None:
        self.lib.ig_stop(name.encode())


def view_id(brand: str) -> str:
    """The key of instruction baselines: valgrind's version and the CPU it presents."""
    return re.sub(r"[^a-z0-9]+", "-", f"callgrind-{valgrind_version()}-{brand}".lower()
                  ).strip("-")


def dump_totals(directory: Path) -> dict[str, int]:
    """Instructions in each named dump callgrind wrote under ``directory``: the ``totals:``
    line (``summary:`` is the whole run's), keyed by the dump's trigger name."""
    found = {}
    for path in sorted(Path(directory).glob("callgrind.out*")):
        trigger = total = None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                trigger = line.removeprefix("desc: Trigger: Client Request: ").strip()
            elif line.startswith("totals:"):
                total = int(line.split()[1])
        if trigger is not None and total is not None:
            found[trigger] = total
    return found


def spawn_counted(request: dict, *, source: Path, preexec_fn=None) -> dict:
    """Run ``python -m infergate.perf.probe`` under callgrind with instrumentation off except
    around the probe's counted loop; returns the probe's reply with ``instructions`` added."""
    from infergate.failures import ChildFailure, describe_exit, path_first, run_child
    from infergate.perf.probe import ProbeError

    label = f"{request['model']}-{request['backend']}-{request['precision']}"
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        request = {**request, "mode": "instructions", "dump_dir": tmp}
        env = {**{k: v for k, v in os.environ.items()
                  if k in KEEP or k.startswith("INFERGATE_")},
               **ENVIRONMENT, "PYTHONPATH": path_first(source)}
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={tmp}/callgrind.out.%p", "--error-limit=no",
                   sys.executable, "-m", "infergate.perf.probe"]
        try:
            proc = run_child(command, input=json.dumps(request), env=env, timeout=TIMEOUT_S,
                             preexec_fn=preexec_fn, cwd=source)
        except subprocess.TimeoutExpired:
            raise ChildFailure("timeout", label, "instruction count (under callgrind)",
                               f"no reply within its limit of {TIMEOUT_S} s; the process was "
                               f"killed", "") from None
        if proc.returncode < 0:
            raise ChildFailure("crashed", label, "instruction count (under callgrind)",
                               f"the counting process ended with "
                               f"{describe_exit(proc.returncode)}", proc.stderr[-4000:])
        if proc.returncode != 0 or not proc.stdout.strip():
            raise ProbeError(f"{label}: callgrind process exited {proc.returncode}:\n"
                             f"{proc.stderr[-4000:]}")
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
        totals = dump_totals(Path(tmp))
    if LOOP_DUMP not in totals:
        raise ProbeError(f"{label}: callgrind wrote no '{LOOP_DUMP}' dump (got "
                         f"{sorted(totals)}):\n{proc.stderr[-2000:]}")
    counted = reply["instructions"]
    counted.update(total=totals[LOOP_DUMP], valgrind=valgrind_version(),
                   per_inference=totals[LOOP_DUMP] / counted["calls"])
    return reply



THRESHOLD = 0.02
BASELINE_PROCESSES = 3  # the spread of a count is taken from at least this many processes
# Counts agree to ~1e-5 (OpenVINO) and ~2e-3 (torch eager) between processes; a spread
# beyond half the threshold leaves too little room to tell a change from the scatter.
MAX_SPREAD_OF_THRESHOLD = 0.5
# The least uncertainty a comparison assumes, however well the baseline's processes agreed:
# torch eager's counts moved 0.17 % between processes here, and a fixed environment cannot
# make a CI runner's paths and sizes identical to the machine that took the baseline.
MIN_NOISE = 0.0025


def spread(counts: list[float]) -> float:
    """Relative range of per-process counts: (max - min) / min."""
    return max(counts) / min(counts) - 1.0


def make_entry(replies: list[dict], *, measured_on: str) -> dict:
    """The instruction part of a baseline entry, from the replies of several processes."""
    counts = [r["instructions"]["per_inference"] for r in replies]
    first = replies[0]["instructions"]
    return {"per_inference": min(counts), "processes": counts, "spread": spread(counts),
            "calls": first["calls"], "valgrind": first["valgrind"],
            "cpu_view": first["cpu_view"], "measured_on": measured_on}


def _m(count: float) -> str:
    return f"{count / 1e6:.2f}M"


def noise(baseline: dict, scatter: float = 0.0) -> float:
    """How well a count is known: the baseline's spread, at least MIN_NOISE and the backend's
    ``count_scatter`` (instructions) relative to the count."""
    return max(baseline.get("spread", 0.0), MIN_NOISE, scatter / baseline["per_inference"])


def judge(label: str, counts: list[float], baseline: dict, *, threshold: float = THRESHOLD,
          reason: str = "", version_note: str = "", scatter: float = 0.0):
    """Judge this run's per-process counts against the baseline's.

    Both sides are judged on their minimum: the scatter is mostly upwards (allocator work
    inside the loop), so the minimum is nearest the figure of the code itself. ONNX Runtime's
    counts sit in two states 0.3-0.5 % apart on MiniLM, and all the baseline's processes can
    land in the upper one, so a backend declares that scatter (``Backend.count_scatter``) and
    the noise is at least that. The change is known to within the noise (the baseline's
    spread, at least MIN_NOISE and the backend's scatter). Regressed when it is beyond the noise
    and a threshold-sized change is not ruled out (a real +2 % that measures +1.9 % must not
    pass a 2 % gate); insufficient when the baseline's processes disagreed by more than half
    the threshold (the count is not reproducible enough to judge at that threshold)."""
    from infergate.perf.gate import PerfVerdict

    old, new = baseline["per_inference"], min(counts)
    spread_seen = baseline.get("spread", 0.0)
    uncertainty = noise(baseline, scatter)
    delta = new / old - 1.0
    figures = {"instructions_per_inference": new, "baseline_per_inference": old,
               "delta_pct": delta * 100, "threshold_pct": threshold * 100,
               "spread_pct": spread_seen * 100, "noise_pct": uncertainty * 100,
               "processes": len(counts), "current_spread_pct": spread(counts) * 100}
    note = version_note + (f" ({reason})" if reason else "")
    wider = uncertainty > max(spread_seen, MIN_NOISE)  # the backend's scatter decides
    shown = f", noise {uncertainty * 100:.2g} %" if wider else ""
    text = (f"instructions/inference {delta * 100:+.2f} % ({_m(old)} → {_m(new)}, threshold "
            f"{threshold * 100:g} %, spread {spread_seen * 100:.2g} %"
            f"{shown}"
            f"{f', {len(counts)} processes' if len(counts) > 1 else ''})")
    if uncertainty > MAX_SPREAD_OF_THRESHOLD * threshold:
        return PerfVerdict(label, "insufficient",
                           f"{label} insufficient: the baseline's counts are not reproducible "
                           f"enough for a {threshold * 100:g} % threshold: {text}{note}", figures)
    if delta > uncertainty and delta >= threshold - uncertainty:
        return PerfVerdict(label, "regressed", f"{label} {text}{note}", figures)
    if delta < -uncertainty and delta <= -(threshold - uncertainty):
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {text}{note}",
                           figures)
    return PerfVerdict(label, "pass", f"{label} {text}{note}", figures)


def moved(counts: list[float], baseline: dict, threshold: float = THRESHOLD,
          scatter: float = 0.0) -> bool:
    """Whether the figure moved enough to be worth confirming in more processes: more than
    the noise plus a quarter of the threshold, either way."""
    return abs(min(counts) / baseline["per_inference"] - 1.0) > (
        noise(baseline, scatter) + threshold / 4)
