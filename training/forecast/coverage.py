"""Interval coverage and accuracy of a published forecaster, by serving's own computation.

    seqserve-train forecast coverage --model models/forecast/m4-hourly-gru/3

Runs the folder's graph through ``contract.forecaster.SeriesForecaster`` (the code serving
answers ``POST /forecast`` with), so the figures are what the API returns, on:

* M4 validation: the last ``horizon`` points of every series, forecast from everything before;
* ETTh1 (every column, rolling origins): origins every ``every`` hours from the first one with a
  full window and every per-series backtest before it, each forecasting the next ``horizon``
  points from everything before the origin.

Each set is scored twice: as served (per-series intervals where the history allows them) and
with the card's global table only, so the effect of the per-series calibration is visible.
Export writes these figures into the card (``metrics.coverage_by_set``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from contract.card import ForecastCard
from contract.forecaster import SeriesForecaster
from training.forecast.data import load_series
from training.forecast.metrics import coverage, mase_scale, smape

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "data"
M4_FILE = SHARED / "m4_hourly" / "Hourly-train.csv"
ETTH1_FILE = SHARED / "etth1" / "ETTh1.csv"
LEVELS = (50.0, 80.0, 95.0)
CHUNK = 512  # series per graph call


def forecast_all(
    sess: Any, core: SeriesForecaster, histories: list[np.ndarray], horizon: int
) -> dict[str, np.ndarray]:
    """Means, bounds and backtest counts for every history, ``CHUNK`` series at a time."""
    parts: list[dict[str, np.ndarray]] = []
    for i in range(0, len(histories), CHUNK):
        plan = core.plan(histories[i : i + CHUNK], horizon)
        med, q = sess.run(["median", "quantiles"], {"values": plan.inputs})
        fc = core.outputs(plan, med, q, horizon, list(LEVELS))
        parts.append({"mean": fc.mean, "backtests": fc.backtests, **fc.bounds})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def covered(y: np.ndarray, f: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """Coverage (%) at each of LEVELS over the windows ``rows`` (1e-12 of slack for ties)."""
    return {
        f"{lev:g}": coverage(
            y[rows], f[f"lo-{lev:g}"][rows] - 1e-12, f[f"hi-{lev:g}"][rows] + 1e-12
        )
        for lev in LEVELS
    }


def score_set(
    sess: Any,
    core: SeriesForecaster,
    histories: list[np.ndarray],
    futures: np.ndarray,
    period: int,
) -> dict[str, Any]:
    """Coverage at LEVELS, sMAPE and MASE, as served and with the global table only."""
    h = futures.shape[1]
    scales = np.asarray([mase_scale(x, period) for x in histories])
    out: dict[str, Any] = {"windows": len(histories), "horizon": h}
    for name, c in (("served", core), ("global_only", dataclasses.replace(core, per_series=None))):
        f = forecast_all(sess, c, histories, h)
        err = np.abs(futures - f["mean"]).mean(axis=1)
        ok = scales > 0
        res: dict[str, Any] = {
            "coverage": covered(futures, f, np.ones(len(futures), bool)),
            "smape": float(np.mean(smape(futures, f["mean"]))),
            "mase": float(np.mean(err[ok] / scales[ok])),
        }
        if name == "served":
            per = f["backtests"] > 0
            res["per_series_share"] = float(per.mean())
            if per.any() and (~per).any():
                for tag, m in (("per_series_windows", per), ("global_windows", ~per)):
                    res[tag] = covered(futures, f, m)
        out[name] = res
    return out


def m4_windows(path: Path, horizon: int) -> tuple[list[np.ndarray], np.ndarray]:
    s = load_series(path)
    return [v[:-horizon] for v in s.values], np.stack([v[-horizon:] for v in s.values])


def rolling_windows(
    path: Path, core: SeriesForecaster, horizon: int, every: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Every value column of a long CSV, origins every ``every`` steps (see module doc)."""
    s = load_series(path, "long")
    ps = core.per_series
    first = core.window + horizon + (ps.stride * (ps.max_origins - 1) if ps else 0)
    hists, futs = [], []
    for v in s.values:
        for o in range(first, len(v) - horizon + 1, every):
            hists.append(v[:o])
            futs.append(v[o : o + horizon])
    return hists, np.stack(futs)


def coverage_report(
    folder: Path,
    card: ForecastCard,
    m4: Path | None = M4_FILE,
    etth1: Path | None = ETTH1_FILE,
    every: int = 168,
) -> dict[str, Any]:
    """{"m4_validation": ..., "etth1_rolling": ...} for the sets whose files exist."""
    from training.common.onnx_utils import ort_session

    sess = ort_session(folder / card.onnx.file)
    core = SeriesForecaster.from_card(card)
    h, p = card.max_horizon, card.seasonal_period
    report: dict[str, Any] = {"levels": list(LEVELS), "reference": "training.forecast.coverage"}
    if m4 is not None and Path(m4).is_file():
        hist, fut = m4_windows(Path(m4), h)
        report["m4_validation"] = {
            "what": f"the last {h} points of every M4 hourly series from everything before",
            **score_set(sess, core, hist, fut, p),
        }
    if etth1 is not None and Path(etth1).is_file():
        hist, fut = rolling_windows(Path(etth1), core, h, every)
        report["etth1_rolling"] = {
            "what": f"ETTh1, all 7 columns, origins every {every} h from the first with a full "
            f"window and every backtest before it, {h} points ahead from everything before",
            **score_set(sess, core, hist, fut, p),
        }
    return report
