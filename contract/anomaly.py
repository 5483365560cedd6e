"""Anomaly scoring core: the numpy pre- and post-processing around the anomaly graph.

Pure numpy (no torch, no onnxruntime, no web framework), imported by serving and by
``training.anomaly.evaluate`` alike (it lives in ``contract/`` so neither imports the other),
so the NAB figures in the card are what serving returns.
Every parameter comes from the model card (``card["scoring"]`` and ``card["onnx"]``).

The graph is a one-layer GRU run over the whole series in one pass. At step t it reads the
normalised value u[t] and outputs a predictive Gaussian for u[t+1]: ``mean[t]`` and
``log_scale[t]``. Serving per request:

    F = card["onnx"]["inputs"][0]["shape"][-1]           # 1 + len(lags); 1 for nab-gru:1
    x = prepare(values, card)                            # float32 [T] (F == 1) or [T, F]
    # batch: rows right-padded to the longest series with PAD_VALUE (0.0):
    # X = np.full((batch, longest, F), PAD_VALUE, np.float32); X[row, :T] = x.reshape(T, F)
    # inputs = {card["onnx"]["inputs"][0]["name"]: X}                float32 [batch, time, F]
    mean, log_scale = session.run(output_names, inputs)           # float32 [batch, time] each
    scores = finish(values, {"mean": mean[i, :T], "log_scale": log_scale[i, :T]}, card)
    anomalies = np.flatnonzero(scores >= threshold(card))

``run_graph(run, [prepare(v, card) for v in series])`` does the batching (groups of similar
length, right-padded, cut back) for serving and for the training code's NAB evaluation alike.

``prepare`` and ``finish`` take the RAW values of one series (any float, NaN for missing).
Right-padding never changes the outputs of earlier steps (the GRU is causal), so the batch is
just a convenience; cut each row back to its series length before ``finish``.

Rules (parameters in ``card["scoring"]``):

* missing values (NaN / ±inf) are carried forward for the model (leading ones take the first
  finite value; an all-missing series is all zeros) and score 0, as does the step after one
  (its prediction read a carried value);
* scale: ``center`` = median and ``scale`` = std of the first ``warmup`` (carried-forward)
  values, ``scale`` floored at ``scale_floor_rel * mean|x| + scale_floor_abs`` over the warm-up
  (a constant series normalises to exactly 0); computed in float64;
  ``u = (x - center) / scale``; with ``c = clip(u, -clip, clip)`` the model input at step t is
  ``[c[t], c[t + 1 - L] for L in lags]`` (float32; the value one period ``L`` before the step
  being predicted, ``c[0]`` when that is before the start);
* a series shorter than ``warmup`` scores 0 everywhere (no graph call is needed for it), and
  so do the first ``warmup`` points of every series;
* error ``z[t] = (c[t] - mean[t-1]) / max(exp(log_scale[t-1]), sigma_floor)``, and the raw
  anomaly ``a[t] = min(|z[t]|, z_cap)``;
* anomaly likelihood (as Numenta's): ``m`` = mean of ``a`` over the last ``short`` points,
  ``q = Q((m - mean(m)) / std(m))`` with the mean and std of ``m`` over the last ``long``
  points (std floored at ``std_floor``), Q the Gaussian upper tail; likelihood score
  ``clip(-log10(2 q) / 10, 0, 1)`` (q >= 0.5, i.e. no excess error, scores 0; q = 5e-6
  scores 0.5); 0 until ``min_history`` valid errors exist. ``short2`` > 0 adds a second
  comparison with that short window (max of the two);
* seasonal likelihood (``season_lags``, e.g. [288]; empty: off): for each lag L the
  difference ``d[t] = c[t] - c[t - L]`` of the clipped normalised values, ``min(|d|, z_cap)``,
  goes through the same likelihood as the model's errors (valid where t and t - L are; its
  ``min_history`` counts those points) — a change in the repeated daily shape that a
  one-step forecaster follows;
* range novelty (as Numenta's "spatial anomaly"): ``spatial_score`` (1 in nab-gru:1) when a
  value leaves [min, max] of all earlier values by more than ``spatial_tolerance`` times that
  range (``spatial_gated``: only after ``min_history``); below ``refractory_threshold`` it is
  held back inside the refractory period like any other moderate score;
* level change (``shift_short`` > 0): on the clipped normalised values c, the mean ``m`` of
  the last ``shift_short`` points against the mean ``mu`` and std ``sd`` of the ``shift_long``
  points just before them (``sd`` floored at ``change_floor``); ``z = |m - mu| / sd /
  shift_scale`` scores ``clip(-log10(2 Q(z)) / 10, 0, 1)`` (z 4.4: 0.5);
* variance change (``var_short`` > 0): the std of c over the last ``var_short`` points against
  the std over the ``var_long`` points before them (both floored at ``change_floor``) scores
  ``clip(0.5 |ln(ratio)| / var_log_ratio, 0, 1)`` (a ratio of e^var_log_ratio either way:
  0.5); both change scores are 0 until ``short + long`` points after the warm-up exist and
  at missing points and the step after one;
* the score is the max of all of these (likelihood(s), range novelty, change detectors);
* alarms: walking forward over the points scoring ``>= threshold``, a point fires unless it
  lies within ``suppress`` points after the last firing point, or within ``refractory``
  points of it and scores below ``refractory_threshold``; points that do not fire are
  multiplied by ``suppress_factor`` (0: they drop to 0) — one alarm per event, as NAB rewards.
  ``scores >= card["threshold"]`` are then exactly the firing points.

Every step depends only on values up to t, so a prefix of a series gets exactly the scores the
whole series gets on that prefix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAD_VALUE = 0.0  # what to right-pad a batch with (any finite value works: the GRU is causal)

DEFAULT_SCORING: dict[str, Any] = {  # the shipped nab-gru:1 configuration
    "warmup": 150,
    "lags": [],
    "clip": 20.0,
    "scale_floor_rel": 1e-6,
    "scale_floor_abs": 1e-9,
    "sigma_floor": 0.02,
    "z_cap": 10.0,
    "feature": "abs_z",
    "short": 10,
    "long": 400,
    "min_history": 400,
    "std_floor": 0.01,
    "short2": 0,
    "spatial_tolerance": 0.005,
    "spatial_gated": False,
    "threshold": 0.4,
    "suppress": 20,
    "suppress_factor": 0.0,
    "refractory": 300,
    "refractory_threshold": 0.99,
    # change detectors (0 = off; off in nab-gru:1, so its cards score exactly as before)
    "shift_short": 0,
    "shift_long": 0,
    "shift_scale": 1.0,
    "var_short": 0,
    "var_long": 0,
    "var_log_ratio": 1.5,
    "change_floor": 0.05,
    "season_lags": [],
    "spatial_score": 1.0,
}


def scoring_params(card: dict[str, Any]) -> dict[str, Any]:
    """The card's scoring parameters over the defaults."""
    return {**DEFAULT_SCORING, **card.get("scoring", {})}


