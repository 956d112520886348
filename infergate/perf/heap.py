"""Peak heap bytes, accounted in the callgrind process: the portable memory figure.

The counting shim, preloaded, replaces malloc and its family with glibc's own plus two
counters (live bytes as malloc_usable_size reports them, and their high-water mark), so every
allocation of the runtime and the model is seen, C++ ``new`` and aligned buffers included.
Under valgrind's canned CPU the kernels, and so their workspaces, are the same on every host,
and one thread makes the order of allocations mostly fixed: on a quiet machine the figure
repeats to a few hundred bytes between processes. Two figures: while the runtime builds the
model (session, compile), and while the model runs (everything it holds then: weights, arena,
activations, outputs), each above the heap before the build. Resident memory (RSS, per
machine id) stays the nightly's.

Not as repeatable as the count: on a loaded machine ONNX Runtime's figures for a 10 MB model
landed in states up to 2.6 % apart (a timing-dependent allocation, not yet found), hence the
5 % default threshold and the judgement beyond the range of the baseline's processes.
"""

from __future__ import annotations

from infergate.perf.deterministic import (
    HEAP_THRESHOLD,
    decide,
    message,
    spread,
    undecided_reason,
)

FIGURES = {"run_peak_bytes": "while it runs", "build_peak_bytes": "while it is built"}
ORDER = ("regressed", "insufficient", "improved", "pass")  # the worst figure's status wins
MB = 2**20


def make_entry(replies: list[dict]) -> dict:
    """The heap part of a baseline entry: each figure's smallest process, and every process."""
    processes = [{k: r["heap"][k] for k in FIGURES} for r in replies]
    return {**{k: min(p[k] for p in processes) for k in FIGURES}, "processes": processes}


def problems(heap) -> list[str]:
    """What is wrong with an entry's ``heap`` part ([] when nothing): a zero, negative or NaN
    figure would silence the gate."""
    from infergate.perf.baselines import _positive

    if not isinstance(heap, dict):
        return ["heap must be an object"]
    found = [f"heap.{k} must be a finite positive number of bytes" for k in FIGURES
             if not _positive(heap.get(k))]
    processes = heap.get("processes")
    if not (isinstance(processes, list) and processes and all(
            isinstance(p, dict) and all(_positive(p.get(k)) for k in FIGURES)
            for p in processes)):
        found.append("heap.processes must be a non-empty list of objects with finite "
                     "positive figures")
    return found


def judge(label: str, current: list[dict], baseline: dict, *,
          threshold: float = HEAP_THRESHOLD,
          reason: str = "", version_note: str = ""):
    """Each heap figure of this run's processes (their minimum) against the range of the
    baseline's processes, by ``deterministic``'s rule with this run's own spread as the
    noise; the verdict is the worse of the two, its message has both."""
    from infergate.perf.gate import PerfVerdict

    parts, statuses, figures = [], [], {"threshold_pct": threshold * 100}
    undecided = ""
    for key, where in FIGURES.items():
        old_all = [p[key] for p in baseline.get("processes") or [baseline]]
        new_all = [c[key] for c in current]
        old, new = baseline[key], min(new_all)
        # Judged beyond the range the baseline's processes spanned: under load a runtime's
        # heap can land in states ~2.6 % apart (ONNX Runtime, a 10 MB model).
        reference = min(max(new, min(old_all)), max(old_all))  # the nearest end of the range
        uncertainty = spread(new_all) if len(new_all) > 1 else 0.0
        delta = new / reference - 1.0
        status = decide(delta, uncertainty, threshold)
        statuses.append(status)
        if status == "insufficient" and not undecided:
            undecided = f"{where}, {undecided_reason([reference], new_all, threshold)}: "
        figures.update({key: new, f"baseline_{key}": old, f"{key}_delta_pct": delta * 100,
                        f"{key}_noise_pct": uncertainty * 100,
                        f"{key}_spread_pct": spread(old_all) * 100})
        span = (f"{min(old_all) / MB:.2f}–{max(old_all) / MB:.2f}" if spread(old_all) > 1e-4
                else f"{old / MB:.2f}")
        parts.append(f"{where} {delta * 100:+.2f} % ({span} → {new / MB:.2f} MB)")
    status = min(statuses, key=ORDER.index)
    figures["delta_pct"] = figures["run_peak_bytes_delta_pct"]
    note = version_note + (f" ({reason})" if reason else "")
    text = f"peak heap {'; '.join(parts)}, threshold {threshold * 100:g} %"
    return PerfVerdict(label, status, message(status, label, text + note, undecided), figures)
