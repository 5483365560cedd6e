"""Forecasters on users' data, through the API in-process: equivariance, coverage, edge cases, CPU.

    python benchmarks/series_models.py                       # ~2-4 minutes on 2 cores
    python benchmarks/series_models.py --models m4-hourly-gru:2 m4-hourly-gru:3 --json out.json

For each model (``POST /forecast`` on ``create_app(Settings(models_dir=models/))`` via
``TestClient``, so every figure is what a client gets):

- M4 validation: sMAPE, MASE, 80% / 95% coverage on the last 48 points of every M4 hourly
  series, sent everything before them;
- ETTh1, every column, rolling origins every 168 h (the first one with a full window and a
  backtest before it), 48 h ahead, sent the 2,000 values before each origin: MASE and coverage,
  and the share of series whose intervals were calibrated on their own backtest;
- shift/scale: the same ETTh1 windows sent as ``a*x + b`` for (a, b) in TRANSFORMS; the largest
  |f(a*x + b) - (a*f(x) + b)| over mean and bounds, relative to a times the window's range, and
  MASE of the shifted series (in its own units: MASE is shift- and scale-free, so an
  equivariant model scores the same);
- edge cases: a constant series 5.0, a mostly-zero series, a series at 1e-9 scale;
- CPU: process time per series of requests of 1 and of 64 series of 1,000 values.

Data come from ``../shared/data`` (``--data-dir``); no PyTorch is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fastapi.testclient import TestClient  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from training.forecast.data import load_series  # noqa: E402
from training.forecast.metrics import mase_scale, smape  # noqa: E402

H, M = 48, 24
LEVELS = [80.0, 95.0]
TRANSFORMS = [(1.0, 1000.0), (1.0, -1000.0), (1e-9, 0.0), (1000.0, 1e6), (2.5, -7.0)]
SENT = 2000  # values sent before each ETTh1 origin


def post(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/forecast", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"/forecast {r.status_code}: {r.text[:300]}")
    return r.json()


def forecast(
    client: TestClient, model: str, histories: list[np.ndarray], batch: int = 64
) -> dict[str, Any]:
    """Means, bounds [N, H] and calibration per series, ``batch`` series per request."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(histories), batch):
        body = {
            "series": [{"values": h.tolist()} for h in histories[i : i + batch]],
            "horizon": H,
            "level": LEVELS,
            "model": model,
        }
        out += post(client, body)["forecasts"]
    keys = ["mean"] + [f"{s}-{lev:g}" for lev in LEVELS for s in ("lo", "hi")]
    res: dict[str, Any] = {k: np.asarray([f[k] for f in out], dtype=np.float64) for k in keys}
    res["calibration"] = [f.get("calibration", "global") for f in out]
    return res


def scores(f: dict[str, Any], hist: list[np.ndarray], y: np.ndarray) -> dict[str, Any]:
    scales = np.asarray([mase_scale(x, M) for x in hist])
    ok = scales > 0
    err = np.abs(y - f["mean"]).mean(axis=1)
    sm = smape(y, f["mean"])
    cov = {
        f"{lev:g}": float(100 * np.mean((y >= f[f"lo-{lev:g}"]) & (y <= f[f"hi-{lev:g}"])))
        for lev in LEVELS
    }
    per = np.asarray([c == "series" for c in f["calibration"]])
    return {
        "windows": len(hist),
        "smape": float(sm.mean()),
        "mase": float(np.mean(err[ok] / scales[ok])),
        "coverage": cov,
        "per_series_share": float(per.mean()),
    }


def etth1_windows(path: Path, first: int) -> tuple[list[np.ndarray], np.ndarray]:
    s = load_series(path, "long")
    hists, futs = [], []
    for v in s.values:
        for o in range(first, len(v) - H + 1, 168):
            hists.append(v[max(0, o - SENT) : o])
            futs.append(v[o : o + H])
    return hists, np.stack(futs)


