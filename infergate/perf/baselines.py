"""Baselines: store (one JSON per machine type), machine fingerprint, and the gate.

Entries are keyed by the explicit tuple (model, backend, precision), never by test node ids.
Software versions are recorded inside each entry, not in the key, so an upgrade is judged
against the old numbers and the verdict says what changed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from infergate import environment, machine_id
from infergate.atomic import atomic_write_text, folder_lock, remove_stale_temporaries

SCHEMA = "infergate.baseline/2"
# Of the interval of the ratio current / baseline. A smoke run gates a dozen combinations: at
# 99.9 % a run of unchanged code goes red by chance about once in 150 runs, not once in 15.
CONFIDENCE = 0.999
MIN_SPREAD = 0.005  # processes are never trusted to agree better than 0.5 %
# Weight (degrees of freedom) of the machine-wide scatter against a combination's own: a weak
# prior, because combinations differ - on this machine type one scatters 1 % between
# processes, another 8 % - and a strong one would blur both into the average.
PRIOR_DOF = 4
# Confirmation processes while a verdict is open. Against a stored baseline more cannot beat
# the between-run spread: 5 in all is where it stops paying. A/B has no run spread: 9 pairs
# decide +10 % at 3 % process scatter.
CONFIRM = 4
CONFIRM_AB = 8
FIGURES = {"absolute": "p50_ms", "normalised": "normalised"}  # gate figure -> process key
# Slack on the model's memory (peak RSS above the initialised runtime, issue 11). It was 16 MB
# when the figure also held the latency yardstick's 20 MB and the runtime's start-up, which
# moved by 17-25 MB between CI runners. Left on the model's own figure (1-9 MB for the small
# models, measured on an Intel Xeon 2-core guest): between-process scatter <= 1.1 MB, malloc
# on huge pages (as on a THP=always host) moves it <= 1.6 MB, the kernels' code by ISA ~1 MB.
MEMORY_SLACK_MB = 4.0


def machine() -> dict:
    """What the baseline is for: the hardware id and its components (not software)."""
    return machine_id.this_machine()


def key(model: str, backend: str, precision: str) -> str:
    return f"{model}/{backend}/{precision}"


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file."""


