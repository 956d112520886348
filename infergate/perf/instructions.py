"""Instructions per inference, counted under valgrind's callgrind: a figure that is the same
in every process and on every runner.

Wall time on shared 2-core runners moves 3 % between runs and 50 % with a busy neighbour;
an instruction count does not. Callgrind runs the code on its own virtual CPU: it reports
the same canned CPUID (an AVX2 Intel Core i7) on every host, so oneDNN, MLAS and OpenVINO
pick the same kernels on Zen 4, Zen 5 and Xeon alike. Only warm inferences are counted, each
on its own: the probe switches instrumentation on and off around each call through
callgrind's client requests, from a tiny C shim built here with gcc against
<valgrind/callgrind.h>. The same shim, preloaded, accounts the heap (``heap.py``).

A call's count is the model's own cost plus, in some calls, allocator or lazy work (ONNX
Runtime's memset and malloc paths: +0.5 % in one call of five on MiniLM); the cheapest call
of a process is reproducible to a few instructions, so that is the process's figure.

What the figure cannot judge: AVX-512 and AMX kernels (bf16 on torch is counted on the path a
CPU without them takes; OpenVINO runs its bf16 hint as f32 there, so it is not counted:
``Backend.uncountable_at``) and more than one thread (spin-waits make counts scatter 20-80 %).
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

from infergate import run_budget
from infergate.perf import functions, graph_ops
from infergate.perf.deterministic import (  # the plugin reads these from here
    BASELINE_PROCESSES,  # noqa: F401
    FINEST_THRESHOLD,
    NOISE_MARGIN,
    THRESHOLD,
    by_own_work,
    decide,
    message,
    noise,
    spread,
    threshold_for,
    undecided_reason,
    worth_confirming,
)

HEADER = Path("/usr/include/valgrind/callgrind.h")
INSTALL = "install it with `apt-get install valgrind` (Debian/Ubuntu; .ci/run does this as root)"
WARMUP = 2  # uncounted calls first: lazy initialisation and caches are not the model's cost
# After the first counted call, more uncounted ones until about WARM_BUDGET instructions have
# run (Python's adaptive interpreter keeps specialising a small model's call for ~10 calls),
# then counted ones up to COUNT_BUDGET: small models get more samples, big ones no more time.
WARM_BUDGET, MAX_WARMUP = 50e6, 12
COUNT_BUDGET, MIN_CALLS, MAX_CALLS = 40e6, 2, 16
FLOOR_CALLS = 3  # the floor's counted calls (its cheapest judges); it sizes a threshold only
# A MiniLM-short combination takes 20-150 s (torch.compile ~250 s: it compiles under
# valgrind); the libraries' import before them up to a minute.
TIMEOUT_S, IMPORT_TIMEOUT_S = 1800, 300
PER_CHILD = ("precision", "calibration_digest")  # what differs between a process's counts
COUNT_STEP = "instruction count (under callgrind)"  # the step a count's failure names
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
#include <stddef.h>
#include <string.h>
#include <malloc.h>

int ig_on_valgrind(void) { return RUNNING_ON_VALGRIND; }
void ig_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void ig_stop(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
int ig_cpu_brand(char *out) {
    unsigned int r[12];
    if (!__get_cpuid(0x80000002, r, r + 1, r + 2, r + 3)) return 0;
    __get_cpuid(0x80000003, r + 4, r + 5, r + 6, r + 7);
    __get_cpuid(0x80000004, r + 8, r + 9, r + 10, r + 11);
    memcpy(out, r, 48);
    out[48] = 0;
    return 1;
}

/* Heap accounting, when preloaded: live bytes (malloc_usable_size of each block) and their
   high-water mark since the last ig_heap_mark. glibc's own allocator does the work. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
static long long live, peak;

static void *counted(void *p) {
    if (p) {
        long long size = (long long)malloc_usable_size(p);
        long long now = __atomic_add_fetch(&live, size, __ATOMIC_RELAXED);
        long long high = __atomic_load_n(&peak, __ATOMIC_RELAXED);
        while (now > high && !__atomic_compare_exchange_n(&peak, &high, now, 1,
                                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    }
    return p;
}
static void uncounted(void *p) {
    if (p) __atomic_sub_fetch(&live, (long long)malloc_usable_size(p), __ATOMIC_RELAXED);
}
void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t k, size_t n) { return counted(__libc_calloc(k, n)); }
void free(void *p) { uncounted(p); __libc_free(p); }
void *realloc(void *p, size_t n) {
    size_t before = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q || n == 0) { __atomic_sub_fetch(&live, (long long)before, __ATOMIC_RELAXED); counted(q); }
    return q;
}
void *memalign(size_t a, size_t n) { return counted(__libc_memalign(a, n)); }
void *aligned_alloc(size_t a, size_t n) { return counted(__libc_memalign(a, n)); }
int posix_memalign(void **out, size_t a, size_t n) {
    if (a % sizeof(void *) || (a & (a - 1))) return 22; /* EINVAL */
    void *p = __libc_memalign(a, n);
    if (!p) return 12; /* ENOMEM */
    *out = counted(p);
    return 0;
}
void *valloc(size_t n) { return counted(__libc_memalign(4096, n)); }
void *pvalloc(size_t n) { return counted(__libc_memalign(4096, (n + 4095) & ~(size_t)4095)); }
long long ig_heap_live(void) { return __atomic_load_n(&live, __ATOMIC_RELAXED); }
long long ig_heap_peak(void) { return __atomic_load_n(&peak, __ATOMIC_RELAXED); }
long long ig_heap_mark(void) {
    long long now = ig_heap_live();
    __atomic_store_n(&peak, now, __ATOMIC_RELAXED);
    return now;
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
        for name in ("ig_heap_live", "ig_heap_peak", "ig_heap_mark"):
            getattr(self.lib, name).restype = ctypes.c_longlong

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

    def heap_mark(self) -> int:
        """Live heap bytes now; the high-water mark restarts from here."""
        return self.lib.ig_heap_mark()

    def heap_peak(self) -> int:
        """The most heap bytes live at once since the last ``heap_mark``."""
        return self.lib.ig_heap_peak()


def calls_for(first: float) -> tuple[int, int]:
    """(more warm-up calls, counted calls) for a model whose first counted call took ``first``
    instructions."""
    def clamp(value, low, high):
        return int(max(low, min(high, value)))
    return (clamp(WARM_BUDGET // max(first, 1), 0, MAX_WARMUP),
            clamp(COUNT_BUDGET // max(first, 1), MIN_CALLS, MAX_CALLS))


def view_id(brand: str) -> str:
    """The key of instruction baselines: valgrind's version and the CPU it presents."""
    return re.sub(r"[^a-z0-9]+", "-", f"callgrind-{valgrind_version()}-{brand}".lower()
                  ).strip("-")


