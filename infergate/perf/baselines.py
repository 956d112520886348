"""Baselines: the store (one JSON per machine type), its entries and their checks, the
machine fingerprint. The verdicts against them are ``infergate.perf.gate``'s.

Entries are keyed by the explicit tuple (model, backend, precision), never by test node ids.
Software versions are recorded inside each entry, not in the key, so an upgrade is judged
against the old numbers and the verdict says what changed.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path

from infergate import environment, machine_id
from infergate.atomic import atomic_write_text, folder_lock, remove_stale_temporaries

SCHEMA = "infergate.baseline/2"
FIGURES = {"absolute": "p50_ms", "normalised": "normalised"}  # gate figure -> process key


def machine() -> dict:
    """What the baseline is for: the hardware id and its components (not software)."""
    return machine_id.this_machine()


def key(model: str, backend: str, precision: str) -> str:
    return f"{model}/{backend}/{precision}"


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file."""


RETAKE = ("fix or delete it, or re-take it with `pytest "
          "--infergate-update-baselines` "
          "(an update moves an unreadable file aside and drops bad entries)")


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value) and value > 0


def entry_problems(entry) -> list[str]:
    """What is wrong with one baseline entry ([] when nothing): required figures present,
    finite and positive, per-process lists non-empty."""
    if not isinstance(entry, dict):
        return [f"is a {type(entry).__name__}, not an object"]
    problems = []
    latency = entry.get("latency")
    if latency is not None:
        processes = latency.get("processes") if isinstance(latency, dict) else None
        if not isinstance(processes, list) or not processes:
            problems.append("latency.processes must be a non-empty list")
        else:
            for i, process in enumerate(processes):
                for figure in FIGURES.values():
                    if not _positive(process.get(figure) if isinstance(process, dict) else None):
                        problems.append(f"latency.processes[{i}].{figure} must be a finite "
                                        f"positive number")
        for figure in FIGURES.values():
            if not _positive(latency.get(figure) if isinstance(latency, dict) else None):
                problems.append(f"latency.{figure} must be a finite positive number")
    memory = entry.get("memory")
    if memory is not None:
        problems += _memory_problems("memory", memory)
    counted = entry.get("instructions")
    if counted is not None:
        if not isinstance(counted, dict) or not _positive(counted.get("per_inference")):
            problems.append("instructions.per_inference must be a finite positive number")
        elif not (isinstance(counted.get("processes"), list) and counted["processes"]
                  and all(_positive(c) for c in counted["processes"])):
            problems.append("instructions.processes must be a non-empty list of finite "
                            "positive counts")
        elif "floor" in counted and not _positive(counted["floor"]):
            problems.append("instructions.floor must be a finite positive count")
    heap = entry.get("heap")
    if heap is not None:
        from infergate.perf.heap import problems as heap_problems

        problems += heap_problems(heap)
    device = entry.get("device")
    if device is not None:
        problems += device_problems(device)
    if latency is None and memory is None and counted is None and heap is None:
        problems.append("has no latency, memory or instructions figures")
    return problems


def device_problems(device) -> list[str]:
    """What is wrong with an entry's ``device`` figures (GPU backends): device time per
    process finite and positive, device memory finite and >= 0."""
    if not isinstance(device, dict):
        return ["device must be an object"]
    problems = []
    timed = device.get("time")
    if timed is not None:
        processes = timed.get("processes") if isinstance(timed, dict) else None
        if not (isinstance(processes, list) and processes and all(map(_positive, processes))):
            problems.append("device.time.processes must be a non-empty list of finite "
                            "positive milliseconds")
        if not _positive(timed.get("p50_ms") if isinstance(timed, dict) else None):
            problems.append("device.time.p50_ms must be a finite positive number")
    memory = device.get("memory")
    if memory is not None:
        problems += _memory_problems("device.memory", memory)
    return problems


def _memory_problems(where: str, memory) -> list[str]:
    """MB figures: finite and >= 0 (a model can add nothing measurable above its runtime)."""
    if not isinstance(memory, dict):
        return [f"{where} must be an object"]
    return [f"{where}.{name} must be a finite number >= 0" for name, value in memory.items()
            if not (value == 0 or _positive(value))]


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


class BaselineStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict:
        if not self.path.exists():
            return {"schema": SCHEMA, "machine": machine(), "entries": {}}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BaselineError(f"{self.path}: not readable JSON: {exc}; {RETAKE}") from None
        if not isinstance(data, dict):
            why = f"its top level is a JSON {_json_type(data)}, not an object"
        elif data.get("schema") != SCHEMA:
            why = f"its schema is {data.get('schema')!r}"
        elif not isinstance(data.get("entries"), dict):
            why = ("it has no 'entries'" if "entries" not in data else
                   f"its 'entries' is a JSON {_json_type(data['entries'])}, not an object of "
                   f"entries by model/backend/precision")
        else:
            return data
        raise BaselineError(f"{self.path}: not an {SCHEMA} file: {why}; {RETAKE}")

    def load(self) -> dict:
        """The file's content; every entry checked (a NaN or negative figure would silence
        or break the gate)."""
        data = self._read()
        bad = {k: why for k, e in data["entries"].items() if (why := entry_problems(e))}
        if bad:
            listed = "; ".join(f"entry {k!r}: {', '.join(why)}" for k, why in sorted(bad.items()))
            raise BaselineError(f"{self.path}: {listed}; {RETAKE}")
        return data

    def entry(self, model: str, backend: str, precision: str) -> dict | None:
        return self.load()["entries"].get(key(model, backend, precision))

    def merge(self, entries: dict[str, dict], describes: dict | None = None) -> dict:
        """Write ``entries`` over the stored ones, keeping the rest; atomic, and under the
        folder's lock, so concurrent updates of other entries all survive. ``describes`` is
        what the file is for (default: this machine). A file that cannot be read is moved
        aside (``data["moved_aside"]`` names where), and the update starts it afresh. A bad
        entry this update does not re-take is dropped (``data["dropped"]``: key -> why)."""
        with folder_lock(self.path.parent):
            remove_stale_temporaries(self.path)
            moved, dropped = None, {}
            try:
                data = self._read()
                # Bad entries are dropped: re-measured ones come back in ``entries``.
                dropped = {k: why for k, e in data["entries"].items()
                           if (why := entry_problems(e)) and k not in entries}
                data["entries"] = {k: e for k, e in data["entries"].items()
                                   if not entry_problems(e)}
            except BaselineError:
                moved = self.path.with_name(
                    f"{self.path.stem}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%S}.json")
                self.path.rename(moved)
                data = self.load()
            data["machine"] = describes or machine()
            data["entries"].update(entries)
            data["entries"] = dict(sorted(data["entries"].items()))
            atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
        return {**data, "moved_aside": str(moved) if moved else None, "dropped": dropped}

    def merge_notes(self, merged: dict) -> list[str]:
        """What a merge did beside writing its entries, for the terminal: a file moved aside,
        bad entries dropped."""
        notes = []
        if merged.get("moved_aside"):
            notes.append(f"infergate: {self.path} was not readable; moved aside to "
                         f"{merged['moved_aside']}, and the update started it afresh")
        for k, why in merged.get("dropped", {}).items():
            notes.append(f"infergate: dropped the bad entry {k!r} from {self.path} "
                         f"({', '.join(why)}); this update did not re-take it")
        return notes


EQUIVALENT_FILE = "equivalent.json"


