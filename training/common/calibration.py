"""Probability calibration: temperature scaling (Guo et al. 2017) and its error, numpy only.

A classifier distilled and selected for accuracy is often over-confident on text unlike its
training data. One temperature ``T`` applied to the log-probabilities, ``softmax(log p / T)``,
keeps every prediction's class and makes the confidence match the hit rate more closely. ``T``
is chosen on dev data, each dev set weighted equally, so a large set does not decide alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BINS = 15  # equal-width confidence bins, as in Guo et al.


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` row by row (what the exported graph computes)."""
    z = np.log(np.clip(probs.astype(np.float64), 1e-30, None)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of the top class: the mean |hit rate - confidence| over
    equal-width confidence bins, weighted by how many predictions fall in each."""
    conf = probs.max(axis=1)
    hits = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.sum() * abs(hits[m].mean() - conf[m].mean())
    return float(total / len(conf))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-30, None)).mean())


def fit_temperature(groups: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """The ``T`` minimizing the mean over groups of each group's negative log-likelihood
    (a fine grid in log T, then a finer one around the best)."""

    def loss(t: float) -> float:
        return float(np.mean([nll(scale(p, t), y) for p, y in groups]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
    losses = [loss(t) for t in grid]
    if not np.isfinite(losses).all():
        raise ValueError("the calibration loss is not finite: an empty group or NaN probabilities")
    best = float(grid[int(np.argmin(losses))])
    fine = best * np.exp(np.linspace(-0.06, 0.06, 41))
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def cross_fitted_ece(
    groups: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> dict[str, float]:
    """Each group's ECE with ``T`` fitted on the other half of every group (two folds, each
    half scored with the temperature the other halves chose): the honest figure, since the
    shipped ``T`` has seen all of dev."""
    rng = np.random.default_rng(seed)
    halves = {g: rng.permutation(len(y)) for g, (_, y) in groups.items()}
    scored: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {g: [] for g in groups}
    for fold in (0, 1):
        fit_on = []
        for g, (p, y) in groups.items():
            idx = np.array_split(halves[g], 2)[1 - fold]
            fit_on.append((p[idx], y[idx]))
        t = fit_temperature(fit_on)
        for g, (p, y) in groups.items():
            idx = np.array_split(halves[g], 2)[fold]
            scored[g].append((scale(p[idx], t), y[idx]))
    return {
        g: ece(np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))
        for g, parts in scored.items()
    }