def call_dump(k: int, i: int) -> str:
    """The dump of the ``i``-th counted call of a process's ``k``-th combination."""
    return f"infergate-call-{k}-{i}"


def floor_dump(k: int, i: int) -> str:
    """The dump of the ``i``-th counted call of the ``k``-th combination's floor."""
    return f"infergate-floor-{k}-{i}"


def dump_totals(directory: Path, paths: dict | None = None, *, own: bool = False
                ) -> dict[str, int]:
    """Instructions in each named dump callgrind wrote under ``directory`` (``own``: this
    process's only): the ``totals:`` line (``summary:`` is the whole run's), keyed by the
    dump's trigger name (each dump's file goes into ``paths`` under the same name)."""
    found = {}
    pattern = f"callgrind.out.{os.getpid()}*" if own else "callgrind.out*"
    for path in sorted(Path(directory).glob(pattern)):
        trigger = total = None
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                trigger = line.removeprefix("desc: Trigger: Client Request: ").strip()
            elif line.startswith("totals:"):
                total = int(line.split()[1])
        if trigger is not None and total is not None:
            found[trigger] = total
            if paths is not None:
                paths[trigger] = path
    return found


def spawn_counted(requests: list[dict], *, source: Path, preexec_fn=None) -> list:
    """Count ``requests`` (one model and backend, its precisions) in one valgrind process:
    ``python -m infergate.perf.probe`` under callgrind, instrumentation off except around each
    counted call, the shim preloaded to account the heap, each combination in a forked child
    of its own (``probe.count_each``). Returns, per request, the probe's reply with the
    per-call counts, their minimum (the process's figure: what a call costs when no allocator
    or lazy work joins it, which is reproducible to a few instructions) and that call's
    per-function table, or the exception that ended its child."""
    from infergate.failures import ChildFailure, describe_exit, path_first, run_child
    from infergate.perf.probe import ProbeError

    first = requests[0]
    label = f"{first['model']}-{first['backend']}-{'/'.join(r['precision'] for r in requests)}"
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp:
        # The parent reads only what its children share; each child its own precision.
        shared = {k: v for k, v in first.items() if k not in PER_CHILD}
        group = {**shared, "mode": "instructions", "dump_dir": tmp,
                 "children": len(requests), "child_timeout_s": TIMEOUT_S}
        for k, request in enumerate(requests):
            (Path(tmp) / f"request-{k}.json").write_text(json.dumps(request))
        env = {**{k: v for k, v in os.environ.items()
                  if k in KEEP or k.startswith("INFERGATE_")},
               **ENVIRONMENT, "PYTHONPATH": path_first(source),
               "LD_PRELOAD": " ".join(filter(None, (first["shim"],
                                                    os.environ.get("LD_PRELOAD"))))}
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={tmp}/callgrind.out.%p", "--error-limit=no",
                   sys.executable, "-m", "infergate.perf.probe"]
        limit, said = run_budget.clamp(IMPORT_TIMEOUT_S + TIMEOUT_S * len(requests))
        try:
            proc = run_child(command, input=json.dumps(group), env=env, timeout=limit,
                             preexec_fn=preexec_fn, cwd=source)
        except subprocess.TimeoutExpired:
            failure = ChildFailure("timeout", label, COUNT_STEP, f"no reply within {said}; "
                                   f"the process was killed", "")
            return [failure] * len(requests)
        if proc.returncode < 0:
            failure = ChildFailure("crashed", label, COUNT_STEP, f"the counting process ended with "
                                   f"{describe_exit(proc.returncode)}", proc.stderr[-4000:])
            return [failure] * len(requests)
        if proc.returncode != 0 or not proc.stdout.strip():
            failure = ProbeError(f"{label}: callgrind process exited {proc.returncode}:\n"
                                 f"{proc.stderr[-4000:]}")
            return [failure] * len(requests)
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
        paths: dict[str, Path] = {}
        totals = dump_totals(Path(tmp), paths)
        counted = [_counted(k, request, end, Path(tmp), totals, paths, proc.stderr)
                   for k, (request, end) in enumerate(zip(requests, reply["ends"], strict=True))]
    for one in counted:  # the libraries' import, paid once by the process for all of them
        if isinstance(one, dict):
            one["instructions"]["process"] = {"import_s": reply["import_s"],
                                              "combinations": len(requests)}
    return counted