def locate(directory: Path, identity: dict) -> tuple[BaselineStore, str]:
    """The store ``identity``'s machine is judged against, and a note saying why: its own
    ``<id>.json``, or the one ``<directory>/equivalent.json`` declares it equivalent to.

    That file is a fleet's statement, with a reason, that two ids run the same kernels
    at the same speed: ``{"<id>": {"use": "<other id>", "reason": "..."}}``."""
    directory = Path(directory)
    own = BaselineStore(directory / f"{identity['id']}.json")
    declared = directory / EQUIVALENT_FILE
    if own.path.exists() or not declared.exists():
        return own, ""
    try:
        table = json.loads(declared.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaselineError(f"{declared}: not readable JSON: {exc}") from None
    alias = table.get(identity["id"]) if isinstance(table, dict) else None
    if alias is None:
        return own, ""
    if not (isinstance(alias, dict) and isinstance(alias.get("use"), str)
            and str(alias.get("reason", "")).strip()):
        raise BaselineError(f"{declared}: entry {identity['id']!r} needs \"use\" (a machine "
                            f"id) and a non-empty \"reason\"")
    return (BaselineStore(directory / f"{alias['use']}.json"),
            f"baseline of {alias['use']}, declared equivalent in {declared}: {alias['reason']}")


def migrate(old_path: Path, cpuinfo: dict[str, str], directory: Path) -> Path:
    """Re-key a baseline taken under the old model-name id (which could not tell CPU
    generations apart) by the hardware it was taken on, as ``cpuinfo`` describes it.
    Writes ``<directory>/<new id>.json`` atomically and returns its path; the old file is
    left for the caller to delete (it is under version control)."""
    data = BaselineStore(old_path).load()
    old = data.get("machine", {})
    if "family" in old:
        raise BaselineError(f"{old_path}: already keyed by hardware ({old.get('id')})")
    identity = machine_id.identify(cpuinfo, int(old.get("cores") or 1),
                                   None if not old.get("gpu") else
                                   {"name": old["gpu"], "capability": "unknown"})
    data["machine"] = {**identity, "legacy_id": old.get("id"),
                       "migrated_from": old_path.name}
    target = Path(directory) / f"{identity['id']}.json"
    if target.exists():
        raise BaselineError(f"{target} exists: merge by hand or delete it first")
    atomic_write_text(target, json.dumps(data, indent=1) + "\n")
    return target


def middle_process(latencies: list[dict]) -> dict | None:
    """The process with the median normalised figure: an entry's headline figures."""
    ranked = sorted(latencies, key=lambda lat: lat["normalised"])
    return ranked[len(ranked) // 2] if ranked else None


def make_entry(processes: list[dict], threads: int, dims: dict) -> dict:
    """A baseline entry from the measurements of several fresh processes.

    The gate's statistics work on process-level figures (one per process): blocks within a
    process are not independent of each other, processes are.
    """
    latencies = [p["latency"] for p in processes]
    middle = middle_process(latencies)
    return {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "dims": dims,
        "libraries": environment.describe()["libraries"],
        "latency": {"p50_ms": middle["p50_ms"], "normalised": middle["normalised"],
                    "calibration": middle.get("calibration", ""),
                    "processes": [{k: lat[k] for k in FIGURES.values()} for lat in latencies]},
        # The median process's, per figure; a figure some process lacks (an A/B revision's
        # probe from before issue 11) is left out rather than made up.
        "memory": {name: statistics.median(p["memory"][name] for p in processes)
                   for name in MEMORY_FIGURES
                   if processes and all(name in p["memory"] for p in processes)},
        **({"device": device} if (device := device_entry(processes)) else {}),
    }


def device_entry(processes: list[dict]) -> dict | None:
    """A baseline entry's ``device`` figures from probes of a GPU backend: each process's
    device p50 (the gate's unit, as for host time) and the median process's device memory
    per figure; None when a process has none (a CPU backend, or a probe from before them)."""
    if not processes or not all("device" in p for p in processes):
        return None
    times = [p["device"]["time"]["device_p50_ms"] for p in processes]
    memories = [p["device"].get("memory", {}) for p in processes]
    return {"synchronization": processes[0]["device"].get("synchronization", ""),
            "time": {"p50_ms": statistics.median(times), "processes": times},
            "memory": {name: statistics.median(m[name] for m in memories)
                       for name in DEVICE_MEMORY_FIGURES if all(name in m for m in memories)}}


def now() -> str:
    """When an entry was recorded."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_note(baseline: dict) -> str:
    """What changed in the libraries since ``baseline`` (an entry) was taken, for messages."""
    now = environment.describe()["libraries"]
    changed = [f"{lib} {old}, now {now.get(lib, 'absent')}"
               for lib, old in sorted(baseline.get("libraries", {}).items())
               if now.get(lib) != old]
    return f"; baseline taken with {'; '.join(changed)}" if changed else ""


def pct(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0


# What a baseline entry stores under "memory" (MB). The gate judges the model's peak above the
# initialised runtime; the runtime's own cost and the old all-in peak are recorded beside it.
MODEL_MEMORY = "model_peak_mb"
MEMORY_FIGURES = (MODEL_MEMORY, "runtime_overhead_mb", "peak_rss_mb")


def _memory_text(entry: dict) -> str:
    memory = entry.get("memory", {})
    if MODEL_MEMORY in memory:
        runtime = memory.get("runtime_overhead_mb")
        return (f"model memory {memory[MODEL_MEMORY]:.1f} MB"
                + (f" (+ runtime {runtime:.1f} MB)" if runtime is not None else ""))
    return f"peak RSS {memory.get('peak_rss_mb', math.nan):.1f} MB (before the model figure)"


def _device_text(old: dict | None, new: dict) -> str:
    """A GPU entry's device p50 and device memory for ``diff`` ("" for a CPU entry)."""
    figures = []
    for entry in (old, new):
        device = (entry or {}).get("device") or {}
        p50 = (device.get("time") or {}).get("p50_ms")
        mb = (device.get("memory") or {}).get("model_device_mb")
        figures.append((p50, mb))
    (old_p50, old_mb), (new_p50, new_mb) = figures
    parts = []
    if new_p50 is not None:
        parts.append(f"device p50 {f'{old_p50:.3g} → ' if old_p50 else ''}{new_p50:.3g} ms")
    if new_mb is not None:
        parts.append(f"device memory {f'{old_mb:.1f} → ' if old_mb is not None else ''}"
                     f"{new_mb:.1f} MB")
    return "".join(f", {part}" for part in parts)


def diff(candidate: dict, current: dict) -> list[str]:
    """What merging ``candidate``'s entries into ``current`` would change, one line each."""
    lines = []
    old_entries = current.get("entries", {})
    for name, new in sorted(candidate.get("entries", {}).items()):
        old = old_entries.get(name)
        new_lat = new["latency"]
        if old is None:
            lines.append(f"+ {name}: p50 {new_lat['p50_ms']:.3g} ms, normalised "
                         f"{new_lat['normalised']:.4g}, {_memory_text(new)}"
                         f"{_device_text(None, new)} (new)")
            continue
        old_lat = old["latency"]
        old_mem, new_mem = old.get("memory", {}), new.get("memory", {})
        if MODEL_MEMORY in old_mem and MODEL_MEMORY in new_mem:
            memory = (f"model memory {old_mem[MODEL_MEMORY]:.1f} → {new_mem[MODEL_MEMORY]:.1f} "
                      f"MB")
        else:
            memory = f"{_memory_text(old)} → {_memory_text(new)}"
        lines.append(
            f"~ {name}: p50 {old_lat['p50_ms']:.3g} → {new_lat['p50_ms']:.3g} ms "
            f"({pct(new_lat['p50_ms'], old_lat['p50_ms']):+.0f} %), normalised "
            f"{old_lat['normalised']:.4g} → {new_lat['normalised']:.4g} "
            f"({pct(new_lat['normalised'], old_lat['normalised']):+.0f} %), {memory}"
            f"{_device_text(old, new)}")
    kept = sorted(set(old_entries) - set(candidate.get("entries", {})))
    if kept:
        lines.append(f"= {len(kept)} other entries kept unchanged")
    return lines


# Device figures of GPU backends (issue 16). Device time: the p50 of CUDA-event brackets per
# process, judged by the same interval rules as host latency. Device memory: what NVML saw the
# model add above the initialised runtime, and the framework allocator's own peak; each
# gated where both the baseline and the measurement have it.
DEVICE_MEMORY_FIGURES = ("model_device_mb", "allocator_peak_mb")