def equivariance(
    client: TestClient, model: str, hist: list[np.ndarray], y: np.ndarray, base: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    keys = ["mean"] + [f"{s}-{lev:g}" for lev in LEVELS for s in ("lo", "hi")]
    span = np.asarray([np.ptp(x[-336:]) for x in hist])[:, None]
    for a, b in TRANSFORMS:
        f = forecast(client, model, [a * x + b for x in hist])
        worst = max(
            float(np.max(np.abs(f[k] - (a * base[k] + b)) / (a * np.maximum(span, 1e-300))))
            for k in keys
        )
        s = scores(f, [a * x + b for x in hist], a * y + b)
        rows.append(
            {"a": a, "b": b, "max_rel_err": worst, "mase": s["mase"], "coverage": s["coverage"]}
        )
    return rows


def edge_cases(client: TestClient, model: str) -> dict[str, Any]:
    t = np.arange(1000)
    day = 1 + np.sin(2 * np.pi * t / 24)
    rng = np.random.default_rng(0)
    sparse = np.where(rng.random(1000) < 0.1, rng.gamma(1.0, 2.0, 1000), 0.0)
    noisy = day + rng.normal(0, 0.2, 1000)
    body = {
        "series": [
            {"id": "constant", "values": [5.0] * 1000},
            {"id": "mostly-zero", "values": sparse.tolist()},
            {"id": "unit", "values": noisy.tolist()},
            {"id": "nano", "values": (noisy * 1e-9).tolist()},
        ],
        "horizon": H,
        "level": LEVELS,
        "model": model,
    }
    out = post(client, body)
    f = {x["id"]: x for x in out["forecasts"]}
    width = {k: float(np.mean(np.subtract(f[k]["hi-80"], f[k]["lo-80"]))) for k in f}
    return {
        "constant_5": {
            "mean_min": min(f["constant"]["mean"]),
            "mean_max": max(f["constant"]["mean"]),
            "width_80": width["constant"],
        },
        "mostly_zero_min_forecast_or_bound": min(
            min(f["mostly-zero"][k]) for k in ("mean", "lo-80", "lo-95")
        ),
        "nano_width_80_over_1e-9_times_unit_width_80": width["nano"] / (1e-9 * width["unit"]),
        "warnings": out["warnings"],
    }


def cpu(client: TestClient, model: str) -> dict[str, float]:
    t = np.arange(1000)
    x = (
        100 + 30 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(1).normal(0, 3, 1000)
    ).tolist()
    res = {}
    for n, reps in ((1, 300), (64, 12)):
        body = {"series": [{"values": x}] * n, "horizon": H, "level": LEVELS, "model": model}
        for _ in range(3):
            post(client, body)
        c0 = time.process_time()
        for _ in range(reps):
            post(client, body)
        res[f"ms_per_series_batch{n}"] = 1000 * (time.process_time() - c0) / (reps * n)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=["m4-hourly-gru:2", "m4-hourly-gru:3"])
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    from training.forecast.data import read_m4_wide

    m4 = read_m4_wide(args.data_dir / "m4_hourly" / "Hourly-train.csv")
    m4_hist = [v[:-H] for v in m4.values]
    m4_y = np.stack([v[-H:] for v in m4.values])
    et_hist, et_y = etth1_windows(args.data_dir / "etth1" / "ETTh1.csv", 336 + H + 24)
    report: dict[str, Any] = {}
    settings = Settings(models_dir=args.models_dir, max_series=1000, max_series_values=5_000_000)
    with TestClient(create_app(settings)) as client:
        for model in args.models:
            t0 = time.perf_counter()
            r: dict[str, Any] = {}
            r["m4_validation"] = scores(forecast(client, model, m4_hist), m4_hist, m4_y)
            base = forecast(client, model, et_hist)
            r["etth1_rolling"] = scores(base, et_hist, et_y)
            r["shift_scale"] = equivariance(client, model, et_hist, et_y, base)
            r["edge_cases"] = edge_cases(client, model)
            r["cpu"] = cpu(client, model)
            r["seconds"] = round(time.perf_counter() - t0, 1)
            report[model] = r
            print(model, json.dumps(r, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