def _counted(k: int, request: dict, end: dict, tmp: Path, totals: dict, paths: dict,
             stderr: str):
    """The reply of the ``k``-th child, with its counts, or the exception that ended it."""
    from infergate.failures import ChildFailure, describe_exit
    from infergate.perf.probe import ProbeError

    label = f"{request['model']}-{request['backend']}-{request['precision']}"
    own = tmp / f"stderr-{k}.txt"
    own = own.read_text(errors="replace") if own.exists() else ""
    if "timeout" in end:
        return ChildFailure("timeout", label, COUNT_STEP, f"no reply within its limit of "
                            f"{end['timeout']} s; the process was killed", own[-4000:])
    if "signal" in end:  # valgrind's report of the crash is on the process's stderr
        return ChildFailure("crashed", label, COUNT_STEP, f"the counting process ended with "
                            f"{describe_exit(-end['signal'])}", (own + stderr)[-4000:])
    reply_path = tmp / f"reply-{k}.json"
    if end.get("exit") or not reply_path.exists():
        return ProbeError(f"{label}: the counting process exited {end.get('exit')}:\n"
                          f"{own[-4000:]}")
    reply = json.loads(reply_path.read_text())
    counted = reply["instructions"]
    per_call = [totals.get(call_dump(k, i)) for i in range(counted["calls"])]
    if not per_call or None in per_call:
        return ProbeError(f"{label}: callgrind wrote {sorted(totals)}, not the "
                          f"{counted['calls']} {call_dump(k, '<i>')!r} dumps the probe asked "
                          f"for:\n{own[-2000:]}")
    cheapest = per_call.index(min(per_call))
    floor = [totals.get(floor_dump(k, i)) for i in range(counted.get("floor_calls", 0))]
    if floor and None not in floor:
        counted["floor"] = min(floor)
    counted.update(per_call=per_call, per_inference=min(per_call),
                   valgrind=valgrind_version(),
                   functions=functions.table(paths[call_dump(k, cheapest)]),
                   graph_ops=graph_ops.histogram(reply["settings"].get("model")))
    return reply


def floors_of(replies: list[dict]) -> list[float]:
    """The runtime's floor each process counted (none for a backend without one)."""
    return [r["instructions"]["floor"] for r in replies if "floor" in r["instructions"]]


