"""The performance gate's verdicts: latency (process-to-process spread, confidence intervals,
confirmation processes, A/B), memory and device figures, against a stored baseline entry
(``infergate.perf.baselines``) or another revision's processes."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from infergate.perf.baselines import (
    DEVICE_MEMORY_FIGURES,
    FIGURES,
    MODEL_MEMORY,
    make_entry,
    pct,
    version_note,
)

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


# Slack on the model's memory (peak RSS above the initialised runtime, issue 11). It was 16 MB
# when the figure also held the latency yardstick's 20 MB and the runtime's start-up, which
# moved by 17-25 MB between CI runners. Left on the model's own figure (1-9 MB for the small
# models, measured on an Intel Xeon 2-core guest): between-process scatter <= 1.1 MB, malloc
# on huge pages (as on a THP=always host) moves it <= 1.6 MB, the kernels' code by ISA ~1 MB.
MEMORY_SLACK_MB = 4.0


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
        return pct(self.new, self.old)

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
    if len(current) + len(old_processes) < 3 and not any(
            priors.get(n, Spread(0.0, 0)).dof for n in gated):
        return PerfVerdict(label, "insufficient",
                           f"{label} insufficient: one process here and one in the baseline, and "
                           f"no other entry of this machine to learn the spread from between "
                           f"processes, so no interval can be drawn; a baseline of several "
                           f"processes (--infergate-baseline-processes, default 5) can be judged",
                           {"processes": len(current), "baseline_processes": len(old_processes)},
                           strict)
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
                f"{pct(c.ci_low, 1):+.0f}…{pct(c.ci_high, 1):+.0f} %, p={p:.2g}, {tol})")

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
        decidable = max(pct(c.ci_high * c.old / c.new, 1) for c in g)
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
            f"machine type with `pytest --infergate-update-baselines`.")


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
    delta = pct(new, old) if old else math.inf
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
                           f"`pytest --infergate-update-baselines`", {}, strict)
    c = compare("device", current_ms, old["processes"], prior, run_spread)
    limit = 1 + threshold
    p = c.p_faster if c.delta_pct < 0 else c.p_slower
    text = (f"device p50 {c.delta_pct:+.0f} % ({c.old:.3g} → {c.new:.3g} ms, "
            f"{CONFIDENCE * 100:g} % CI {pct(c.ci_low, 1):+.0f}…{pct(c.ci_high, 1):+.0f} %, "
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
                           f"`pytest --infergate-update-baselines`", figures)
    parts, regressed, improved = [], [], []
    for name in shared:
        new, was = measured[name], old[name]
        limit = was * (1 + threshold) + slack_mb
        delta = pct(new, was) if was else (0.0 if new == 0 else math.inf)
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