RETAKE = ("fix or delete it, or re-take it with `pytest suites/performance "
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
    device = entry.get("device")
    if device is not None:
        problems += device_problems(device)
    if latency is None and memory is None and counted is None:
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
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or \
                not isinstance(data.get("entries"), dict):
            schema = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise BaselineError(f"{self.path}: not an {SCHEMA} file (schema {schema!r}); "
                                f"{RETAKE}")
        return data

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
        aside (``data["moved_aside"]`` names where), and the update starts it afresh."""
        with folder_lock(self.path.parent):
            remove_stale_temporaries(self.path)
            moved = None
            try:
                data = self._read()
                # Bad entries are dropped: re-measured ones come back in ``entries``.
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
        return {**data, "moved_aside": str(moved) if moved else None}


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


@dataclass(frozen=True)
class PerfVerdict:
    """Truthy unless regressed (or insufficient under --infergate-perf-strict); str() is the
    message."""

    label: str
    status: str  # pass | regressed | improved | insufficient | no-baseline
    message: str
    figures: dict = field(default_factory=dict)
    strict: bool = False

    def __bool__(self) -> bool:
        return not (self.status == "regressed" or (self.strict and self.status == "insufficient"))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"<PerfVerdict {self.status}: {self.label}>"

    def as_dict(self) -> dict:
        return {"status": self.status, "message": self.message, **self.figures}


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


def _pct(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0


@dataclass(frozen=True)
class Spread:
    """Between-process spread of a figure, as the standard deviation of its logarithm, with
    its degrees of freedom: what one fresh process's figure scatters by on this machine."""

    sd: float
    dof: int


def pooled_spread(entries: dict, figure: str, floor_ms: float = 0.0) -> Spread:
    """The machine-wide between-process spread of ``figure`` over every baseline entry measured
    in two or more processes (entries whose p50 is under ``floor_ms`` are left out: their
    scatter is not what a gated combination sees)."""
    return _pooled([p[FIGURES[figure]] for p in entry["latency"]["processes"]]
                   for entry in entries.values()
                   if entry.get("latency") and entry["latency"]["p50_ms"] >= floor_ms)


def _pooled(groups) -> Spread:
    """Pooled standard deviation of the logarithm within each group of two or more values."""
    squares, dof = 0.0, 0
    for values in groups:
        if len(values) < 2:
            continue
        logs = [math.log(v) for v in values]
        mean = statistics.fmean(logs)
        squares += sum((x - mean) ** 2 for x in logs)
        dof += len(logs) - 1
    return Spread(math.sqrt(squares / dof) if dof else 0.0, dof)


@dataclass(frozen=True)
class Comparison:
    """Current processes against baseline processes, for one figure, on the log scale."""

    figure: str
    old: float  # geometric means
    new: float
    ci_low: float  # ratio new / old
    ci_high: float
    p_slower: float
    p_faster: float
    processes: tuple[int, int]  # (current, baseline)
    floor_half: float  # half-width (log scale) the interval keeps with endless current processes

    @property
    def delta_pct(self) -> float:
        return _pct(self.new, self.old)

    def resolvable(self, limit: float) -> bool:
        """Could more current processes ever tell "no change" from ``limit``? Not when the
        baseline's own uncertainty and the between-run spread already keep both inside."""
        d = math.log(self.new / self.old)
        return d - self.floor_half > 0 or d + self.floor_half < math.log(limit)

    def as_dict(self) -> dict:
        return {f"{self.figure}_{k}": v for k, v in (
            ("old", self.old), ("new", self.new), ("delta_pct", self.delta_pct),
            ("ci_low", self.ci_low), ("ci_high", self.ci_high), ("p_slower", self.p_slower),
            ("p_faster", self.p_faster))}


def compare(figure: str, current: list[float], baseline: list[float], prior: Spread,
            run_spread: float = 0.0) -> Comparison:
    """Pooled-variance t interval of the log ratio. The spread pools this combination's own
    processes (current and baseline) with the machine-wide prior (at most PRIOR_DOF degrees
    of freedom), so a combination whose few processes happened to agree is not trusted on
    that alone. ``run_spread`` adds the scatter between whole runs (another runner of the
    same type, another day), which no number of processes in one run averages away."""
    from scipy.stats import t

    x, y = [math.log(v) for v in current], [math.log(v) for v in baseline]
    squares = (sum((v - statistics.fmean(x)) ** 2 for v in x)
               + sum((v - statistics.fmean(y)) ** 2 for v in y))
    weight = min(prior.dof, PRIOR_DOF)
    dof = weight + len(x) + len(y) - 2
    sd = max(math.sqrt((weight * prior.sd ** 2 + squares) / dof) if dof else 0.0, MIN_SPREAD)
    dof = max(dof, 1)
    se = math.sqrt(sd ** 2 * (1 / len(x) + 1 / len(y)) + run_spread ** 2)
    d = statistics.fmean(x) - statistics.fmean(y)
    quantile = t.ppf(1 - (1 - CONFIDENCE) / 2, dof)
    half = quantile * se
    return Comparison(figure, math.exp(statistics.fmean(y)), math.exp(statistics.fmean(x)),
                      math.exp(d - half), math.exp(d + half), float(t.sf(d / se, dof)),
                      float(t.cdf(d / se, dof)), (len(x), len(y)),
                      quantile * math.sqrt(sd ** 2 / len(y) + run_spread ** 2))


def judge_latency(label: str, current: list[dict], baseline: dict, *, threshold: float = 0.10,
                  mode: str = "normalised", strict: bool = False, reason: str = "",
                  priors: dict[str, Spread] | None = None,
                  run_spread: float = 0.0, against: str | None = None) -> PerfVerdict:
    """Judge the figures of ``current`` fresh processes against the baseline's processes
    (or, with ``against`` naming it, a revision's processes measured in this run).

    Regressed: significantly slower (the whole CONFIDENCE interval of the ratio is above 1)
    and a slowdown of the threshold's size is not ruled out (the interval reaches it), so an
    estimate that lands at +9.6 % for a real +10 % change still fails. Insufficient: the
    interval holds both "no change" and "threshold-sized slowdown". Improved: the mirror of
    regressed. Otherwise pass.
    """
    priors = priors or {}
    gated = ["absolute", "normalised"] if mode == "both" else [mode]
    old_processes = baseline["latency"]["processes"]
    yardstick = {baseline["latency"].get("calibration")} | {c.get("calibration") for c in current}
    if "normalised" in gated and len(yardstick) > 1:
        return PerfVerdict(label, "insufficient",
                           f"{label} insufficient: the baseline's normalised figures were taken "
                           f"with another calibration workload ({' vs '.join(map(str, yardstick))}"
                           f"); re-take the baseline with --infergate-update-baselines", {}, strict)
    checks = {name: compare(name, [c[FIGURES[name]] for c in current],
                            [p[FIGURES[name]] for p in old_processes],
                            priors.get(name, Spread(0.0, 0)), run_spread)
              for name in FIGURES}
    limit = 1 + threshold
    figures = {"mode": mode, "threshold_pct": threshold * 100, "run_spread_pct": run_spread * 100,
               "processes": len(current),
               "baseline_processes": len(old_processes)}
    for c in checks.values():
        figures.update(c.as_dict())
    tol = f"threshold {threshold * 100:.0f} %"

    def line(c: Comparison) -> str:
        fmt, unit = ("{:.3g}", "ms") if c.figure == "absolute" else ("{:.4g}", "x calibration")
        p = c.p_faster if c.delta_pct < 0 else c.p_slower
        return (f"{'p50' if c.figure == 'absolute' else 'normalised p50'} {c.delta_pct:+.0f} % "
                f"({fmt.format(c.old)} → {fmt.format(c.new)} {unit}, {CONFIDENCE * 100:g} % CI "
                f"{_pct(c.ci_low, 1):+.0f}…{_pct(c.ci_high, 1):+.0f} %, p={p:.2g}, {tol})")

    summary = "; ".join(line(checks[n]) for n in gated)
    other = [n for n in FIGURES if n not in gated]
    context = f" [{line(checks[other[0]])}, not gated]" if other else ""
    counted = (f" ({len(current)} fresh process{'es' * (len(current) > 1)} vs "
               f"{len(old_processes)} " + (f"of {against}, alternating in this run)" if against
                                           else "in the baseline)"))
    note = version_note(baseline) + (f" ({reason})" if reason else "")
    g = [checks[n] for n in gated]
    figures["delta_pct"] = max(c.delta_pct for c in g)  # the gated figure's change (reports)
    if all(c.ci_low > 1 and c.ci_high > limit for c in g):
        return PerfVerdict(label, "regressed", f"{label} {summary}{context}{counted}{note}",
                           figures, strict)
    if any(c.ci_low <= 1 and c.ci_high >= limit for c in g):
        figures["resolvable"] = all(c.resolvable(limit) for c in g)
        # What this runner could decide: a slowdown whose whole interval clears "no change".
        decidable = max(_pct(c.ci_high * c.old / c.new, 1) for c in g)
        figures["decidable_pct"] = decidable
        return PerfVerdict(label, "insufficient",
                           f"{label} insufficient data (the interval holds both no change and a "
                           f"threshold-sized slowdown; this run could decide slowdowns beyond "
                           f"about +{decidable:.0f} %): {summary}{counted}{note}", figures, strict)
    if all(c.ci_high < 1 and c.ci_low < 1 / limit for c in g):
        better = f" on {against}" if against else ", consider updating the baseline"
        return PerfVerdict(label, "improved", f"{label} improved{better}: {summary}"
                           f"{context}{counted}{note}", figures, strict)
    return PerfVerdict(label, "pass", f"{label} {summary}{context}{counted}{note}", figures,
                       strict)


def judge_processes(label: str, processes: list[dict], another: Callable[[], dict],
                    baseline: dict, *, confirm: int = CONFIRM, **kw) -> PerfVerdict:
    """``judge_latency`` on ``processes`` (latency dicts, appended to in place). While the
    verdict is undecided or regressed, measure another process with ``another()`` (at most
    ``confirm`` more) and judge them all again: the unit of replication is the process, and
    more of them narrow the interval. It stops early on pass or improved, or when no number of
    processes could decide; a regression is always judged on every process, so looking
    several times does not add false alarms."""
    verdict = judge_latency(label, processes, baseline, **kw)
    while (verdict.status == "regressed" or (verdict.status == "insufficient"
                                             and verdict.figures.get("resolvable", True))) \
            and len(processes) < 1 + confirm:
        processes.append(another())
        verdict = judge_latency(label, processes, baseline, **kw)
    return verdict


def judge_alternating(label: str, current: list[dict], reference: list[dict],
                      measure_current: Callable[[], dict], measure_reference: Callable[[], dict],
                      *, against: str, threads: int, dims: dict, confirm: int = CONFIRM_AB,
                      threshold: float = 0.10, mode: str = "normalised", **kw) -> PerfVerdict:
    """A/B: ``current`` probe results against ``reference`` ones (another revision), both
    appended to in place, measured alternately in this run, so no between-run spread enters
    the interval. Pairs are added in ABBA order while the verdict is regressed or undecided,
    up to ``1 + confirm`` a side; it stops early once even that many pairs could not narrow
    the interval below the threshold at the scatter seen so far. A regression is judged on
    every pair. No machine-wide prior: the t quantile already pays for estimating the
    scatter from few pairs, and both sides come from the same minutes."""
    from scipy.stats import t

    if not reference:
        reference.append(measure_reference())
    pairs = 1 + confirm
    gated = ["absolute", "normalised"] if mode == "both" else [mode]

    def judge() -> PerfVerdict:
        return judge_latency(label, [c["latency"] for c in current],
                             make_entry(reference, threads, dims), against=against,
                             run_spread=0.0, threshold=threshold, mode=mode, **kw)

    def hopeless(verdict: PerfVerdict) -> bool:
        n = len(current)
        if verdict.status != "insufficient" or n < 3:
            return False
        f = verdict.figures
        projected = max(math.log(f[f"{g}_ci_high"] / f[f"{g}_ci_low"]) / 2 for g in gated) \
            * t.ppf(1 - (1 - CONFIDENCE) / 2, 2 * pairs - 2) \
            / t.ppf(1 - (1 - CONFIDENCE) / 2, 2 * n - 2) * math.sqrt(n / pairs)
        return projected > math.log(1 + threshold)

    verdict = judge()
    while (verdict.status in ("regressed", "insufficient") and len(current) < pairs
           and not hopeless(verdict)):
        # Drift during the pairs then hits both sides alike.
        first, second = ((measure_reference, measure_current) if len(current) % 2
                         else (measure_current, measure_reference))
        for measure in (first, second):
            (reference if measure is measure_reference else current).append(measure())
        verdict = judge()
    return verdict


# What a baseline entry stores under "memory" (MB). The gate judges the model's peak above the
# initialised runtime; the runtime's own cost and the old all-in peak are recorded beside it.
MODEL_MEMORY = "model_peak_mb"
MEMORY_FIGURES = (MODEL_MEMORY, "runtime_overhead_mb", "peak_rss_mb")
OUTDATED = "outdated-baseline"


def outdated_memory_note(label: str, baseline: dict) -> str | None:
    """Why ``baseline`` (an entry) cannot gate memory: it was taken before the model-memory
    figure existed, so its one figure also counts the runtime's host-dependent start-up.
    None when it can."""
    if MODEL_MEMORY in baseline.get("memory", {}):
        return None
    old = baseline.get("memory", {}).get("peak_rss_mb")
    held = f" (it holds only peak RSS above the post-import state, {old:.1f} MB)" if old else ""
    return (f"{label}: the baseline entry predates the model-memory figure{held}, which also "
            f"counts the runtime's host-dependent start-up: not compared. Re-take it on this "
            f"machine type with `pytest suites/performance --infergate-update-baselines`.")


def judge_memory(label: str, measured: dict, baseline: dict, *, threshold: float = 0.10,
                 slack_mb: float = MEMORY_SLACK_MB, reason: str = "") -> PerfVerdict:
    """Judge a probe's ``measured`` memory figures against ``baseline`` (an entry): its
    model figure (peak RSS above the initialised runtime) may grow by ``threshold`` plus
    ``slack_mb``. The runtime's overhead is reported, never gated: it moves with the host.
    A baseline from before the model figure gives status ``outdated-baseline`` (truthy; the
    test skips with the message): two definitions are never compared."""
    new, runtime = measured[MODEL_MEMORY], measured.get("runtime_overhead_mb")
    figures = {MODEL_MEMORY: new, "runtime_overhead_mb": runtime,
               "peak_rss_mb": measured.get("peak_rss_mb")}
    stale = outdated_memory_note(label, baseline)
    if stale:
        current = (f" Measured now: model {new:.1f} MB above the initialised runtime"
                   + (f", runtime overhead {runtime:.1f} MB." if runtime is not None else "."))
        return PerfVerdict(label, OUTDATED, stale + current, figures)
    old = baseline["memory"][MODEL_MEMORY]
    old_runtime = baseline["memory"].get("runtime_overhead_mb")
    limit = old * (1 + threshold) + slack_mb
    delta = _pct(new, old) if old else math.inf
    figures.update({"baseline_mb": old, "delta_pct": delta, "limit_mb": limit,
                    "baseline_runtime_overhead_mb": old_runtime})
    note = version_note(baseline) + (f" ({reason})" if reason else "")
    overhead = ""
    if runtime is not None:
        was = f", baseline {old_runtime:.1f} MB" if old_runtime is not None else ""
        overhead = f"; runtime overhead {runtime:.1f} MB{was}, not gated"
    text = (f"model memory {delta:+.0f} % ({old:.1f} → {new:.1f} MB above the initialised "
            f"runtime, limit {limit:.1f} MB = +{threshold * 100:.0f} % + {slack_mb:g} MB"
            f"{overhead})")
    if new > limit:
        return PerfVerdict(label, "regressed", f"{label} {text}{note}", figures)
    if new < old * (1 - threshold) - slack_mb:
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {text}{note}",
                           figures)
    return PerfVerdict(label, "pass", f"{label} {text}{note}", figures)


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
            f"({_pct(new_lat['p50_ms'], old_lat['p50_ms']):+.0f} %), normalised "
            f"{old_lat['normalised']:.4g} → {new_lat['normalised']:.4g} "
            f"({_pct(new_lat['normalised'], old_lat['normalised']):+.0f} %), {memory}"
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
# NVML hands out 2 MB pages and torch's allocator grows in 2 MB (small) and 20 MB (large)
# segments: a model's device figure moves by a segment without any change of its own.
DEVICE_MEMORY_SLACK_MB = 20.0
NO_DEVICE_BASELINE = "no-device-baseline"


