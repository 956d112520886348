"""The change-point detector and the history gate on simulated nightly series (README figures).

    python -m infergate.history.benchmark --series 200 --json docs/history-benchmark.json

Each figure gets noise as measured on these runners (see NOISE and the README's gate
benchmark sections), and three kinds of series: stationary, a +3 % step at a known night, and
slow drifts of 2 and 3 % a week. Measured, per figure:

- offline (the whole series at once, ``history changes``): the step found within +-2 nights
  of where it was put, and change points where there is none;
- online (night by night, as ``--infergate-history-gate PCT`` sees it): the night the gate
  first fails after the step or into the drift, and gate failures on stationary series.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from infergate.history.changes import Point, alarm, find_changes

# figure -> (log-normal sigma of one night, disturbed-night probability, disturbance range,
#            a second allocator state: (probability, relative offset)), with the README source.
NOISE = {
    # Instruction counts: processes agree to 2e-4; ONNX Runtime fp32 has a lower allocator
    # state 0.3-0.5 % below, which the minimum of three processes lands in about a third of
    # the time ("Instructions per inference").
    "instructions": (2e-4, 0.0, (1.0, 1.0), (0.3, -0.0035)),
    # Model memory: within 0.7 % for every model above 40 MB run to run ("Memory").
    "memory_mb": (0.004, 0.0, (1.0, 1.0), None),
    # Normalised latency: 4.3 % RMS between runs a day apart; a busy neighbour now and then.
    "normalised": (0.043, 0.03, (1.1, 1.5), None),
    # Absolute p50: -3...-29 % a day apart; 10 % here, with the same disturbances.
    "p50_ms": (0.10, 0.03, (1.1, 1.5), None),
}
STEP_PCT = 3.0
DRIFTS_PCT_PER_WEEK = (2.0, 3.0)
NEAR = 2  # nights: "found where it was put"


def simulate(figure: str, nights: int, rng, *, step_at=None, step_pct=0.0, drift_from=None,
             drift_pct_week=0.0) -> np.ndarray:
    sigma, p_disturbed, (lo, hi), state = NOISE[figure]
    log = rng.normal(0.0, sigma, nights)
    disturbed = rng.random(nights) < p_disturbed
    log[disturbed] += np.log(rng.uniform(lo, hi, disturbed.sum()))
    if state is not None:
        log[rng.random(nights) < state[0]] += math.log1p(state[1])
    if step_at is not None:
        log[step_at:] += math.log1p(step_pct / 100)
    if drift_from is not None:
        t = np.clip(np.arange(nights) - drift_from, 0, None)
        log += t * math.log1p(drift_pct_week / 100) / 7
    return 100.0 * np.exp(log)


def _points(values) -> list[Point]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [Point(i, t0 + timedelta(days=i), None, float(v)) for i, v in enumerate(values)]


def _first_alarm(key, values, start: int, gate_pct: float):
    """The first night (series length) from ``start`` on whose newest run fails the gate."""
    for n in range(start, len(values) + 1):
        found = alarm(key, _points(values[:n]), gate_pct)
        if found:
            return n - 1, found
    return None, None


def run_figure(figure: str, series: int, nights: int, gate_pct: float, seed: int) -> dict:
    rng = np.random.default_rng([seed, list(NOISE).index(figure)])
    key = ("sim", "test", "combo", figure)
    step_at = nights // 2
    warmup = 14  # the gate judges from the third week on
    out = {"figure": figure, "noise": NOISE[figure][0], "series": series, "nights": nights,
           "step_night": step_at, "gate_pct": gate_pct}
    # stationary
    any_cp, false_cps, gate_nights, gate_series = 0, 0, 0, 0
    for _ in range(series):
        values = simulate(figure, nights, rng)
        cps = find_changes(key, _points(values))
        any_cp += bool(cps)
        false_cps += len(cps)
        fired = [n for n in range(warmup, nights + 1)
                 if alarm(key, _points(values[:n]), gate_pct)]
        gate_nights += len(fired)
        gate_series += bool(fired)
    judged = series * (nights - warmup + 1)
    out["stationary"] = {"series_with_change_points": any_cp / series,
                         "change_points_per_100_nights": 100 * false_cps / (series * nights),
                         "gate_failures_per_100_nights": 100 * gate_nights / judged,
                         "series_with_a_gate_failure": gate_series / series}
    # +3 % step
    near, errors, others, delays, missed, early = 0, [], 0, [], 0, 0
    for _ in range(series):
        values = simulate(figure, nights, rng, step_at=step_at, step_pct=STEP_PCT)
        cps = find_changes(key, _points(values))
        hit = [c for c in cps if abs(c.index - step_at) <= NEAR]
        near += bool(hit)
        others += len(cps) - len(hit)
        if cps:
            errors.append(min(abs(c.index - step_at) for c in cps))
        night, found = _first_alarm(key, values, warmup, gate_pct)
        if night is not None and night < step_at:
            early += 1  # a false alarm before the step: count it, look on after the step
            night, found = _first_alarm(key, values, step_at + 1, gate_pct)
        if night is None:
            missed += 1
        else:
            delays.append(night - step_at)
    out["step"] = {"pct": STEP_PCT, "found_within_2": near / series,
                   "median_location_error": float(np.median(errors)) if errors else None,
                   "other_change_points_per_series": others / series,
                   "gate_found": 1 - missed / series,
                   "gate_delay_nights_median": float(np.median(delays)) if delays else None,
                   "gate_delay_nights_p90": float(np.percentile(delays, 90)) if delays else None,
                   "gate_failed_before_the_step": early / series}
    # drifts
    out["drift"] = {}
    drift_from = warmup
    for pct in DRIFTS_PCT_PER_WEEK:
        delays, totals = [], []
        for _ in range(series):
            values = simulate(figure, nights, rng, drift_from=drift_from, drift_pct_week=pct)
            night, _ = _first_alarm(key, values, drift_from + 1, gate_pct)
            if night is not None:
                delays.append(night - drift_from)
                totals.append(((1 + pct / 100) ** ((night - drift_from) / 7) - 1) * 100)
        out["drift"][f"{pct:g}"] = {
            "gate_found": len(delays) / series,
            "gate_delay_nights_median": float(np.median(delays)) if delays else None,
            "drift_pct_when_found_median": float(np.median(totals)) if totals else None}
    return out


def table(rows: list[dict]) -> str:
    def f(value, fmt="{:.0%}"):
        return "–" if value is None else fmt.format(value)

    head = ("| figure | noise (1 night) | stationary: series with a change point | "
            "stationary: gate failures / 100 nights | +3 % step found ±2 nights (offline) | "
            "+3 % step: gate fails after (median / p90 nights, found) | "
            "drift 2 %/wk: gate fails after (nights, drift then) | drift 3 %/wk |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        s, st, d = r["stationary"], r["step"], r["drift"]
        lines.append(
            f"| {r['figure']} | {r['noise'] * 100:.2g} % | {f(s['series_with_change_points'])} "
            f"| {s['gate_failures_per_100_nights']:.2f} | {f(st['found_within_2'])} | "
            f"{f(st['gate_delay_nights_median'], '{:.0f}')} / "
            f"{f(st['gate_delay_nights_p90'], '{:.0f}')} ({f(st['gate_found'])}) | "
            + " | ".join(f"{f(d[k]['gate_delay_nights_median'], '{:.0f}')} "
                         f"(+{f(d[k]['drift_pct_when_found_median'], '{:.1f}')} %, "
                         f"{f(d[k]['gate_found'])})" for k in d) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infergate.history.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=200, help="series per scenario")
    parser.add_argument("--nights", type=int, default=120)
    parser.add_argument("--gate", type=float, default=2.0, metavar="PCT",
                        help="--infergate-history-gate threshold judged (default 2 %%)")
    parser.add_argument("--figures", default=",".join(NOISE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for figure in args.figures.split(","):
        started = time.monotonic()
        rows.append(run_figure(figure, args.series, args.nights, args.gate, args.seed))
        rows[-1]["seconds"] = round(time.monotonic() - started, 1)
        print(f"{figure}: {rows[-1]['seconds']} s", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
