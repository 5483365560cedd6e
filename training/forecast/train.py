"""Train, evaluate and export the global hourly forecaster.

    python -m training.cli forecast train --help        # M4 Hourly by default
    python -m training.cli forecast train --data ../shared/data/etth1/ETTh1.csv --targets OT \
        --name etth1-ot-gru     # publishes the next free version of models/forecast/etth1-ot-gru

Pipeline: load series -> hold out the last ``holdout`` points of each (validation) -> hold
out the ``calib_windows`` ``holdout``-point stretches before them (calibration) -> train
``members`` seeds on random windows of what precedes both -> conformal calibration of the
intervals on the calibration windows, which no member was trained on -> metrics on the
validation windows (model, seasonal naive, naive) -> one ONNX graph (members + median +
scaling inside) -> parity -> card.json.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.forecast import (
    LEVEL_GRID,
    Scaling,
    WindowNorm,
    conformal_quantile,
    g_scores,
    g_spread,
    interval_bounds,
    interval_k,
    last_window,
    log_spread,
    positive_shift,
    scaled_bounds,
    tail_ratio,
)
from training.common.config_cli import option
from training.forecast.data import (
    ETTH1_URL,
    M4_URL,
    SeriesSet,
    WindowSampler,
    calibration_split,
    load_series,
    origin_windows,
    split_holdout,
)
from training.forecast.metrics import baseline_scores, coverage, mase_scale, score

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "m4_hourly" / "Hourly-train.csv"
DEFAULT_NAME = "m4-hourly-gru"  # the name of a model trained on DEFAULT_DATA
QUANTILES = (0.1, 0.5, 0.9)
MIN_CALIBRATION = 400  # conformal calibration windows wanted in total
# held-out calibration never takes more than this share of the shortest training part
CALIB_MAX_FRACTION = 0.25
CALIBRATION_MODES = ("held-out", "in-sample")
LOSS_WEIGHTS = ("none", "mase", "relative")
NORMALISE = ("floorlog", "affine", "log")
WEIGHT_CAP = 10.0  # loss_weight="mase": cap of a window's weight, in medians of the batch


@dataclass
class ForecastConfig:
    """Everything a run is: the flags of ``seqserve-train forecast train`` are generated from
    these fields (``training.common.config_cli``), so each default is written here only."""

    # data
    data: str = option(
        str(DEFAULT_DATA),
        "CSV: M4 wide format (V1=id, then one series per row) or a long CSV with a timestamp "
        "column and value columns",
    )
    fmt: str = option(
        "auto",
        "input layout; auto = m4 when the first header cell is V1",
        choices=["auto", "m4", "long"],
        flag="--format",
    )
    time_col: str | None = option(None, "long CSV: timestamp column; not set: the first column")
    targets: list[str] | None = option(
        None, "long CSV: value column(s), each one series; not set: all but the time column"
    )
    freq: str = option("h", "frequency tag written to the card")
    period: int = option(
        24, "seasonal period in steps (24 for hourly data); the net reads one period per step"
    )
    holdout: int = option(48, "last points of every series held out for validation")
    val_windows: int = option(
        1,
        "hold out this many consecutive --holdout stretches per series and score each "
        "(useful for single-series data)",
    )
    # model
    # "floorlog"/"affine" (version 3 on): forecast(a*x + b) = a*forecast(x) + b by construction;
    # "log":
    # versions 1-2 (a log of the shifted values inside the graph)
    normalise: str = option(
        "floorlog",
        "floorlog: each window is fed as ln((x - min) / std + delta) of its own; affine: as "
        "(x - level) / std; both make forecasts follow any shift and scale of the data "
        "exactly (contract.forecast.Scaling); log: the log-ratio scaling of versions 1-2",
        choices=list(NORMALISE),
    )
    delta: float = option(0.1, "floorlog: the log's offset above the window's minimum, in stds")
    cell: str = option("gru", "recurrent cell", choices=["rnn", "lstm", "gru"])
    window: int = option(336, "input length in steps (a multiple of --period)")
    horizon: int = option(48, "max forecast horizon output by the graph (>= --holdout)")
    hidden: int = option(128, "hidden units")
    layers: int = option(1, "recurrent layers")
    dropout: float = option(0.0, "dropout between recurrent layers")
    linear_skip: bool = option(False, "add a direct linear window -> median correction path")
    views: bool = option(
        False, "floorlog: the net also reads the window's affine and ln(1 + v) views (in-graph)"
    )
    # optimisation
    members: int = option(5, "ensemble size (seeds --seed, --seed + 1, ...)")
    seed: int = option(0, "first seed")
    epochs: int = option(70, "epochs per member")
    batch_size: int = option(256, "batch size")
    lr: float = option(1e-2, "initial learning rate (Adam)")
    lr_final: float = option(1e-4, "learning rate at the end of the cosine decay")
    windows_per_epoch: int = option(8192, "random training windows drawn per epoch")
    recent: int = option(
        0,
        "if > 0, draw training targets only from the last RECENT points of each series "
        "(0 = anywhere in the training part)",
    )
    # (24: the position-in-day of every training window is the forecast origin's)
    align: int = option(
        0,
        "if > 1, training windows only end a multiple of ALIGN steps before the end of a "
        "series (24 = the same position in the day as the forecast origin; 0 = any)",
    )
    clip: float = option(1.0, "gradient-norm clip")
    # "mase": weight each window's loss by level / its seasonal-naive MAE (see mase_weights),
    # so training minimises what MASE measures rather than a relative (sMAPE-like) error
    loss_weight: str = option(
        "none",
        "none: the log-space pinball loss as is (a relative error, like sMAPE); mase: weight "
        "each window by level / its seasonal-naive MAE, as MASE scores it",
        choices=list(LOSS_WEIGHTS),
    )
    # see member_plan
    relative_members: int = option(
        0,
        "scaled models: train the first N of the --members with the 'relative' weighting "
        "(errors relative to the series' level, as sMAPE weighs them)",
    )
    mase_members: int = option(
        0,
        "with --loss-weight none: train the last N of the --members with the mase weighting "
        "instead (their seeds restart at --seed); mixing both kinds helps MASE",
    )
    weight_cap: float = option(
        WEIGHT_CAP, "--loss-weight mase: cap of a window's weight, in medians of its batch"
    )
    threads: int = option(1, "torch CPU threads")
    # Conformal calibration windows per series: the last `calib_windows` non-overlapping
    # `holdout`-point stretches before validation (raised to reach MIN_CALIBRATION windows on
    # few-series data, capped at CALIB_MAX_FRACTION of the shortest series). "held-out": they
    # are cut out of member training (honest residuals); "in-sample": the members also trained
    # on them (version 1's scheme: optimistic residuals, intervals too narrow).
    calibration: str = option(
        "held-out",
        "held-out: the calibration windows are cut out of member training, so the intervals "
        "are calibrated on residuals the members never fitted; in-sample: the members also "
        "train on them (version 1's scheme; intervals come out too narrow)",
        choices=list(CALIBRATION_MODES),
    )
    calib_windows: int = option(
        1,
        "conformal calibration windows (of --holdout points) per series, just before "
        "validation; raised on few-series data to reach ~400 windows in all",
    )
    # output: the published name and version (set from the publishing flags, no flag here)
    name: str = DEFAULT_NAME
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# training


def pinball(pred: Any, target: Any, qs: tuple[float, ...], weight: Any = None) -> Any:
    """Mean pinball loss; pred [B, H, Q], target [B, H], optional per-window weight [B].
    q=0.5 is half the L1 loss, so the median head is weighted x2 (-> plain L1 on the point
    forecast)."""
    import torch

    q = torch.tensor(qs, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    loss = torch.maximum(q * diff, (q - 1) * diff)
    w = torch.tensor([2.0 if abs(x - 0.5) < 1e-9 else 1.0 for x in qs], dtype=pred.dtype)
    loss = loss * w
    if weight is not None:
        loss = loss * weight[:, None, None]
    return loss.mean()


def mase_weights(x: np.ndarray, period: int, cap: float = WEIGHT_CAP) -> np.ndarray:
    """Per-window loss weights that turn the log-space (relative) error into MASE's units:
    level / in-window seasonal-naive MAE (x [B, W], shifted positive), divided by its median
    and capped at ``cap`` so near-constant windows cannot dominate; mean 1 over the batch."""
    level = np.maximum(x[:, -period:].mean(axis=1), 1e-6)
    mae = np.abs(x[:, period:] - x[:, :-period]).mean(axis=1)
    w = level / np.maximum(mae, 1e-3 * level)
    w = np.minimum(w / np.median(w), cap)
    return w / w.mean()


def scaling_of(cfg: ForecastConfig) -> Scaling | None:
    """The equivariant scaling of a run (None: the log scaling of versions 1-2)."""
    if cfg.normalise == "log":
        return None
    return Scaling(cfg.normalise, cfg.delta, cfg.period)


def scaled_weights(
    x: np.ndarray, sc: Scaling, n: WindowNorm, kind: str, cap: float = WEIGHT_CAP
) -> np.ndarray:
    """Per-window loss weights for the graph-space pinball loss (windows [B, W], raw values).

    ``relative`` (and ``none`` for affine): the unit of a graph-space error / |level|, so the
    loss is the error relative to the series' level, as the log-space loss of versions 1-2
    (and sMAPE) weigh it; ``none`` for floorlog: 1 (an error relative to the distance from
    the window's floor). ``mase``: the unit of a graph-space error over the window's
    seasonal-naive MAE, as MASE weighs it. Divided by the batch median, capped at ``cap``
    (near-zero levels and near-periodic windows cannot dominate), mean 1 over the batch."""
    p = sc.period
    if sc.rule == "floorlog":  # d(value) = (value - min + delta * scale) * d(graph unit)
        unit = x[:, -p:].mean(axis=1) - n.floor + sc.delta * n.scale
    else:
        unit = n.scale
    if kind == "mase":
        den = np.abs(x[:, p:] - x[:, :-p]).mean(axis=1)
    elif sc.rule == "floorlog" and kind == "none":
        return np.ones(len(x))
    else:
        den = np.abs(x[:, -p:].mean(axis=1))
    w = unit / np.maximum(den, 1e-3 * unit + 1e-300)
    w = np.minimum(w / np.median(w), cap)
    return w / w.mean()


def shifted(x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, Any, np.ndarray]:
    s = positive_shift(x)
    return x + s[:, None], (None if y is None else y + s[:, None]), s


def member_plan(cfg: ForecastConfig) -> list[tuple[int, str]]:
    """(seed, loss weighting) of every member, in order."""
    if "plan" in cfg.extra:  # a merged ensemble (merge_checkpoints) lists its members
        return [(int(seed), str(w)) for seed, w in cfg.extra["plan"]]
    if cfg.loss_weight == "mase" or (cfg.mase_members <= 0 and cfg.relative_members <= 0):
        return [(cfg.seed + i, cfg.loss_weight) for i in range(cfg.members)]
    n_mase = min(max(cfg.mase_members, 0), cfg.members)
    n_rel = min(max(cfg.relative_members, 0), cfg.members - n_mase)
    plain = [
        (cfg.seed + i, "relative" if i < n_rel else cfg.loss_weight)
        for i in range(cfg.members - n_mase)
    ]
    return plain + [(cfg.seed + i, "mase") for i in range(n_mase)]


def cosine_schedule(opt: Any, cfg: ForecastConfig, total: int) -> Any:
    """Learning rate from ``cfg.lr`` down to ``cfg.lr_final`` over ``total`` steps (cosine)."""
    import torch

    def factor(step: int) -> float:
        cos = 1 + math.cos(math.pi * min(step, total) / total)
        return (cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * cos) / cfg.lr

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_epoch(
    cfg: ForecastConfig,
    net: Any,
    opt: Any,
    sched: Any,
    x: np.ndarray,
    y: np.ndarray,
    weighting: str,
) -> float:
    """One pass over freshly sampled (shifted) windows; returns the mean training loss."""
    import torch

    from training.forecast.model import level_of, to_log_ratio

    sc = scaling_of(cfg)
    if sc is not None:
        return train_epoch_scaled(cfg, sc, net, opt, sched, x, y, weighting)

    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32))
    wt = None
    if weighting == "mase":
        wt = torch.from_numpy(mase_weights(x, cfg.period, cfg.weight_cap).astype(np.float32))

    def loss_of(rows: slice) -> Any:
        xb, yb = xt[rows], yt[rows]
        level = level_of(xb, cfg.period)
        pred = net(to_log_ratio(xb, level))
        return pinball(pred, to_log_ratio(yb, level), QUANTILES, None if wt is None else wt[rows])

    return optimise(cfg, net, opt, sched, len(x), loss_of)


def optimise(cfg: ForecastConfig, net: Any, opt: Any, sched: Any, n: int, loss_of: Any) -> float:
    """One step per full batch of ``n`` rows (``loss_of(rows)``), gradients clipped at
    ``cfg.clip``; returns the mean loss."""
    import torch

    losses = []
    for i in range(n // cfg.batch_size):
        loss = loss_of(slice(i * cfg.batch_size, (i + 1) * cfg.batch_size))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def train_epoch_scaled(
    cfg: ForecastConfig,
    sc: Scaling,
    net: Any,
    opt: Any,
    sched: Any,
    x: np.ndarray,
    y: np.ndarray,
    weighting: str,
) -> float:
    """One pass over raw windows fed in graph units: pinball loss on the future's graph units,
    each window weighted by :func:`scaled_weights` (constant windows are dropped: every output
    of theirs is the constant, whatever the graph says)."""
    import torch

    n = sc.stats(x)
    keep = n.scale > 0
    x, y, n = x[keep], y[keep], n.take(keep)
    z, yz = sc.encode(x, n), sc.encode(y, n)
    w = scaled_weights(x, sc, n, weighting, cfg.weight_cap)
    zt, yt = torch.from_numpy(z.astype(np.float32)), torch.from_numpy(yz.astype(np.float32))
    wt = torch.from_numpy(w.astype(np.float32))
    return optimise(
        cfg,
        net,
        opt,
        sched,
        len(z),
        lambda rows: pinball(net(zt[rows]), yt[rows], QUANTILES, wt[rows]),
    )


def train_member(
    cfg: ForecastConfig,
    sampler: WindowSampler,
    seed: int,
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    log: Any = print,
    loss_weight: str | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    import torch

    from training.common.seed import seed_everything
    from training.forecast.model import ForecastEnsemble, ForecastNet

    seed_everything(seed)
    rng = np.random.default_rng(seed)
    net = ForecastNet(
        cfg.cell,
        cfg.window,
        cfg.period,
        cfg.hidden,
        cfg.layers,
        cfg.horizon,
        cfg.dropout,
        cfg.linear_skip,
        cfg.delta if cfg.views and cfg.normalise == "floorlog" else 0.0,
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps_per_epoch = max(1, cfg.windows_per_epoch // cfg.batch_size)
    sched = cosine_schedule(opt, cfg, steps_per_epoch * cfg.epochs)
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        net.train()
        x, y = sampler.sample(steps_per_epoch * cfg.batch_size, rng)
        if cfg.normalise == "log":
            x, y, _ = shifted(x, y)
        loss = train_epoch(cfg, net, opt, sched, x, y, loss_weight or cfg.loss_weight)
        net.eval()
        m = evaluate_point(ForecastEnsemble([net], scaling_of(cfg)), *val, cfg.holdout)
        rec = {
            "epoch": epoch,
            "train_loss": loss,
            "val_smape": m["smape"],
            "val_mase": m["mase"],
            "seconds": time.time() - t0,
        }
        history.append(rec)
        log(
            f"  seed {seed} epoch {epoch:3d} loss {rec['train_loss']:.4f} "
            f"val sMAPE {m['smape']:.3f} MASE {m['mase']:.3f} ({rec['seconds']:.1f}s)"
        )
    return net, history


# --------------------------------------------------------------------------------------------
# prediction / evaluation


def run_graph(model: Any, xs: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The graph's own outputs (median, quantiles) for its inputs ``xs`` (torch module or
    ORT session), float64."""
    meds, qs = [], []
    for i in range(0, len(xs), batch):
        xb = xs[i : i + batch].astype(np.float32)
        if hasattr(model, "run"):  # onnxruntime session
            med, q = model.run(["median", "quantiles"], {"values": xb})
        else:
            import torch

            with torch.no_grad():
                med_t, q_t = model(torch.from_numpy(xb))
            med, q = med_t.numpy(), q_t.numpy()
        meds.append(med)
        qs.append(q)
    return np.concatenate(meds).astype(np.float64), np.concatenate(qs).astype(np.float64)


def graph_input(x: np.ndarray, sc: Scaling | None) -> np.ndarray:
    """What the graph is fed for raw windows ``x`` (float32): scaled or shifted values."""
    x = np.asarray(x, dtype=np.float64)
    if sc is not None:
        return sc.encode(x, sc.stats(x)).astype(np.float32)
    return (x + positive_shift(x)[:, None]).astype(np.float32)


def predict_g(model: Any, x: np.ndarray, sc: Scaling) -> tuple[np.ndarray, np.ndarray, WindowNorm]:
    """Scaled models: (median, quantiles) in graph units and the windows' norms."""
    n = sc.stats(x)
    med_g, q_g = run_graph(model, sc.encode(x, n))
    return med_g, q_g, n


def predict(model: Any, x: np.ndarray, sc: Scaling | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows [N, W] (any sign) -> (median [N, H], quantiles [N, H, 3]) in the original
    scale, with the serving rules applied around the model (torch module or ORT session):
    the equivariant scaling ``sc`` (floored at each window's minimum) or, for None, the
    positive shift of versions 1-2."""
    x = np.asarray(x, dtype=np.float64)
    if sc is not None:
        med_g, q_g, n = predict_g(model, x, sc)
        return sc.decode(med_g, n), sc.decode(q_g, n)
    xs, _, s = shifted(x)
    med, q = run_graph(model, xs)
    return med - s[:, None], q - s[:, None, None]


def evaluate_point(
    model: Any, x: np.ndarray, y: np.ndarray, scales: np.ndarray, holdout: int
) -> dict[str, float]:
    med, _ = predict(model, x, getattr(model, "scaling", None))
    return score(y, med[:, :holdout], scales)


def validation_set(
    series: SeriesSet, cfg: ForecastConfig
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray], list[str]]:
    """Held-out windows: the last ``val_windows`` consecutive ``holdout``-point stretches of
    every series (one by default), each forecast from everything before it. Returns
    ((x, y, MASE scales), per-window histories, per-window ids)."""
    xs, ys, hists, ids = [], [], [], []
    for sid, v in zip(series.ids, series.values, strict=True):
        for k in range(cfg.val_windows - 1, -1, -1):
            origin = len(v) - (k + 1) * cfg.holdout
            xs.append(last_window(v[:origin], cfg.window, cfg.period))
            ys.append(v[origin : origin + cfg.holdout])
            hists.append(v[:origin])
            ids.append(sid if cfg.val_windows == 1 else f"{sid}@{origin}")
    scales = np.asarray([mase_scale(h, cfg.period) for h in hists])
    return (np.stack(xs), np.stack(ys), scales), hists, ids


# --------------------------------------------------------------------------------------------
# intervals


def conformal_table(y: np.ndarray, med: np.ndarray, q: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per-horizon quantiles of the normalised log residual |log y - log med| / spread at every
    level of LEVEL_GRID -> [H, len(LEVEL_GRID)], non-decreasing along levels."""
    h = y.shape[1]
    ly = np.log(np.maximum(y + shift[:, None], 1e-12))
    lm = np.log(np.maximum(med[:, :h] + shift[:, None], 1e-12))
    r = np.abs(ly - lm) / log_spread(q[:, :h] + shift[:, None, None])
    return table_from_scores(r)


def conformal_table_scaled(
    sc: Scaling, y: np.ndarray, med_g: np.ndarray, q_g: np.ndarray, n: WindowNorm
) -> np.ndarray:
    """Scaled models: per-horizon quantiles of |y_g - median_g| / spread_g (each window in its
    own graph units, ``contract.forecast.g_scores``) -> [H, len(LEVEL_GRID)]. Constant windows
    (scale 0) are answered exactly and left out."""
    h = y.shape[1]
    keep = n.scale > 0
    nk = n.take(keep)
    r = g_scores(sc, y[keep], med_g[keep, :h], q_g[keep, :h], nk)
    return table_from_scores(r)


def table_from_scores(r: np.ndarray) -> np.ndarray:
    """Conformal scores [N, H] -> the table [H, len(LEVEL_GRID)], non-decreasing along levels;
    levels too fine for N windows continue with the exponential tail."""
    n, h = r.shape
    top = resolved_level(n)
    table = np.zeros((h, len(LEVEL_GRID)))
    for j, lev in enumerate(LEVEL_GRID):
        if lev == 0 or lev > top:
            continue
        # finite-sample conformal quantile: ceil((n+1) L) / n
        table[:, j] = conformal_quantile(r, lev, axis=0)
    table = np.maximum.accumulate(table, axis=1)
    if top < LEVEL_GRID[-1]:
        # Too few windows to tell these levels apart (each would be the largest residual, so 80%
        # and 95% intervals came out equal): continue from the highest level they resolve with
        # the same exponential tail interval_k uses beyond the grid, so wider stays wider.
        j_top = LEVEL_GRID.index(top)
        for j, lev in enumerate(LEVEL_GRID[j_top + 1 :], start=j_top + 1):
            table[:, j] = table[:, j_top] * tail_ratio(lev, top)
    return table


def resolved_level(n: int) -> float:
    """The highest level of LEVEL_GRID that ``n`` calibration windows resolve: its conformal
    quantile is below the largest residual, which every higher level would share."""
    ok = [lev for lev in LEVEL_GRID if 0 < lev and math.ceil((n + 1) * lev / 100.0) < n]
    return ok[-1] if ok else LEVEL_GRID[1]


def intervals_scaled(
    sc: Scaling,
    med_g: np.ndarray,
    q_g: np.ndarray,
    n: WindowNorm,
    table: np.ndarray,
    level: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The serving rule for scaled models (``contract.forecast.scaled_bounds``) with the
    global table: decode(median_g -/+ k_h(level) * spread_g), floored."""
    h = table.shape[0]
    k = interval_k(table, level)
    return scaled_bounds(sc, med_g[:, :h], g_spread(q_g[:, :h]), k, n)


def intervals(
    med: np.ndarray, q: np.ndarray, shift: np.ndarray, table: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The serving rule (``contract.forecast``, documented in the card) on unshifted model
    outputs: lo/hi = median * exp(-/+ k_h(level) * spread) in shifted space, then unshifted."""
    h = table.shape[0]
    k = interval_k(table, level)
    spread = log_spread(q[:, :h] + shift[:, None, None])
    return interval_bounds(med[:, :h] + shift[:, None], spread, shift, k)


# --------------------------------------------------------------------------------------------
# the full run


# public files recognised by their bytes (sha256), never by their name or layout
KNOWN_FILES = {
    "ea59b7783573c49077a835ab6465c7d66f1474783360f310988a9a737fbca62f": ("M4 Hourly", M4_URL),
    "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066": ("ETTh1", ETTH1_URL),
}


def known_dataset(path: str | Path) -> tuple[str, str] | None:
    """(public dataset name, URL) when the file is byte for byte a known public file."""
    from training.common.artifacts import sha256_file

    return KNOWN_FILES.get(sha256_file(path))


def calibration_windows_per_series(cfg: ForecastConfig, hist: list[np.ndarray]) -> int:
    """How many ``holdout``-point calibration windows each series gives (see ForecastConfig)."""
    n = max(cfg.calib_windows, math.ceil(MIN_CALIBRATION / max(1, len(hist))))
    if cfg.calibration == "held-out":
        shortest = min(len(h) for h in hist)
        n = min(n, max(1, int(CALIB_MAX_FRACTION * shortest) // cfg.holdout))
    return max(1, n)


def prepare(cfg: ForecastConfig) -> dict[str, Any]:
    """Series -> validation windows, calibration windows and the members' training histories.

    ``hist``: everything before validation; ``train_hist``: what the members train on (``hist``
    minus the calibration stretch when ``calibration == "held-out"``, else ``hist``)."""
    if cfg.loss_weight not in LOSS_WEIGHTS:
        raise ValueError(f"loss_weight must be one of {LOSS_WEIGHTS}, got {cfg.loss_weight!r}")
    if cfg.calibration not in CALIBRATION_MODES:
        raise ValueError(f"calibration must be one of {CALIBRATION_MODES}, got {cfg.calibration!r}")
    series = load_series(cfg.data, cfg.fmt, cfg.time_col, cfg.targets)
    if cfg.horizon < cfg.holdout:
        raise ValueError(f"horizon {cfg.horizon} must be >= holdout {cfg.holdout}")
    hist, _ = split_holdout(series, cfg.holdout * cfg.val_windows)
    val, val_hist, val_ids = validation_set(series, cfg)
    n_calib = calibration_windows_per_series(cfg, hist)
    if cfg.calibration == "held-out":
        train_hist, _ = calibration_split(hist, n_calib, cfg.holdout)
    else:
        train_hist = hist
    shortest = min(len(h) for h in train_hist)
    if shortest < cfg.period:  # last_window pads with a whole first cycle
        raise ValueError(
            f"a series has {shortest} points before its held-out windows, less than one "
            f"period ({cfg.period})"
        )
    return {
        "series": series,
        "hist": hist,
        "train_hist": train_hist,
        "calib_windows_per_series": n_calib,
        "val": val,
        "val_hist": val_hist,
        "val_ids": val_ids,
    }


def calibration_set(
    cfg: ForecastConfig, data: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, series index) of the calibration windows: per series, the targets ending
    ``k * holdout`` points before the end of ``hist`` for k < calib_windows_per_series, each
    forecast from everything before it."""
    xs, ys, idx = [], [], []
    for k in range(data["calib_windows_per_series"]):
        xk, yk, keep = origin_windows(
            data["hist"], cfg.window, cfg.holdout, cfg.period, back=k * cfg.holdout
        )
        if len(xk):
            xs.append(xk)
            ys.append(yk)
            idx.append(np.asarray(keep))
    if not xs:
        raise ValueError("no calibration windows: the series are too short")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(idx)


def run_training(cfg: ForecastConfig, log: Any = print) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg.threads)
    data = prepare(cfg)
    sampler = WindowSampler(
        data["train_hist"], cfg.window, cfg.horizon, cfg.period, cfg.recent, cfg.align
    )
    log(
        f"{len(data['hist'])} series, {int(sampler.n_origins.sum())} training origins; "
        f"calibration: {cfg.calibration}, {data['calib_windows_per_series']} window(s) of "
        f"{cfg.holdout} per series"
    )
    states, histories = [], []
    for seed, weighting in member_plan(cfg):
        net, hist = train_member(cfg, sampler, seed, data["val"], log, weighting)
        states.append(net.state_dict())
        histories.append(hist)
    return {"config": asdict(cfg), "members": states, "history": histories}


def merge_checkpoints(
    ckpts: list[dict[str, Any]], weightings: set[str] | None = None
) -> dict[str, Any]:
    """One ensemble of the members of several runs with the same data and architecture (e.g.
    more members of one weighting trained later), optionally only the members trained with
    ``weightings``: the first run's configuration, its member list (seeds and weightings, in
    order) written into ``extra["plan"]``."""
    keys = ("data", "normalise", "delta", "views", "cell", "window", "horizon", "hidden", "layers")
    first = ckpts[0]["config"]
    for c in ckpts[1:]:
        diff = [k for k in keys if c["config"].get(k) != first.get(k)]
        if diff:
            raise ValueError(f"cannot merge runs that differ in {diff}")
    plan, members, history = [], [], []
    for c in ckpts:
        for (seed, w), m, h in zip(
            member_plan(ForecastConfig(**c["config"])), c["members"], c["history"], strict=True
        ):
            if weightings is None or w in weightings:
                plan.append([seed, w])
                members.append(m)
                history.append(h)
    config = {**first, "members": len(plan), "extra": {**first.get("extra", {}), "plan": plan}}
    return {"config": config, "members": members, "history": history}


def build_ensemble(ckpt: dict[str, Any]) -> Any:
    from training.forecast.model import ForecastEnsemble, ForecastNet

    c = ckpt["config"]
    nets = []
    for sd in ckpt["members"]:
        net = ForecastNet(
            c["cell"],
            c["window"],
            c["period"],
            c["hidden"],
            c["layers"],
            c["horizon"],
            c["dropout"],
            c.get("linear_skip", False),
            c["delta"] if c.get("views") and c.get("normalise") == "floorlog" else 0.0,
        )
        net.load_state_dict(sd)
        net.eval()
        nets.append(net)
    return ForecastEnsemble(nets, scaling_of(ForecastConfig(**c))).eval()


def evaluate_all(ckpt: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Metrics on the validation windows + conformal calibration on the calibration windows."""
    cfg = ForecastConfig(**ckpt["config"])
    sc = scaling_of(cfg)
    x, y, scales = data["val"]
    ens = build_ensemble(ckpt)
    from training.forecast.model import ForecastEnsemble

    metrics: dict[str, Any] = baseline_scores(data["val_hist"], y, cfg.period)
    metrics["members"] = [
        {
            "seed": seed,
            "loss_weight": weighting,
            **evaluate_point(ForecastEnsemble([m], sc), x, y, scales, cfg.holdout),
        }
        for (seed, weighting), m in zip(member_plan(cfg), ens.members, strict=True)
    ]
    med, q = predict(ens, x, sc)
    metrics["ensemble"] = score(y, med[:, : cfg.holdout], scales)
    metrics["quantile_coverage_10_90"] = coverage(y, q[:, : cfg.holdout, 0], q[:, : cfg.holdout, 2])

    # conformal calibration on the calibration windows (held out of training by default)
    cx, cy, _ = calibration_set(cfg, data)
    cm, cq = predict(ens, cx, sc)
    if sc is not None:
        vg, cg = predict_g(ens, x, sc), predict_g(ens, cx, sc)
        table = conformal_table_scaled(sc, cy, *cg)

        def bounds(which: str, lev: float) -> tuple[np.ndarray, np.ndarray]:
            assert sc is not None
            return intervals_scaled(sc, *(vg if which == "val" else cg), table, lev)

    else:
        shift_val, cs = positive_shift(x), positive_shift(cx)
        table = conformal_table(cy, cm, cq, cs)

        def bounds(which: str, lev: float) -> tuple[np.ndarray, np.ndarray]:
            if which == "val":
                return intervals(med, q, shift_val, table, lev)
            return intervals(cm, cq, cs, table, lev)

    cov, cal_cov = {}, {}
    for lev in (50, 80, 95):
        lo, hi = bounds("val", lev)
        cov[str(lev)] = coverage(y, lo, hi)
        lo, hi = bounds("cal", lev)
        cal_cov[str(lev)] = coverage(cy, lo, hi)
    metrics["interval_coverage"] = cov
    metrics["calibration_coverage"] = cal_cov  # in-sample for the table: ~ the nominal level
    metrics["calibration_windows"] = len(cy)
    metrics["calibration_levels_resolved_up_to"] = resolved_level(len(cy))
    if resolved_level(len(cy)) < LEVEL_GRID[-1]:
        print(
            f"note: {len(cy)} calibration windows resolve interval levels up to "
            f"{resolved_level(len(cy)):g}%; wider levels are extrapolated (more or longer "
            "series, or --calib-windows, calibrate them on data)",
            file=sys.stderr,
        )
    metrics["calibration_windows_per_series"] = data["calib_windows_per_series"]
    metrics["calibration_mode"] = cfg.calibration
    # point accuracy there (MASE scaled by each input window's own seasonal-naive MAE)
    cal_scales = np.asarray([mase_scale(w, cfg.period) for w in cx])
    metrics["calibration"] = score(cy, cm[:, : cfg.holdout], cal_scales)
    return {"metrics": metrics, "table": table, "ensemble": ens, "pred": (med, q)}


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    ckpt = dict(torch.load(path, map_location="cpu", weights_only=True))
    # checkpoints from before the calibration split calibrated on windows they trained on
    ckpt["config"].setdefault("calibration", "in-sample")
    # and checkpoints from before the affine scaling were log-scaled
    ckpt["config"].setdefault("normalise", "log")
    ckpt["config"].setdefault("delta", 0.1)
    ckpt["config"].setdefault("views", False)
    ckpt["config"].setdefault("relative_members", 0)
    return ckpt


def format_metrics(m: dict[str, Any]) -> str:
    lines = [f"{'model':<16}{'sMAPE':>9}{'MASE':>9}"]
    for mem in m["members"]:
        lines.append(f"{'seed ' + str(mem['seed']):<16}{mem['smape']:9.3f}{mem['mase']:9.3f}")
    for key in ("ensemble", "seasonal_naive", "naive"):
        lines.append(f"{key:<16}{m[key]['smape']:9.3f}{m[key]['mase']:9.3f}")
    lines.append(
        f"coverage: {json.dumps(m['interval_coverage'])} "
        f"(raw q10-q90: {m['quantile_coverage_10_90']:.1f})"
    )
    return "\n".join(lines)