def fill_missing(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN/inf carried forward, bool mask of the missing positions)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    missing = ~np.isfinite(x)
    if not missing.any():
        return x, missing
    if missing.all():
        return np.zeros_like(x), missing
    idx = np.where(missing, 0, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(~missing))
    filled = x[idx]
    filled[:first] = x[first]
    return filled, missing


def normalise(values: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """float64 ``u = (x - center) / scale`` from the first ``warmup`` carried-forward values
    (unclipped); zeros when the series is shorter than the warm-up."""
    return _normalise_filled(fill_missing(values)[0], p)


def _normalise_filled(x: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """``normalise`` of values whose missing entries are already carried forward."""
    w = int(p["warmup"])
    if len(x) < w or len(x) == 0:
        return np.zeros_like(x)
    head = x[:w]
    center = float(np.median(head))
    big = float(np.max(np.abs(head)))
    big = big if big > 0 else 1.0  # std of head / big cannot overflow, even near 1e308
    floor = p["scale_floor_rel"] * big * float(np.mean(np.abs(head / big))) + p["scale_floor_abs"]
    scale = max(big * float(np.std(head / big)), floor)
    with np.errstate(over="ignore", invalid="ignore"):
        u = (x - center) / scale
    return np.nan_to_num(u, nan=0.0, posinf=p["clip"], neginf=-p["clip"])


def lag_features(c: np.ndarray, lags: list[int] | tuple[int, ...]) -> np.ndarray:
    """[..., T] clipped normalised values -> [..., T, 1 + len(lags)] model inputs: the value
    itself, then for each lag L the value at t + 1 - L (the same phase one period before the
    step being predicted), the first value when that lies before the start."""
    c = np.asarray(c)
    cols = [c]
    n = c.shape[-1]
    for lag in lags:
        idx = np.maximum(np.arange(n) + 1 - int(lag), 0)
        cols.append(np.take(c, idx, axis=-1))
    return np.stack(cols, axis=-1)


def threshold(card: dict[str, Any]) -> float:
    """The score at or above which a point is reported as an anomaly."""
    return float(card.get("threshold", scoring_params(card)["threshold"]))


def prepare(values: np.ndarray, card: dict[str, Any]) -> np.ndarray:
    """float32 model input for one series: [T] when the card has no ``lags`` (the graph's
    feature axis has size 1: put it at ``X[row, :T, 0]``), else [T, 1 + len(lags)]
    (``X[row, :T]``). ``x.reshape(T, -1)`` is the [T, F] form in both cases."""
    p = scoring_params(card)
    c = np.clip(normalise(values, p), -p["clip"], p["clip"])
    if not p["lags"]:
        return c.astype(np.float32)
    return lag_features(c, p["lags"]).astype(np.float32)


def _log10_upper_tail(x: np.ndarray) -> np.ndarray:
    """log10 Q(x) for the standard normal, accurate far into the tail (no underflow).

    Q(x) = erfc(x / sqrt 2) / 2 with the Numerical Recipes erfc (relative error < 1.2e-7),
    evaluated in log space; erfc(-y) = 2 - erfc(y) for negative arguments.
    """
    y = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * y)
    poly = -1.26551223 + t * (
        1.00002368
        + t
        * (
            0.37409196
            + t
            * (
                0.09678418
                + t
                * (
                    -0.18628806
                    + t
                    * (
                        0.27886807
                        + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                    )
                )
            )
        )
    )
    ln_erfc = np.log(t) - y * y + poly
    ln_q_pos = ln_erfc - np.log(2.0)
    ln_q = np.where(x >= 0, ln_q_pos, np.log1p(-0.5 * np.exp(ln_erfc)))
    return ln_q / np.log(10.0)


def _rolling_mean(a: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, count) of a over the last n points ending at each t (fewer at the start)."""
    c = np.concatenate([[0.0], np.cumsum(a)])
    t = np.arange(1, len(a) + 1)
    lo = np.maximum(t - n, 0)
    cnt = t - lo
    return (c[t] - c[lo]) / cnt, cnt


def errors(u: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Normalised one-step errors z[t] (z[0] = 0) from the model outputs at t-1."""
    target = np.clip(u, -p["clip"], p["clip"])
    z = np.zeros_like(u)
    if len(u) > 1:
        sigma = np.maximum(np.exp(np.asarray(log_scale[:-1], np.float64)), p["sigma_floor"])
        z[1:] = (target[1:] - np.asarray(mean[:-1], np.float64)) / sigma
    return z


def raw_anomaly(z: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    cap = float(p["z_cap"])
    if p["feature"] == "abs_z":
        return np.minimum(np.abs(z), cap)
    if p["feature"] == "sq_z":
        return np.minimum(z * z, cap * cap)
    if p["feature"] == "log_z":
        return np.log1p(np.minimum(np.abs(z), cap))
    raise ValueError(f"unknown scoring feature {p['feature']!r}")


def likelihood_scores(a: np.ndarray, valid: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Numenta-style anomaly likelihood of the raw anomalies ``a`` (invalid positions: 0):
    m = mean of ``a`` over the last ``short`` valid points; q = Q((m - mu) / sd) with mu, sd
    the mean and std of m over the last ``long`` points; mapped to [0, 1] by -log10(2 q) / 10."""
    a = np.where(valid, a, 0.0)
    v = valid.astype(np.float64)
    cum_valid = np.cumsum(valid)
    short_sum, _ = _rolling_mean(a, int(p["short"]))
    short_v, _ = _rolling_mean(v, int(p["short"]))
    m = np.divide(short_sum, short_v, out=np.zeros_like(a), where=short_v > 0)
    ok_m = cum_valid >= int(p["short"])  # a full short window of valid history exists
    mv = np.where(ok_m, m, 0.0)
    okf = ok_m.astype(np.float64)
    long_m, _ = _rolling_mean(mv, int(p["long"]))
    long_m2, _ = _rolling_mean(mv * mv, int(p["long"]))
    long_v, _ = _rolling_mean(okf, int(p["long"]))
    mu = np.divide(long_m, long_v, out=np.zeros_like(a), where=long_v > 0)
    m2 = np.divide(long_m2, long_v, out=np.zeros_like(a), where=long_v > 0)
    sd = np.maximum(np.sqrt(np.maximum(m2 - mu * mu, 0.0)), p["std_floor"])
    s = np.clip(-(_log10_upper_tail((m - mu) / sd) + np.log10(2.0)) / 10.0, 0.0, 1.0)
    ok = valid & ok_m & (cum_valid >= int(p["min_history"]))
    return np.where(ok, s, 0.0)


def spatial_scores(x: np.ndarray, valid: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """1 where a value leaves the range of every earlier value by more than
    ``spatial_tolerance`` times that range (as Numenta's spatial anomaly), else 0."""
    tol = float(p["spatial_tolerance"])
    out = np.zeros(len(x))
    if tol <= 0 or len(x) < 2:
        return out
    hi = np.maximum.accumulate(x)[:-1]
    lo = np.minimum.accumulate(x)[:-1]
    with np.errstate(over="ignore", invalid="ignore"):  # ranges beyond 1e308: no alarms
        margin = (hi - lo) * tol
        hit = ((x[1:] > hi + margin) | (x[1:] < lo - margin)) & (hi > lo)
    out[1:] = hit
    return np.where(valid, out, 0.0)


def _window_stats(c: np.ndarray, short: int, long: int) -> tuple[np.ndarray, ...]:
    """For each t: mean and std of c over (t - short, t], then over the ``long`` points before
    that window, and whether both windows lie inside the series (float64; std from running
    sums, centred on the series' first value to keep the sums small)."""
    n = len(c)
    x = c - c[0] if n else c
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    t = np.arange(1, n + 1)  # window (t - short, t] is rows [t - short, t) of the cumsum
    a = np.maximum(t - short, 0)
    b = np.maximum(a - long, 0)

    def stats(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = np.maximum(hi - lo, 1)
        m = (s1[hi] - s1[lo]) / cnt
        v = np.maximum((s2[hi] - s2[lo]) / cnt - m * m, 0.0)
        return m, np.sqrt(v)

    m_s, sd_s = stats(a, t)
    m_r, sd_r = stats(b, a)
    full = t >= short + long
    return m_s, sd_s, m_r, sd_r, full


def change_scores(c: np.ndarray, valid: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Level- and variance-change scores of the clipped normalised values ``c`` (0 when both
    detectors are off): the max of the two, 0 where not ``valid`` or before
    ``short + long`` valid points exist."""
    out = np.zeros(len(c))
    floor = float(p["change_floor"])
    cum_valid = np.cumsum(valid)
    s, L = int(p["shift_short"]), int(p["shift_long"])
    if s > 0 and L > 0:
        m_s, _, m_r, sd_r, full = _window_stats(c, s, L)
        z = np.abs(m_s - m_r) / np.maximum(sd_r, floor) / float(p["shift_scale"])
        sc = np.clip(-(_log10_upper_tail(z) + np.log10(2.0)) / 10.0, 0.0, 1.0)
        out = np.maximum(out, np.where(full & (cum_valid >= s + L), sc, 0.0))
    s, L = int(p["var_short"]), int(p["var_long"])
    if s > 0 and L > 0:
        _, sd_s, _, sd_r, full = _window_stats(c, s, L)
        ratio = np.log(np.maximum(sd_s, floor) / np.maximum(sd_r, floor))
        sc = np.clip(0.5 * np.abs(ratio) / float(p["var_log_ratio"]), 0.0, 1.0)
        out = np.maximum(out, np.where(full & (cum_valid >= s + L), sc, 0.0))
    return np.where(valid, out, 0.0)


def suppress(scores: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """One alarm per event. Walking forward over the points scoring >= ``threshold``: a point
    fires unless it is within ``suppress`` points after the last firing point, or within
    ``refractory`` points of it and below ``refractory_threshold``; a point that does not fire
    is multiplied by ``suppress_factor`` (so it stays below the threshold). O(candidates)."""
    k, r = int(p["suppress"]), int(p["refractory"])
    if k <= 0 and r <= 0:
        return scores
    thr, high = float(p["threshold"]), float(p["refractory_threshold"])
    out = scores.copy()
    last = -(max(k, r) + 1)
    for i in np.flatnonzero(scores >= thr).tolist():
        gap = i - last
        if gap <= k or (gap <= r and scores[i] < high):
            out[i] *= p["suppress_factor"]
        else:
            last = i
    return out


def finish(values: np.ndarray, outputs: dict[str, np.ndarray], card: dict[str, Any]) -> np.ndarray:
    """Scores in [0, 1] (float64 [T]) for one series from its raw values and the graph outputs
    on ``prepare(values, card)``: ``outputs["mean"]`` and ``outputs["log_scale"]``, each [T]
    (the batch row cut back to the series length)."""
    p = scoring_params(card)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(x)
    w = int(p["warmup"])
    if n < w or n == 0:
        return np.zeros(n)
    mean = np.asarray(outputs["mean"], np.float64).reshape(-1)[:n]
    log_scale = np.asarray(outputs["log_scale"], np.float64).reshape(-1)[:n]
    if len(mean) != n or len(log_scale) != n:
        raise ValueError(f"outputs cover {len(mean)} steps, the series has {n}")
    filled, missing = fill_missing(x)
    u = _normalise_filled(filled, p)
    z = errors(u, mean, log_scale, p)
    valid = ~missing
    valid[1:] &= ~missing[:-1]  # the prediction for t read a real value at t-1
    valid[: w + 1] = False
    a = raw_anomaly(z, p)
    s = likelihood_scores(a, valid, p)
    if int(p["short2"]) > 0:  # a second, slower comparison (sustained moderate errors)
        s = np.maximum(s, likelihood_scores(a, valid, {**p, "short": p["short2"]}))
    c = np.clip(u, -p["clip"], p["clip"])
    for lag in p["season_lags"]:
        lag = int(lag)
        if 0 < lag < n:
            d = np.zeros(n)
            d[lag:] = np.abs(c[lag:] - c[:-lag])
            ok = valid.copy()
            ok[:lag] = False
            ok[lag:] &= valid[:-lag]
            a_s = np.minimum(d, float(p["z_cap"]))
            s = np.maximum(s, likelihood_scores(a_s, ok, p))
    sp = spatial_scores(filled, valid, p) * float(p["spatial_score"])
    if p["spatial_gated"]:
        sp = np.where(np.cumsum(valid) >= int(p["min_history"]), sp, 0.0)
    s = np.maximum(s, sp)
    if int(p["shift_short"]) > 0 or int(p["var_short"]) > 0:
        s = np.maximum(s, change_scores(c, valid, p))
    s = np.where(np.isfinite(s), s, 0.0)
    return suppress(s, p)


def run_graph(
    run: Any, inputs: list[np.ndarray], max_batch: int = 16, max_padding: float = 1.25
) -> list[dict[str, np.ndarray]]:
    """Graph outputs for each prepared series: ``run(X [B, T, F]) -> (mean, log_scale)``.

    Series are sorted by length (longest first) and grouped while the padded batch holds at
    most ``max_padding`` times the real points (the GRU's cost is per padded point, and past
    a few rows a bigger batch buys little); rows are right-padded with ``PAD_VALUE`` and cut
    back to their own length (padding never changes earlier outputs)."""
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    out: list[dict[str, np.ndarray]] = [{} for _ in inputs]
    i = 0
    while i < len(order):
        longest = max(len(inputs[order[i]]), 1)
        group, real = [order[i]], len(inputs[order[i]])
        while i + len(group) < len(order) and len(group) < max_batch:
            nxt = len(inputs[order[i + len(group)]])
            if (len(group) + 1) * longest > max_padding * (real + nxt):
                break
            group.append(order[i + len(group)])
            real += nxt
        feats = 1 if inputs[order[i]].ndim == 1 else inputs[order[i]].shape[-1]
        x = np.full((len(group), longest, feats), PAD_VALUE, dtype=np.float32)
        for r, j in enumerate(group):
            x[r, : len(inputs[j])] = inputs[j].reshape(len(inputs[j]), feats)
        mean, log_scale = run(x)
        for r, j in enumerate(group):
            n = len(inputs[j])
            out[j] = {"mean": mean[r, :n], "log_scale": log_scale[r, :n]}
        i += len(group)
    return out


def score_series(values: np.ndarray, run: Any, card: dict[str, Any]) -> np.ndarray:
    """prepare -> ``run(X [1, T, F]) -> (mean [1, T], log_scale [1, T])`` -> finish."""
    x = prepare(values, card)
    mean, log_scale = run(x[None, :, None] if x.ndim == 1 else x[None])
    return finish(values, {"mean": mean[0], "log_scale": log_scale[0]}, card)