def pooled_device_spread(entries: dict) -> Spread:
    """The machine-wide between-process spread of device time (log scale) over every entry
    with device time from two or more processes: the device gate's prior."""
    return _pooled(((entry.get("device") or {}).get("time") or {}).get("processes", [])
                   for entry in entries.values())


def judge_device_time(label: str, current_ms: list[float], baseline: dict, *,
                      threshold: float = 0.10, strict: bool = False, reason: str = "",
                      prior: Spread = Spread(0.0, 0), run_spread: float = 0.0) -> PerfVerdict:
    """Judge the device p50 of ``current_ms`` fresh processes against ``baseline``'s (an
    entry): regressed when the whole CONFIDENCE interval of the ratio is above 1 and reaches
    the threshold, insufficient when it holds both, improved in mirror, else pass (the host
    latency gate's rules). A baseline without device figures gives ``no-device-baseline``."""
    old = (baseline.get("device") or {}).get("time")
    if not old:
        return PerfVerdict(label, NO_DEVICE_BASELINE,
                           f"{label}: the baseline entry has no device time (taken before "
                           f"device figures, or on another backend version); re-take it with "
                           f"`pytest suites/performance --infergate-update-baselines`", {}, strict)
    c = compare("device", current_ms, old["processes"], prior, run_spread)
    limit = 1 + threshold
    p = c.p_faster if c.delta_pct < 0 else c.p_slower
    text = (f"device p50 {c.delta_pct:+.0f} % ({c.old:.3g} → {c.new:.3g} ms, "
            f"{CONFIDENCE * 100:g} % CI {_pct(c.ci_low, 1):+.0f}…{_pct(c.ci_high, 1):+.0f} %, "
            f"p={p:.2g}, threshold {threshold * 100:.0f} %) ({len(current_ms)} fresh "
            f"process{'es' * (len(current_ms) > 1)} vs {len(old['processes'])} in the "
            f"baseline)" + version_note(baseline) + (f" ({reason})" if reason else ""))
    figures = {"device_p50_ms": c.new, "baseline_device_p50_ms": c.old,
               "delta_pct": c.delta_pct, "ci_low": c.ci_low, "ci_high": c.ci_high,
               "threshold_pct": threshold * 100, "processes": len(current_ms)}
    if c.ci_low > 1 and c.ci_high > limit:
        return PerfVerdict(label, "regressed", f"{label} {text}", figures, strict)
    if c.ci_low <= 1 and c.ci_high >= limit:
        return PerfVerdict(label, "insufficient", f"{label} insufficient data (the interval "
                           f"holds both no change and a threshold-sized slowdown): {text}",
                           figures, strict)
    if c.ci_high < 1 and c.ci_low < 1 / limit:
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {text}",
                           figures, strict)
    return PerfVerdict(label, "pass", f"{label} {text}", figures, strict)


