"""ONNX export of the ensemble, parity check against PyTorch, figures and card.json.

Versions 3 on (``--normalise floorlog|affine``): the graph takes each window in its own units
(``values`` float32 [batch, window] = ``contract.forecast.Scaling.encode`` of the most recent
``window`` points, computed by the host in float64) and returns the members' median and
quantiles in those units; the host maps them back. Versions 1-2 (``log``): the graph takes RAW
values (shifted positive by serving when needed), the scaling lives inside it.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np

from contract.card import ForecastCard
from contract.forecast import CEILING_RANGES, G_CLIP, LEVEL_GRID, positive_shift
from training.forecast.data import SeriesSet
from training.forecast.metrics import score
from training.forecast.train import (
    QUANTILES,
    ForecastConfig,
    evaluate_all,
    graph_input,
    intervals,
    intervals_scaled,
    known_dataset,
    member_plan,
    predict,
    predict_g,
    scaling_of,
)

PARITY_BATCHES = (1, 3, 64, 257)
# card: intervals.per_series (scaled models); see contract.forecast.plan_backtests
PER_SERIES = {
    "rule": "scaled",
    "min_origins": 1,
    "max_origins": 1,
    "stride": 24,
    "reference_level": 80.0,
    "max_ratio": 4.0,
}  # + min_scores: half of the max_horizon backtest scores (intervals_section)


def export_onnx(ens: Any, path: str | Path, window: int) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.rand(2, window) + 0.5
    torch.onnx.export(
        ens,
        (dummy,),
        str(path),
        input_names=["values"],
        output_names=["median", "quantiles"],
        dynamic_axes={"values": {0: "batch"}, "median": {0: "batch"}, "quantiles": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    # The tracer leaves the horizon/quantile dims symbolic; pin them so the signature is exact.
    import onnx

    model = onnx.load(str(path))
    horizon = ens.members[0].horizon
    static = {"median": [horizon], "quantiles": [horizon, 3]}
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for d, v in zip(dims[1:], static[out.name], strict=True):
            d.Clear()
            d.dim_value = v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|b|, 1e-6), elementwise."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-6)))


def parity(ens: Any, sess: Any, x: np.ndarray) -> dict[str, Any]:
    """Max difference ONNX vs PyTorch on several batch sizes (the graph's inputs): relative for
    versions 1-2 (outputs in the series' units), absolute for scaled models (outputs in graph
    units, O(1) and often near 0, where a relative difference means nothing)."""
    import torch

    xs = graph_input(x, ens.scaling)
    out: dict[str, Any] = {"batches": {}}
    worst = 0.0
    for b in PARITY_BATCHES:
        xb = np.resize(xs, (b, xs.shape[1])).astype(np.float32)
        with torch.no_grad():
            med_t, q_t = ens(torch.from_numpy(xb))
        med_o, q_o = sess.run(["median", "quantiles"], {"values": xb})
        if ens.scaling is None:
            d = max(rel_diff(med_o, med_t.numpy()), rel_diff(q_o, q_t.numpy()))
        else:
            d = float(max(np.abs(med_o - med_t.numpy()).max(), np.abs(q_o - q_t.numpy()).max()))
        out["batches"][str(b)] = d
        worst = max(worst, d)
    key = "max_abs_rel_diff" if ens.scaling is None else "max_abs_diff_graph_units"
    out[key] = worst
    out["tolerance"] = 1e-4
    out["passed"] = worst <= 1e-4
    return out


def latency_ms(sess: Any, x: np.ndarray, reps: int = 20) -> float:
    xb = x.astype(np.float32)
    sess.run(None, {"values": xb})
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(None, {"values": xb})
    return 1000 * (time.perf_counter() - t0) / reps


def plot_parity(ens: Any, sess: Any, x: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    med_t, _ = predict(ens, x, ens.scaling)
    med_o, _ = predict(sess, x, ens.scaling)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].scatter(med_t.ravel(), med_o.ravel(), s=2, alpha=0.4)
    lim = [min(med_t.min(), med_o.min()), max(med_t.max(), med_o.max())]
    axes[0].plot(lim, lim, "k--", lw=0.8)
    axes[0].set_xscale("symlog")
    axes[0].set_yscale("symlog")
    axes[0].set_xlabel("PyTorch median forecast")
    axes[0].set_ylabel("ONNX median forecast")
    rel = np.abs(med_o - med_t) / np.maximum(np.abs(med_t), 1e-6)
    axes[1].hist(np.log10(np.maximum(rel.ravel(), 1e-12)), bins=60)
    axes[1].set_xlabel("log10 relative difference")
    axes[1].set_title(f"max {rel.max():.2e}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_examples(
    x: np.ndarray,
    y: np.ndarray,
    med: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    path: Path,
    ids: list[str],
    n: int = 4,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(x))
    pick = np.linspace(0, len(x) - 1, n).astype(int)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3), squeeze=False)
    hz = y.shape[1]
    for ax, i in zip(axes[0], pick, strict=True):
        past = x[i, -3 * hz :]
        t0 = np.arange(-len(past), 0)
        t1 = np.arange(hz)
        ax.plot(t0, past, color="k", lw=0.8)
        ax.plot(t1, y[i], color="k", lw=0.8, ls=":")
        ax.plot(t1, med[i, :hz], color="C0")
        ax.fill_between(t1, lo[i], hi[i], color="C0", alpha=0.25, label="80%")
        ax.set_title(ids[i])
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def dataset_entry(path: str | Path, series: SeriesSet) -> dict[str, Any]:
    """What the card says about the training file: its bytes, and what was read from it."""
    from training.common.artifacts import dataset_record

    known = known_dataset(path)
    rec = dataset_record(path, known[1] if known else None)
    if known:
        rec["dataset"] = known[0]
    rec["layout"] = "M4 wide (one series per row)" if series.source == "m4-wide" else "long"
    rec["rows"] = series.rows
    if series.columns:
        rec["time_column"] = series.columns["time"]
        rec["value_columns"] = series.columns["targets"]
    if series.times:
        stamps = [t for ts in series.times for t in ts]
        rec["first_timestamp"], rec["last_timestamp"] = min(stamps), max(stamps)
    rec["series"] = len(series)
    rec["points"] = int(sum(len(v) for v in series.values))
    return rec


def describe(cfg: ForecastConfig, members: int, data: dict[str, Any], m: dict[str, Any]) -> str:
    """One sentence generated from the run: the model, its data and its held-out figures."""
    d = data
    name = f"{d['dataset']} {d['file']}" if d.get("dataset") else d["file"]
    which = d.get("value_columns") or []
    series = f"{d['series']} series" + (f": {', '.join(which)}" if 0 < len(which) <= 5 else "")
    model = f"{members}-member {cfg.cell.upper()} ensemble" if members > 1 else cfg.cell.upper()
    shipped, naive = m["ensemble_onnx"], m["seasonal_naive"]
    return (
        f"{model} forecaster (reads the last {cfg.window} values, forecasts up to "
        f"{cfg.horizon} steps, seasonal period {cfg.period}, freq {cfg.freq!r}) trained on "
        f"{name} ({d['rows']:,} rows, {series}); on the last {cfg.holdout * cfg.val_windows} "
        f"points of every series, never trained on: sMAPE {shipped['smape']:.2f}, MASE "
        f"{shipped['mase']:.3f} (seasonal naive {naive['smape']:.2f} / {naive['mase']:.3f})."
    )


def calibration_text(cfg: ForecastConfig, metrics: dict[str, Any]) -> str:
    """What the interval table was fitted on, in words (card: intervals.calibration)."""
    n, k, h = (
        metrics["calibration_windows"],
        metrics["calibration_windows_per_series"],
        cfg.holdout,
    )
    where = (
        f"{n} windows: the last {k} non-overlapping {h}-step window(s) before the validation "
        f"part of every series, each forecast from everything before it"
    )
    if cfg.calibration == "held-out":
        return (
            f"{where}. These windows were held out of member training (no member saw their "
            f"values as targets; they only appear as inputs of later windows), so the "
            f"residuals are out-of-sample like validation's; the final members were not "
            f"retrained on them. Validation (the last {h * cfg.val_windows} points) was not "
            f"used: see metrics.coverage for the coverage measured there"
        )
    return (
        f"{where}. These windows were also trained on, so residuals are optimistic and the "
        f"intervals too narrow: see metrics.coverage for the out-of-sample coverage"
    )


def try_it_request(cfg: ForecastConfig, series: SeriesSet) -> dict[str, Any]:
    """A /forecast body holding the end of the first series of the file: the model's whole
    window when that is short enough to print (at most 4 periods)."""
    import datetime as dt

    n = min(cfg.window, 4 * cfg.period, len(series.values[0]))
    item: dict[str, Any] = {
        "id": series.ids[0],
        "values": [float(v) for v in series.values[0][-n:]],
    }
    if series.times:
        try:
            item["start"] = dt.datetime.fromisoformat(series.times[0][-n]).isoformat()
            item["freq"] = cfg.freq
        except ValueError:  # not an ISO timestamp: leave the timestamps out
            pass
    return {"series": [item], "horizon": cfg.horizon}


def int8_report(
    onnx_path: Path, sess: Any, data: dict[str, Any], cfg: ForecastConfig, fp32: dict[str, Any]
) -> dict[str, Any]:
    """Quantize a scratch copy to int8 and measure it; only the MatMul/LSTM weights get
    quantized (onnxruntime has no quantized GRU op), so it is recorded, never shipped."""
    from training.common.onnx_utils import ort_session, quantize_int8

    x, y, scales = data["val"]
    x64 = graph_input(x[:64], scaling_of(cfg))
    with tempfile.TemporaryDirectory() as scratch:
        q_path = Path(scratch) / "model.int8.onnx"
        quantize_int8(onnx_path, q_path)
        qs = ort_session(q_path)
        med_q, _ = predict(qs, x, scaling_of(cfg))
        info: dict[str, Any] = {
            "metrics": score(y, med_q[:, : cfg.holdout], scales),
            "bytes": q_path.stat().st_size,
            "fp32_bytes": onnx_path.stat().st_size,
            "latency_ms_batch64": latency_ms(qs, x64),
            "fp32_latency_ms_batch64": latency_ms(sess, x64),
        }
    rel = info["metrics"]["smape"] / fp32["smape"] - 1
    info["smape_rel_change"] = rel
    info["note"] = (
        "not shipped: fp32 graph is already small and fast; int8 only touches the MatMul weights"
        if cfg.cell != "lstm" or rel > 0.02
        else "within 2% sMAPE but kept fp32 for parity"
    )
    return info


def export_model(
    ckpt: dict[str, Any],
    data: dict[str, Any],
    out: str | Path,
    int8: bool = False,
    log: Any = print,
    experiments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate + calibrate, write model.onnx, figures and card.json into ``out``.

    ``out`` is normally a store's staging folder (``contract.store.publishing``), so the card
    takes its name and version from the checkpoint's configuration, which the caller sets to
    the published ones; the store checks the card and renames the folder into place."""
    from training.common.artifacts import write_card
    from training.common.onnx_utils import ort_session

    cfg = ForecastConfig(**ckpt["config"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = evaluate_all(ckpt, data)
    metrics, table, ens = res["metrics"], res["table"], res["ensemble"]
    x, y, scales = data["val"]

    onnx_path = export_onnx(ens, out / "model.onnx", cfg.window)
    sess = ort_session(onnx_path)
    par = parity(ens, sess, x)
    log(f"parity: {json.dumps(par)}")
    med_o, q_o = predict(sess, x, ens.scaling)
    metrics["ensemble_onnx"] = score(y, med_o[:, : cfg.holdout], scales)

    int8_info: dict[str, Any] = {"considered": True, "shipped": False}
    if int8:
        int8_info.update(int8_report(onnx_path, sess, data, cfg, metrics["ensemble_onnx"]))
        log(f"int8: {json.dumps(int8_info)}")

    write_figures(ckpt, cfg, ens, sess, data, (med_o, q_o), table, out)
    card = build_card(cfg, ckpt, ens, data, metrics, table, onnx_path, sess, par, int8_info)
    this_run = {
        "variant": "shipped",
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("extra", "data")},
        "validation": {
            **metrics["ensemble_onnx"],
            "coverage": card["metrics"]["coverage"],
        },
    }
    card["experiments"] = [*(experiments or []), this_run]
    write_card(out, card)
    if cfg.normalise != "log":
        # coverage as served (per-series intervals) on M4 validation and ETTh1, measured on
        # the written folder by serving's own computation (training.forecast.coverage)
        from contract.card import read
        from training.forecast.coverage import coverage_report

        card["metrics"]["coverage_by_set"] = coverage_report(out, cast(ForecastCard, read(out)))
        log(f"coverage: {json.dumps(card['metrics']['coverage_by_set'])}")
        write_card(out, card)
    return card


def member_history(ckpt: dict[str, Any]) -> list[dict[str, float]]:
    """One row per epoch with every member's loss, sMAPE and MASE side by side (curves.png)."""
    history: list[dict[str, float]] = []
    for e in range(len(ckpt["history"][0])):
        rec: dict[str, float] = {"epoch": float(e + 1)}
        for i, h in enumerate(ckpt["history"]):
            rec[f"loss_m{i}"] = h[e]["train_loss"]
            rec[f"smape_m{i}"] = h[e]["val_smape"]
            rec[f"mase_m{i}"] = h[e]["val_mase"]
        history.append(rec)
    return history


def write_figures(
    ckpt: dict[str, Any],
    cfg: ForecastConfig,
    ens: Any,
    sess: Any,
    data: dict[str, Any],
    pred: tuple[np.ndarray, np.ndarray],
    table: np.ndarray,
    out: Path,
) -> None:
    """curves.png, parity.png and examples.png (80% intervals by the serving rule)."""
    from training.common.curves import plot_curves

    x, y, _ = data["val"]
    n = len(ckpt["history"])
    plot_curves(
        member_history(ckpt),
        out / "curves.png",
        [
            ("train pinball loss (log space)", [f"loss_m{i}" for i in range(n)]),
            ("validation sMAPE", [f"smape_m{i}" for i in range(n)]),
            ("validation MASE", [f"mase_m{i}" for i in range(n)]),
        ],
        title=f"{cfg.name}: {n} members",
    )
    plot_parity(ens, sess, x, out / "parity.png")
    med_o, q_o = pred
    sc = scaling_of(cfg)
    if sc is None:
        lo, hi = intervals(med_o, q_o, positive_shift(x), table, 80)
    else:
        lo, hi = intervals_scaled(sc, *predict_g(sess, x, sc), table, 80)
    plot_examples(x, y, med_o, lo, hi, out / "examples.png", data["val_ids"])


def onnx_section(cfg: ForecastConfig, onnx_path: Path) -> dict[str, Any]:
    """card.onnx: the graph's file, opset and signature."""
    from training.common.onnx_utils import opset_of

    return {
        "file": "model.onnx",
        "opset": opset_of(onnx_path),
        "inputs": [
            {
                "name": "values",
                "dtype": "float32",
                "shape": ["batch", cfg.window],
                "meaning": "raw last `window` points of each series, oldest first, "
                "after the preprocessing shift"
                if cfg.normalise == "log"
                else "the last `window` points of each series, oldest first, in the "
                "window's own units (preprocessing.normalise)",
            }
        ],
        "outputs": [
            {
                "name": "median",
                "dtype": "float32",
                "shape": ["batch", cfg.horizon],
                "meaning": "point forecast (median) in the shifted original scale"
                if cfg.normalise == "log"
                else "point forecast (median) in the window's units (decode on the host)",
            },
            {
                "name": "quantiles",
                "dtype": "float32",
                "shape": ["batch", cfg.horizon, len(QUANTILES)],
                "meaning": f"quantiles at levels {list(QUANTILES)} (last axis)",
            },
        ],
        "dynamic_axes": {"values": [0], "median": [0], "quantiles": [0]},
    }


def preprocessing_section(cfg: ForecastConfig) -> dict[str, Any]:
    """card.preprocessing: the rules of ``contract.forecast`` serving applies, in words."""
    section: dict[str, Any] = {
        "input": f"the most recent `window` ({cfg.window}) observations, oldest first. "
        f"Series shorter than `window` (but >= seasonal_period) are left-padded by "
        f"repeating their first seasonal cycle, keeping the phase: "
        f"pad[i] = x[(i - pad_len) mod seasonal_period].",
    }
    if cfg.normalise == "log":
        section["shift"] = {
            "rule": "per series row x (the values fed to the graph): if min(x) > 0 then "
            "shift = 0; else margin = max(0.1*(max(x)-min(x)), 0.1*max(|x|)), "
            "margin = 1.0 if that is 0 (all-zero row), shift = -min(x) + margin. "
            "Feed x + shift; subtract shift from every output (median, quantiles, "
            "interval bounds).",
            "rel_margin": 0.1,
            "abs_floor": 1.0,
            "reference": "contract.forecast.positive_shift",
        }
        section["in_graph"] = (
            "level = max(mean(last seasonal_period values), 1e-6); "
            "z = log(max(values/level, 1e-4)); members predict a log-space "
            "correction on top of the seasonal-naive forecast (last period of z "
            "repeated); outputs = exp(median over members) * level."
        )
        return section
    space = (
        f"g = ln((x - min) / scale + {cfg.delta:g}), loc = min"
        if cfg.normalise == "floorlog"
        else "g = (x - loc) / scale, loc = mean of the last seasonal_period values"
    )
    back = (
        f"x = min + scale * (exp(g) - {cfg.delta:g})"
        if cfg.normalise == "floorlog"
        else "x = loc + scale * g"
    )
    section["normalise"] = {
        "rule": cfg.normalise,
        "delta": cfg.delta,
        "clip": G_CLIP,
        "ceiling_ranges": CEILING_RANGES,
        "text": f"per window x (float64, on the host): min = min(x), scale = std(x) (0 when "
        f"the spread is below 1e-13 * max|x|: a constant window); {space}, clipped to "
        f"+-{G_CLIP:g}, 0 for a constant window; fed as float32. Every graph output g (median, "
        f"quantiles, interval bounds) maps back as {back}, kept within "
        f"[min(x), max(x) + {CEILING_RANGES:g} * (max(x) - min(x))]. So "
        "forecast(a*x + b) = a*forecast(x) + b for any a > 0 and b, a non-negative history "
        "never gets a negative forecast or bound, and a constant window gets that constant "
        "with zero-width intervals.",
        "reference": "contract.forecast.Scaling",
    }
    section["in_graph"] = (
        "members read the window one seasonal period per step and predict a correction to "
        "the seasonal-naive forecast in graph units (last period of g repeated)"
        + (
            "; each also reads the window's affine and ln(1 + v) views, derived in-graph"
            if cfg.views
            else ""
        )
        + "; outputs = elementwise median over members, in graph units."
    )
    return section


# card: intervals.rule, in words (the code is contract.forecast / contract.forecaster)
SCALED_RULE = (
    "for level L in (0,100), per horizon step h: spread_h = "
    "max((g_q0.9_h - g_q0.1_h)/2, 1e-6); k_h(L) = linear interpolation of `table[h]` "
    "over `levels` for L <= levels[-1], else table[h][-1] * ln(1 - L/100) / "
    "ln(1 - levels[-1]/100); lo/hi = decode(g_median_h -/+ k_h(L) * spread_h), "
    "kept within [window min, window max + ceiling_ranges * range]. Per series "
    "(per_series, rule 'scaled'): when the series has at least window + max_horizon "
    "values, a backtest forecasts its last max_horizon values x[o:o+H] from "
    "x[o-window:o] (o = n - H); scores s_h = |g(y_h) - g_median_h| / spread_h in that "
    "window's units, leaving out targets below the window's floor (no bound reaches "
    "them); with at least min_scores scores, every k_h(L) of the series is multiplied "
    "by one factor: the conformal quantile (k-th smallest, k = ceil((m+1) R/100)) of "
    "s_h / k_h(R) at R = reference_level, clipped to [1/max_ratio, max_ratio]. "
    "Monotone in L; lo <= median <= hi; the first steps do not depend on the "
    "requested horizon."
)
LOG_RULE = (
    "for level L in (0,100), per horizon step h (shifted space): "
    "spread_h = max((ln q0.9_h - ln q0.1_h)/2, 1e-6); k_h(L) = linear "
    "interpolation of `table[h]` over `levels` for L <= levels[-1], else "
    "table[h][-1] * ln(1 - L/100) / ln(1 - levels[-1]/100); "
    "lo = median*exp(-k_h(L)*spread_h), hi = median*exp(+k_h(L)*spread_h); "
    "then subtract the shift. Monotone in L; lo <= median <= hi."
)


def intervals_section(
    cfg: ForecastConfig, table: np.ndarray, metrics: dict[str, Any]
) -> dict[str, Any]:
    """card.intervals: the conformal table, its levels and how serving turns it into bounds."""
    scaled = cfg.normalise != "log"
    section: dict[str, Any] = {
        "method": "normalised split-conformal in each window's graph units, per series "
        "from its own backtests when it brings enough history"
        if scaled
        else "normalised split-conformal on log residuals",
        "rule": SCALED_RULE if scaled else LOG_RULE,
        "levels": list(LEVEL_GRID),
        "table": np.round(table, 5).tolist(),
        "table_horizon": int(table.shape[0]),
        "beyond_table_horizon": "use the last row of the table",
    }
    if scaled:
        section["per_series"] = {**PER_SERIES, "min_scores": max(1, cfg.horizon // 2)}
    section.update(
        {
            "calibration": calibration_text(cfg, metrics),
            "calibration_mode": cfg.calibration,
            "calibration_windows": metrics["calibration_windows"],
            "calibration_coverage": metrics["calibration_coverage"],
            "reference": "contract.forecast (g_spread, interval_k, scaled_bounds, "
            "plan_backtests, series_factor)"
            if scaled
            else "contract.forecast (log_spread, interval_k, interval_bounds)",
        }
    )
    return section


def metrics_section(cfg: ForecastConfig, metrics: dict[str, Any], n_val: int) -> dict[str, Any]:
    """card.metrics: validation figures of the ensemble, its members and the baselines."""
    return {
        "validation": f"last {cfg.holdout * cfg.val_windows} points of every series "
        f"({n_val} windows of {cfg.holdout}), never trained on",
        "seasonal_naive": metrics["seasonal_naive"],
        "naive": metrics["naive"],
        "members": metrics["members"],
        "ensemble": metrics["ensemble"],
        "ensemble_onnx": metrics["ensemble_onnx"],
        "coverage": {
            "80": metrics["interval_coverage"]["80"],
            "95": metrics["interval_coverage"]["95"],
            "50": metrics["interval_coverage"]["50"],
            "raw_quantiles_10_90": metrics["quantile_coverage_10_90"],
        },
        "definitions": "M4: sMAPE = 200/h sum|y-f|/(|y|+|f|); MASE scaled by the in-sample "
        f"seasonal-naive MAE (m={cfg.period}); means over series",
    }


def training_section(cfg: ForecastConfig, ckpt: dict[str, Any]) -> dict[str, Any]:
    """card.training: the run's configuration, the loss in words and the training time."""
    section: dict[str, Any] = asdict(cfg)
    section["data"] = Path(cfg.data).name
    section["loss"] = (
        "pinball at 0.1/0.5/0.9 in log(value/level) space, median "
        "weighted x2 (= L1 on the point forecast)"
    )
    if cfg.normalise != "log":
        section["loss"] = (
            "pinball at 0.1/0.5/0.9 on the future's graph units (preprocessing.normalise: "
            "each window in its own units), median weighted x2; constant windows dropped. "
            "Members with loss weight 'relative' multiply each window's loss by the value of one "
            "graph unit there / |level| (errors relative to the series' level, as sMAPE "
            "weighs them); 'none' leaves it as is (floorlog: errors relative to the distance "
            "from the window's floor); 'mase' by one graph unit / the window's own "
            "seasonal-naive MAE. Weights are divided by the batch median, capped at "
            f"{cfg.weight_cap:g} and renormalised to mean 1 (training.forecast.train."
            "scaled_weights)"
        )
        section["seconds"] = float(sum(r["seconds"] for h in ckpt["history"] for r in h))
        return section
    if any(w == "mase" for _, w in member_plan(cfg)):
        section["loss"] += (
            "; members with loss weight 'mase' (members.loss_weights) multiply each window's "
            "loss by level / the window's own seasonal-naive MAE, divided by the batch median, "
            f"capped at {cfg.weight_cap:g} and renormalised to mean 1 "
            "(training.forecast.train.mase_weights), as MASE weighs errors"
        )
    section["seconds"] = float(sum(r["seconds"] for h in ckpt["history"] for r in h))
    return section


def build_card(
    cfg: ForecastConfig,
    ckpt: dict[str, Any],
    ens: Any,
    data: dict[str, Any],
    metrics: dict[str, Any],
    table: np.ndarray,
    onnx_path: Path,
    sess: Any,
    par: dict[str, Any],
    int8_info: dict[str, Any],
) -> dict[str, Any]:
    """card.json (without ``experiments``), in the order its sections are read."""
    x, y, _ = data["val"]
    n = len(ckpt["history"])
    dataset = dataset_entry(cfg.data, data["series"])
    return {
        "task": "forecast",
        "name": cfg.name,
        "version": cfg.version,
        "description": describe(cfg, n, dataset, metrics),
        "cell": cfg.cell,
        "sizes": {
            "hidden": cfg.hidden,
            "layers": cfg.layers,
            "input_size": cfg.period,
            "steps": cfg.window // cfg.period,
            "parameters_per_member": sum(p.numel() for p in ens.members[0].parameters()),
        },
        "members": {
            "count": n,
            "seeds": [seed for seed, _ in member_plan(cfg)],
            "loss_weights": [w for _, w in member_plan(cfg)],
            "combination": "elementwise median over members of the "
            + ("log-space" if cfg.normalise == "log" else "graph-unit")
            + " quantiles, computed in-graph",
        },
        "onnx": onnx_section(cfg, onnx_path),
        "window": cfg.window,
        "max_horizon": cfg.horizon,
        "freq": cfg.freq,
        "seasonal_period": cfg.period,
        "quantile_levels": list(QUANTILES),
        "preprocessing": preprocessing_section(cfg),
        "intervals": intervals_section(cfg, table, metrics),
        "metrics": metrics_section(cfg, metrics, len(y)),
        "parity": par,
        "int8": int8_info,
        "latency_ms_batch64_fp32": latency_ms(sess, graph_input(x[:64], scaling_of(cfg))),
        "training": training_section(cfg, ckpt),
        "datasets": [dataset],
        "figures": {"curves": "curves.png", "parity": "parity.png", "examples": "examples.png"},
    }
