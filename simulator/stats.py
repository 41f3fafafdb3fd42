"""Confidence intervals for what a run reports: a seeded bootstrap over handsets and seeds.

Every figure of a summary row is a statistic of the row's handsets (docs/statistics.md): the
mean energy per handset-day, delivery over (push, device) pairs, the p95 of the pooled
latencies, the dead-time fraction. :func:`add_intervals` resamples the handsets — seeds
first (when there are several), then handsets within each drawn seed, both with replacement
— recomputes the statistic ``RESAMPLES`` times and takes the 2.5th and 97.5th percentiles
(the percentile bootstrap). :func:`paired_ratio` does the same for the ratio of two
strategies' mean energy on the same handsets (each resample draws a handset for both), which
is far tighter than comparing two intervals. The generator is numpy's PCG64 seeded from the
row's label, so the same results give the same intervals in any process.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from simulator.metrics import HandsetResult, defined

RESAMPLES = 1000
LEVEL = 0.95
#: Summary columns that get ``<column>_ci95_low`` / ``<column>_ci95_high``.
CI_COLUMNS = ("energy_j_per_day", "battery_pct_per_day", "delivery_ratio", "latency_p95_s",
              "dead_time_fraction")
CI_FIELDS = tuple(f"{c}_ci95_{end}" for c in CI_COLUMNS for end in ("low", "high"))
#: Per-handset distribution columns (the worst handset, percentiles of dead time).
HANDSET_FIELDS = ("energy_j_per_day_worst_handset", "dead_time_handset_p50",
                  "dead_time_handset_p95", "dead_time_handset_max")


def _rng(*label: object) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(zlib.crc32(repr(label).encode())))


def resample_indices(rows: Sequence[HandsetResult], rng: np.random.Generator,
                     count: int) -> np.ndarray:
    """``count`` resamples of row positions (shape count × n): seeds, then handsets."""
    by_seed: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        by_seed.setdefault(row.seed, []).append(i)
    groups = [np.array(g) for g in by_seed.values()]
    if len(groups) == 1:
        g = groups[0]
        return g[rng.integers(0, len(g), size=(count, len(g)))]
    out = []
    for _ in range(count):
        drawn = rng.integers(0, len(groups), size=len(groups))
        out.append(np.concatenate([groups[d][rng.integers(0, len(groups[d]),
                                                         size=len(groups[d]))]
                                   for d in drawn]))
    width = min(len(o) for o in out)  # equal-sized seeds: all the same length
    return np.array([o[:width] for o in out])


class _Columns:
    """The handsets of one row as arrays, for fast resampled statistics."""

    def __init__(self, rows: Sequence[HandsetResult]) -> None:
        self.energy = np.array([r.energy_j * 86400.0 / r.duration_s for r in rows])
        self.sent = np.array([r.pushes_sent for r in rows], dtype=float)
        self.delivered = np.array([r.pushes_delivered for r in rows], dtype=float)
        self.dead = np.array([r.dead_s for r in rows])
        self.connected = np.array([r.connected_s for r in rows])
        owners = [i for i, r in enumerate(rows) for _ in r.latencies]
        latencies = [x for r in rows for x in r.latencies]
        order = np.argsort(latencies, kind="stable")
        self.latencies = np.array(latencies)[order]
        self.owner = np.array(owners, dtype=int)[order]

    def statistics(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        counts = np.zeros((idx.shape[0], len(self.energy)))
        for b in range(idx.shape[0]):
            counts[b] = np.bincount(idx[b], minlength=len(self.energy))
        n = counts.sum(axis=1)
        energy = counts @ self.energy / n
        sent = counts @ self.sent
        with np.errstate(invalid="ignore", divide="ignore"):
            delivery = np.where(sent > 0, counts @ self.delivered / sent, np.nan)
            connected = counts @ self.connected
            dead = np.where(connected > 0, counts @ self.dead / connected, 0.0)
        return {"energy_j_per_day": energy, "battery_pct_per_day": energy * 100 / 41580.0,
                "delivery_ratio": delivery, "dead_time_fraction": dead,
                "latency_p95_s": self._weighted_p95(counts)}

    def _weighted_p95(self, counts: np.ndarray) -> np.ndarray:
        if not len(self.latencies):
            return np.full(counts.shape[0], np.nan)
        weights = counts[:, self.owner]
        cumulative = np.cumsum(weights, axis=1)
        total = cumulative[:, -1:]
        out = np.full(counts.shape[0], np.nan)
        ok = total[:, 0] > 0
        position = np.argmax(cumulative >= 0.95 * total, axis=1)
        out[ok] = self.latencies[position[ok]]
        return out


def add_intervals(summary: list[dict], results: Sequence[HandsetResult]) -> list[dict]:
    """Add the CI and per-handset columns to each summary row (in place; returned)."""
    groups: dict[tuple[str, str], list[HandsetResult]] = {}
    for r in results:
        groups.setdefault((r.strategy, r.scenario), []).append(r)
    for row in summary:
        rows = groups.get((row["strategy"], row["scenario"]), [])
        row.update(_handset_columns(rows))
        row.update(_intervals(rows, row))
    return summary


def _intervals(rows: Sequence[HandsetResult], row: dict) -> dict[str, float]:
    out = {name: math.nan for name in CI_FIELDS}
    if not rows:
        return out
    idx = resample_indices(rows, _rng(row["strategy"], row["scenario"]), RESAMPLES)
    stats = _Columns(rows).statistics(idx)
    tail = (1 - LEVEL) / 2 * 100
    for column in CI_COLUMNS:
        if not defined(row.get(column)):
            continue
        values = stats[column][~np.isnan(stats[column])]
        if len(values):
            low, high = np.percentile(values, [tail, 100 - tail])
            out[f"{column}_ci95_low"], out[f"{column}_ci95_high"] = float(low), float(high)
    return out


def _handset_columns(rows: Sequence[HandsetResult]) -> dict[str, float]:
    if not rows:
        return {name: math.nan for name in HANDSET_FIELDS}
    energy = [r.energy_j * 86400.0 / r.duration_s for r in rows]
    simulated = [r for r in rows if not r.bound]
    dead = [r.dead_s / r.connected_s if r.connected_s else 0.0 for r in simulated]
    p50, p95 = (np.percentile(dead, [50, 95]) if dead else (math.nan, math.nan))
    return {"energy_j_per_day_worst_handset": max(energy),
            "dead_time_handset_p50": float(p50), "dead_time_handset_p95": float(p95),
            "dead_time_handset_max": max(dead) if dead else math.nan}


def paired_ratio(results: Sequence[HandsetResult], strategy: str, reference: str,
                 scenario: str) -> tuple[float, float, float]:
    """Mean energy of ``strategy`` ÷ that of ``reference`` on the same handsets of
    ``scenario``, with its 95 % bootstrap interval: ``(ratio, low, high)``."""
    a = {(r.seed, r.index): r for r in results
         if r.strategy == strategy and r.scenario == scenario}
    b = {(r.seed, r.index): r for r in results
         if r.strategy == reference and r.scenario == scenario}
    keys = sorted(set(a) & set(b), key=repr)
    if not keys:
        return (math.nan, math.nan, math.nan)
    ea = np.array([a[k].energy_j / a[k].duration_s for k in keys])
    eb = np.array([b[k].energy_j / b[k].duration_s for k in keys])
    ratio = ea.sum() / eb.sum() if eb.sum() else math.nan
    idx = resample_indices([a[k] for k in keys], _rng(strategy, reference, scenario), RESAMPLES)
    sa, sb = ea[idx].sum(axis=1), eb[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = sa / sb
    ratios = ratios[np.isfinite(ratios)]
    if not len(ratios):
        return (ratio, math.nan, math.nan)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return (float(ratio), float(low), float(high))


__all__ = ["CI_COLUMNS", "CI_FIELDS", "HANDSET_FIELDS", "LEVEL", "RESAMPLES", "add_intervals",
           "paired_ratio", "resample_indices"]