def judge_device_memory(label: str, measured: dict, baseline: dict, *,
                        threshold: float = 0.10, slack_mb: float = DEVICE_MEMORY_SLACK_MB,
                        reason: str = "") -> PerfVerdict:
    """Judge a probe's device ``measured`` memory figures against ``baseline`` (an entry):
    each of DEVICE_MEMORY_FIGURES both have may grow by ``threshold`` plus ``slack_mb``."""
    old = (baseline.get("device") or {}).get("memory") or {}
    shared = [name for name in DEVICE_MEMORY_FIGURES if name in old and name in measured]
    figures = {name: measured.get(name) for name in DEVICE_MEMORY_FIGURES}
    if not shared:
        now = [name for name in DEVICE_MEMORY_FIGURES if name in measured]
        return PerfVerdict(label, NO_DEVICE_BASELINE,
                           f"{label}: no device memory figure in both the baseline entry "
                           f"({', '.join(old) or 'none'}) and this measurement "
                           f"({', '.join(now) or 'none'}); re-take the baseline with "
                           f"`pytest suites/performance --infergate-update-baselines`", figures)
    parts, regressed, improved = [], [], []
    for name in shared:
        new, was = measured[name], old[name]
        limit = was * (1 + threshold) + slack_mb
        delta = _pct(new, was) if was else (0.0 if new == 0 else math.inf)
        figures.update({f"baseline_{name}": was, f"{name}_delta_pct": delta,
                        f"{name}_limit": limit})
        parts.append(f"{name.removesuffix('_mb').replace('_', ' ')} {delta:+.0f} % "
                     f"({was:.1f} → {new:.1f} MB, limit {limit:.1f} MB)")
        if new > limit:
            regressed.append(name)
        elif new < was * (1 - threshold) - slack_mb:
            improved.append(name)
    figures["delta_pct"] = figures[f"{shared[0]}_delta_pct"]  # the headline figure's change
    text = (f"device memory: {'; '.join(parts)} (+{threshold * 100:.0f} % + {slack_mb:g} MB "
            f"allowed)" + version_note(baseline) + (f" ({reason})" if reason else ""))
    if regressed:
        return PerfVerdict(label, "regressed", f"{label} {text}", figures)
    if improved:
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {text}", figures)
    return PerfVerdict(label, "pass", f"{label} {text}", figures)
