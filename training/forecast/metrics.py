"""M4 point-forecast metrics, interval coverage and the two classic baselines.

Definitions follow the M4 competition guide:

    sMAPE = 200/h * sum_t |y_t - f_t| / (|y_t| + |f_t|)
    MASE  = mean_t |y_t - f_t| / ( 1/(n-m) * sum_{t=m+1..n} |x_t - x_{t-m}| )

where ``x`` is the in-sample history (length ``n``) and ``m`` the seasonal period (24 hourly).
Both are computed per series and averaged over series.
"""

from __future__ import annotations

import numpy as np


def smape(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Per-series sMAPE in percent; ``y``/``f`` [n_series, h]. 0/0 terms count as 0."""
    y = np.asarray(y, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    den = np.abs(y) + np.abs(f)
    term = np.divide(np.abs(y - f), den, out=np.zeros_like(den), where=den > 0)
    return 200.0 * term.mean(axis=-1)


def mase_scale(history: np.ndarray, m: int) -> float:
    """In-sample mean absolute seasonal difference (lag ``m``; lag 1 if the series is short)."""
    x = np.asarray(history, dtype=np.float64)
    lag = m if len(x) > m else 1
    return float(np.mean(np.abs(x[lag:] - x[:-lag])))


def mase(y: np.ndarray, f: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per-series MASE given per-series scales (see :func:`mase_scale`). Zero scale -> nan."""
    err = np.abs(np.asarray(y, np.float64) - np.asarray(f, np.float64)).mean(axis=-1)
    s = np.asarray(scales, dtype=np.float64)
    return np.divide(err, s, out=np.full_like(err, np.nan), where=s > 0)


def seasonal_naive(history: np.ndarray, horizon: int, m: int) -> np.ndarray:
    """Repeat the last ``m`` observations: f_{n+k} = x_{n+k-m*ceil(k/m)}."""
    x = np.asarray(history, dtype=np.float64)
    last = x[-m:]
    return np.asarray([last[k % m] for k in range(horizon)])


def naive(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.full(horizon, float(np.asarray(history)[-1]))


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Fraction of actuals inside [lo, hi] (in percent)."""
    y = np.asarray(y)
    return float(100.0 * np.mean((y >= lo) & (y <= hi)))


def score(y: np.ndarray, f: np.ndarray, scales: np.ndarray) -> dict[str, float]:
    """Mean sMAPE and MASE over series (MASE ignores series with a zero in-sample scale)."""
    return {
        "smape": float(np.mean(smape(y, f))),
        "mase": float(np.nanmean(mase(y, f, scales))),
    }


def baseline_scores(
    histories: list[np.ndarray], futures: np.ndarray, m: int
) -> dict[str, dict[str, float]]:
    h = futures.shape[1]
    scales = np.asarray([mase_scale(x, m) for x in histories])
    sn = np.stack([seasonal_naive(x, h, m) for x in histories])
    nv = np.stack([naive(x, h) for x in histories])
    return {"seasonal_naive": score(futures, sn, scales), "naive": score(futures, nv, scales)}