def make_entry(replies: list[dict], *, measured_on: str,
               floors: list[float] | None = None) -> dict:
    """The instruction part of a baseline entry, from the replies of several processes: the
    cheapest process's per-function table goes with it, for the verdict to say what moved;
    the floor is the cheapest of ``floors`` (default: the processes' own)."""
    counts = [r["instructions"]["per_inference"] for r in replies]
    cheapest = replies[counts.index(min(counts))]["instructions"]
    found = floors_of(replies) if floors is None else floors
    return {"per_inference": min(counts), "processes": counts, "spread": spread(counts),
            **({"floor": min(found)} if found else {}),
            "calls": cheapest["calls"], "valgrind": cheapest["valgrind"],
            "cpu_view": cheapest["cpu_view"], "measured_on": measured_on,
            "functions": cheapest.get("functions", {}), "graph_ops": cheapest.get("graph_ops", {})}


def _m(count: float) -> str:
    return f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count / 1e3:.1f}k"


def _floor(baseline: dict, floors: list[float] | None) -> float | None:
    """The runtime's fixed cost of a call: this run's (its cheapest process), else the
    baseline's, else None (a backend without one, an entry taken before the figure)."""
    return min(floors) if floors else baseline.get("floor")


def judge(label: str, counts: list[float], baseline: dict, *, threshold: float = THRESHOLD,
          reason: str = "", version_note: str = "", functions_now: dict | None = None,
          graph_change: str = "", floors: list[float] | None = None):
    """Judge this run's per-process counts against the baseline's (``deterministic``'s rule),
    both sides on their minimum, at ``threshold`` of what the model costs above the
    runtime's floor (``floors``: this run's per process) as far as the noise allows
    (``threshold_for``). A count that moved beyond the noise says where: the three
    functions that moved most (``functions_now`` against the baseline's table) and, for an
    ONNX graph, how its op types changed (``graph_change``)."""
    from infergate.perf.gate import PerfVerdict

    old, new = baseline["per_inference"], min(counts)
    processes = baseline.get("processes") or [old]
    uncertainty = noise(processes, counts)
    delta = new / old - 1.0
    floor = _floor(baseline, floors)
    applied = threshold_for(threshold, old, floor, uncertainty)
    status = decide(delta, uncertainty, applied)
    figures = {"instructions_per_inference": new, "baseline_per_inference": old,
               "delta_pct": delta * 100, "threshold_pct": applied * 100,
               "noise_pct": uncertainty * 100, "processes": len(counts),
               "spread_pct": spread(processes) * 100, "current_spread_pct": spread(counts) * 100}
    if floor is not None:
        figures.update(floor_per_call=floor, model_threshold_pct=threshold * 100)
    moves = functions.changed(baseline.get("functions") or {}, functions_now or {})
    where = ""
    if abs(delta) > uncertainty and moves and baseline.get("functions") and functions_now:
        figures["functions_moved"] = dict(moves)
        where = f"; moved most: {functions.describe(moves)}"
    if graph_change:
        figures["graph_change"] = graph_change
        where += f"; graph: {graph_change}"
    note = version_note + (f" ({reason})" if reason else "")
    text = (f"instructions/inference {delta * 100:+.2f} % ({_m(old)} → {_m(new)}, threshold "
            f"{_threshold_text(threshold, applied, old, floor)}, noise "
            f"{uncertainty * 100:.2g} % from {len(processes)}+{len(counts)} processes){where}")
    why = f"{undecided_reason(processes, counts, applied)}: "
    return PerfVerdict(label, status, message(status, label, text + note, why), figures)


def _threshold_text(threshold: float, applied: float, count: float, floor: float | None
                    ) -> str:
    if floor is None or applied == threshold:
        return f"{threshold * 100:g} %"
    text = (f"{applied * 100:.2g} %: {threshold * 100:g} % of the model's own "
            f"{_m(max(count - floor, 0))} above the runtime's {_m(floor)} a call")
    sized = by_own_work(threshold, count, floor)
    if applied > sized:
        text += (f" would be {sized * 100:.2g} %, finer than the gate resolves ({NOISE_MARGIN}x "
                 f"its noise, {FINEST_THRESHOLD * 100:g} % at least)")
    return text


def moved(counts: list[float], baseline: dict, threshold: float = THRESHOLD,
          floors: list[float] | None = None) -> bool:
    """Whether the figure moved enough to be worth confirming in more processes."""
    processes = baseline.get("processes") or [baseline["per_inference"]]
    uncertainty = noise(processes, counts)
    applied = threshold_for(threshold, baseline["per_inference"], _floor(baseline, floors),
                            uncertainty)
    return worth_confirming(min(counts) / baseline["per_inference"] - 1.0, uncertainty, applied)
