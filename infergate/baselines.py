"""Baselines: store (one JSON per machine type), machine fingerprint, and the gate.

Entries are keyed by the explicit tuple (model, backend, precision), never by test node ids.
Software versions are recorded inside each entry, not in the key, so an upgrade is judged
against the old numbers and the verdict says what changed.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from infergate import environment
from infergate.atomic import atomic_write_text

SCHEMA = "infergate.baseline/1"
ALPHA = 0.01  # significance level for "the slowdown is real"
CONFIDENCE = 0.99  # of the bootstrap interval of the median ratio (current / baseline)
MIN_SAMPLES = 10
MEMORY_SLACK_MB = 16.0  # allocator and page-granularity jitter on small models


def machine() -> dict:
    """What the baseline is for: CPU model, core count, GPU model (not software)."""
    cpu, cores, gpu = environment.cpu_model(), environment.cpu_count(), environment.gpu_model()
    slug = re.sub(r"[^a-z0-9]+", "-", f"{cpu} {cores}c {gpu or 'nogpu'}".lower()).strip("-")
    return {"id": slug, "cpu": cpu, "cores": cores, "gpu": gpu}


def key(model: str, backend: str, precision: str) -> str:
    return f"{model}/{backend}/{precision}"


class BaselineError(ValueError):
    """A baseline file that cannot be used; the message names the file."""


class BaselineStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict:
        if not self.path.exists():
            return {"schema": SCHEMA, "machine": machine(), "entries": {}}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BaselineError(f"{self.path}: not readable JSON: {exc}") from None
        if data.get("schema") != SCHEMA or not isinstance(data.get("entries"), dict):
            raise BaselineError(f"{self.path}: not an {SCHEMA} file (schema "
                                f"{data.get('schema')!r})")
        return data

    def entry(self, model: str, backend: str, precision: str) -> dict | None:
        return self.load()["entries"].get(key(model, backend, precision))

    def merge(self, entries: dict[str, dict]) -> dict:
        """Write ``entries`` over the stored ones, keeping the rest; atomic."""
        data = self.load()
        data["machine"] = machine()
        data["entries"].update(entries)
        data["entries"] = dict(sorted(data["entries"].items()))
        atomic_write_text(self.path, json.dumps(data, indent=1) + "\n")
        return data


def make_entry(measurement: dict, threads: int, dims: dict) -> dict:
    """A baseline entry from a probe measurement (raw samples kept for the statistics)."""
    latency = measurement["latency"]
    return {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "dims": dims,
        "libraries": environment.describe()["libraries"],
        "latency": {k: latency[k] for k in ("p50_ms", "normalised", "calibration_p50_ms",
                                            "samples_ms", "normalised_samples")},
        "memory": {"peak_rss_mb": measurement["memory"]["peak_rss_mb"]},
    }


@dataclass(frozen=True)
class PerfVerdict:
    """Truthy unless regressed (or insufficient under --perf-strict); str() is the message."""

    label: str
    status: str  # pass | regressed | improved | insufficient | unstable | no-baseline
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


def _version_note(baseline: dict) -> str:
    now = environment.describe()["libraries"]
    changed = [f"{lib} {old}, now {now.get(lib, 'absent')}"
               for lib, old in sorted(baseline.get("libraries", {}).items())
               if now.get(lib) != old]
    return f"; baseline taken with {'; '.join(changed)}" if changed else ""


def _pct(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0


def judge_latency(label: str, current: dict, baseline: dict | None, *, threshold: float = 0.10,
                  mode: str = "normalised", strict: bool = False,
                  reason: str = "") -> PerfVerdict:
    """Regressed only when the slowdown exceeds ``threshold`` AND is significant (one-sided
    Mann-Whitney U, p < ALPHA) on the gated figure(s), or when the whole bootstrap interval of
    the median ratio lies past the threshold. Insufficient when that interval is wider than
    the threshold (too noisy to tell) or samples are too few."""
    from scipy.stats import mannwhitneyu

    abs_new, abs_old = current["samples_ms"], baseline["latency"]["samples_ms"]
    norm_new, norm_old = current["normalised_samples"], baseline["latency"]["normalised_samples"]
    figures = {"mode": mode, "threshold_pct": threshold * 100}
    checks = {}
    for name, new, old, unit in (("absolute", abs_new, abs_old, "ms"),
                                 ("normalised", norm_new, norm_old, "x calibration")):
        new_p50, old_p50 = statistics.median(new), statistics.median(old)
        delta = _pct(new_p50, old_p50)
        slower = mannwhitneyu(new, old, alternative="greater").pvalue
        faster = mannwhitneyu(new, old, alternative="less").pvalue
        checks[name] = {"old": old_p50, "new": new_p50, "delta_pct": delta,
                        "p_slower": float(slower), "p_faster": float(faster), "unit": unit,
                        "new_samples": new, "old_samples": old}
    figures.update({f"{k}_{f}": v for k, c in checks.items() for f, v in c.items()
                    if f not in ("unit", "new_samples", "old_samples")})
    gated = ["absolute", "normalised"] if mode == "both" else [mode]
    note = _version_note(baseline) + (f" ({reason})" if reason else "")
    tol = f"threshold {threshold * 100:.0f} %"

    def line(name):
        c = checks[name]
        fmt = "{:.3g}" if c["unit"] == "ms" else "{:.4g}"
        p = min(c["p_slower"], c["p_faster"]) if c["delta_pct"] < 0 else c["p_slower"]
        return (f"{'p50' if name == 'absolute' else 'normalised p50'} {c['delta_pct']:+.0f} % "
                f"({fmt.format(c['old'])} → {fmt.format(c['new'])} {c['unit']}, p={p:.2g}, {tol})")

    for name in gated:
        lo, hi = ratio_interval(checks[name]["new_samples"], checks[name]["old_samples"])
        checks[name].update(ci_low=lo, ci_high=hi)
        figures.update({f"{name}_ci_low": lo, f"{name}_ci_high": hi})
    summary = "; ".join(line(n) for n in gated)
    other = [n for n in ("normalised", "absolute") if n not in gated]
    context = f" [{line(other[0])}, not gated]" if other else ""
    limit = 1 + threshold
    few = min(len(norm_new), len(norm_old), len(abs_new), len(abs_old)) < MIN_SAMPLES
    # Decisive even when noisy: the whole confidence interval is past the threshold.
    clearly_slower = all(checks[n]["ci_low"] > limit for n in gated)
    # Too noisy to tell a threshold-sized change from none: the interval is wider than it.
    unresolved = [n for n in gated if checks[n]["ci_high"] - checks[n]["ci_low"] > threshold]
    if few or (unresolved and not clearly_slower):
        why = ("too few samples" if few else
               f"the {CONFIDENCE:.0%} interval of the {' and '.join(unresolved)} ratio is wider "
               f"than the threshold")
        return PerfVerdict(label, "insufficient", f"{label} insufficient data ({why}): "
                           f"{summary}{note}", figures, strict)
    regressed = clearly_slower or all(
        checks[n]["delta_pct"] > threshold * 100 and checks[n]["p_slower"] < ALPHA for n in gated)
    improved = all(checks[n]["delta_pct"] < -threshold * 100 and checks[n]["p_faster"] < ALPHA
                   for n in gated)
    if regressed:
        return PerfVerdict(label, "regressed", f"{label} {summary}{context}{note}", figures,
                           strict)
    if improved:
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {summary}"
                           f"{context}{note}", figures, strict)
    return PerfVerdict(label, "pass", f"{label} {summary}{context}{note}", figures, strict)


def judge_memory(label: str, peak_mb: float, baseline: dict | None, *, threshold: float = 0.10,
                 slack_mb: float = MEMORY_SLACK_MB, reason: str = "") -> PerfVerdict:
    old = baseline["memory"]["peak_rss_mb"]
    limit = old * (1 + threshold) + slack_mb
    delta = _pct(peak_mb, old) if old else math.inf
    figures = {"peak_rss_mb": peak_mb, "baseline_mb": old, "delta_pct": delta,
               "limit_mb": limit}
    note = _version_note(baseline) + (f" ({reason})" if reason else "")
    text = (f"peak RSS {delta:+.0f} % ({old:.1f} → {peak_mb:.1f} MB, limit {limit:.1f} MB = "
            f"+{threshold * 100:.0f} % + {slack_mb:g} MB)")
    if peak_mb > limit:
        return PerfVerdict(label, "regressed", f"{label} {text}{note}", figures)
    if peak_mb < old * (1 - threshold) - slack_mb:
        return PerfVerdict(label, "improved",
                           f"{label} improved, consider updating the baseline: {text}{note}",
                           figures)
    return PerfVerdict(label, "pass", f"{label} {text}{note}", figures)


def ratio_interval(new: list[float], old: list[float],
                   resamples: int = 1000) -> tuple[float, float]:
    """Bootstrap interval of median(new) / median(old) at CONFIDENCE; seeded, so a verdict
    is reproducible from its samples."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = np.asarray(new), np.asarray(old)
    ratios = (np.median(rng.choice(a, (resamples, a.size)), axis=1)
              / np.median(rng.choice(b, (resamples, b.size)), axis=1))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def diff(candidate: dict, current: dict) -> list[str]:
    """What merging ``candidate``'s entries into ``current`` would change, one line each."""
    lines = []
    old_entries = current.get("entries", {})
    for name, new in sorted(candidate.get("entries", {}).items()):
        old = old_entries.get(name)
        new_lat, new_mem = new["latency"], new["memory"]["peak_rss_mb"]
        if old is None:
            lines.append(f"+ {name}: p50 {new_lat['p50_ms']:.3g} ms, normalised "
                         f"{new_lat['normalised']:.4g}, peak RSS {new_mem:.1f} MB (new)")
            continue
        old_lat, old_mem = old["latency"], old["memory"]["peak_rss_mb"]
        lines.append(
            f"~ {name}: p50 {old_lat['p50_ms']:.3g} → {new_lat['p50_ms']:.3g} ms "
            f"({_pct(new_lat['p50_ms'], old_lat['p50_ms']):+.0f} %), normalised "
            f"{old_lat['normalised']:.4g} → {new_lat['normalised']:.4g} "
            f"({_pct(new_lat['normalised'], old_lat['normalised']):+.0f} %), peak RSS "
            f"{old_mem:.1f} → {new_mem:.1f} MB")
    kept = sorted(set(old_entries) - set(candidate.get("entries", {})))
    if kept:
        lines.append(f"= {len(kept)} other entries kept unchanged")
    return lines
