"""Train, evaluate and export the global hourly forecaster.

    python -m training.cli forecast train --help        # M4 Hourly by default
    python -m training.cli forecast train --data ../shared/data/etth1/ETTh1.csv --targets OT \
        --name etth1-ot-gru --out runs/forecast/etth1

Pipeline: load series -> hold out the last ``holdout`` points of each -> train ``members``
seeds on random windows of what precedes them -> conformal calibration of the intervals on
the last windows of the training part -> metrics on the held-out windows (model, seasonal
naive, naive) -> one ONNX graph (members + median + scaling inside) -> parity -> card.json.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.forecast.data import (
    ETTH1_URL,
    M4_URL,
    SeriesSet,
    WindowSampler,
    last_window,
    load_series,
    origin_windows,
    positive_shift,
    split_holdout,
)
from training.forecast.metrics import baseline_scores, coverage, mase_scale, score

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "m4_hourly" / "Hourly-train.csv"
QUANTILES = (0.1, 0.5, 0.9)
MIN_CALIBRATION = 400  # conformal calibration windows wanted in total
# Interval levels (percent) at which the conformal table is stored; see interval_rule().
LEVEL_GRID = (
    0.0,
    5,
    10,
    15,
    20,
    25,
    30,
    35,
    40,
    45,
    50,
    55,
    60,
    65,
    70,
    75,
    80,
    85,
    90,
    95,
    97.5,
    99.0,
)


@dataclass
class ForecastConfig:
    # data
    data: str = str(DEFAULT_DATA)
    fmt: str = "auto"  # auto | m4 | long
    time_col: str | None = None  # long CSV: timestamp column (default: first column)
    targets: list[str] | None = None  # long CSV: value columns (default: all but time)
    freq: str = "h"
    period: int = 24  # seasonal period (steps per "day" the net reads at once)
    holdout: int = 48  # last points of every series kept for validation
    val_windows: int = 1  # >1: that many consecutive holdout-stretches (single-series data)
    # model
    cell: str = "gru"
    window: int = 336  # input length, a multiple of period
    horizon: int = 48  # max horizon the graph outputs (>= holdout)
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.0
    linear_skip: bool = False  # add a direct linear window -> median path
    # optimisation
    members: int = 5
    seed: int = 0
    epochs: int = 70
    batch_size: int = 256
    lr: float = 1e-2
    lr_final: float = 1e-4  # cosine decay from lr to lr_final over all steps
    windows_per_epoch: int = 8192
    recent: int = 0  # >0: training targets only from the last `recent` points of a series
    clip: float = 1.0
    threads: int = 1
    calib_windows: int = 3  # conformal calibration origins inside the training part
    # output
    name: str = "m4-hourly-gru"
    version: str = "1"
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# training


def pinball(pred: Any, target: Any, qs: tuple[float, ...]) -> Any:
    """Mean pinball loss; pred [B, H, Q], target [B, H]. q=0.5 is half the L1 loss, so the
    median head is weighted x2 (-> plain L1 on the point forecast)."""
    import torch

    q = torch.tensor(qs, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    loss = torch.maximum(q * diff, (q - 1) * diff)
    w = torch.tensor([2.0 if abs(x - 0.5) < 1e-9 else 1.0 for x in qs], dtype=pred.dtype)
    return (loss * w).mean()


def shifted(x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, Any, np.ndarray]:
    s = positive_shift(x)
    return x + s[:, None], (None if y is None else y + s[:, None]), s


def train_member(
    cfg: ForecastConfig,
    sampler: WindowSampler,
    seed: int,
    val: tuple[np.ndarray, np.ndarray, np.ndarray],
    log: Any = print,
) -> tuple[Any, list[dict[str, float]]]:
    import torch

    from training.common.seed import seed_everything
    from training.forecast.model import ForecastEnsemble, ForecastNet, level_of, to_log_ratio

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
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps_per_epoch = max(1, cfg.windows_per_epoch // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (
                cfg.lr_final
                + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * min(s, total) / total))
            )
            / cfg.lr
        ),
    )
    history: list[dict[str, float]] = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        net.train()
        x, y = sampler.sample(steps_per_epoch * cfg.batch_size, rng)
        x, y, _ = shifted(x, y)
        xt = torch.from_numpy(x.astype(np.float32))
        yt = torch.from_numpy(y.astype(np.float32))
        losses = []
        for i in range(steps_per_epoch):
            xb = xt[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            yb = yt[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            level = level_of(xb, cfg.period)
            pred = net(to_log_ratio(xb, level))
            loss = pinball(pred, to_log_ratio(yb, level), QUANTILES)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        m = evaluate_point(ForecastEnsemble([net]), *val, cfg.holdout)
        rec = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
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


def predict(model: Any, x: np.ndarray, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Raw windows [N, W] (any sign) -> (median [N, H], quantiles [N, H, 3]) with the serving
    shift rule applied around the model (torch module or ORT session)."""
    xs, _, s = shifted(np.asarray(x, dtype=np.float64))
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
    med = np.concatenate(meds).astype(np.float64) - s[:, None]
    q = np.concatenate(qs).astype(np.float64) - s[:, None, None]
    return med, q


def evaluate_point(
    model: Any, x: np.ndarray, y: np.ndarray, scales: np.ndarray, holdout: int
) -> dict[str, float]:
    med, _ = predict(model, x)
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


def log_spread(q: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Half the log distance between the 0.9 and 0.1 quantiles (shifted space), floored."""
    lo = np.log(np.maximum(q[..., 0] + shift[:, None], 1e-12))
    hi = np.log(np.maximum(q[..., 2] + shift[:, None], 1e-12))
    return np.maximum(0.5 * (hi - lo), 1e-6)


def conformal_table(y: np.ndarray, med: np.ndarray, q: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Per-horizon quantiles of the normalised log residual |log y - log med| / spread at every
    level of LEVEL_GRID -> [H, len(LEVEL_GRID)], non-decreasing along levels."""
    h = y.shape[1]
    ly = np.log(np.maximum(y + shift[:, None], 1e-12))
    lm = np.log(np.maximum(med[:, :h] + shift[:, None], 1e-12))
    r = np.abs(ly - lm) / log_spread(q[:, :h], shift)
    n = len(r)
    table = np.zeros((h, len(LEVEL_GRID)))
    for j, lev in enumerate(LEVEL_GRID):
        if lev == 0:
            continue
        # finite-sample conformal quantile: ceil((n+1) L) / n
        p = min(1.0, math.ceil((n + 1) * lev / 100.0) / n)
        table[:, j] = np.quantile(r, p, axis=0, method="higher")
    return np.maximum.accumulate(table, axis=1)


def interval_k(table: np.ndarray, level: float) -> np.ndarray:
    """Multiplier per horizon for a level in (0, 100): linear interpolation inside the grid,
    an exponential (Laplace-like) tail above its last point so wider levels stay wider."""
    if not 0 < level < 100:
        raise ValueError("level must be in (0, 100)")
    grid = np.asarray(LEVEL_GRID)
    if level <= grid[-1]:
        return np.asarray([np.interp(level, grid, row) for row in table])
    ratio = math.log(1 - level / 100) / math.log(1 - grid[-1] / 100)
    return table[:, -1] * ratio


def intervals(
    med: np.ndarray, q: np.ndarray, shift: np.ndarray, table: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """The serving rule (documented in the card): in shifted space,
    lo/hi = median * exp(-/+ k_h(level) * spread), spread = (ln q90 - ln q10) / 2; unshift."""
    h = table.shape[0]
    k = interval_k(table, level)[None, :]
    spread = log_spread(q[:, :h], shift)
    m = med[:, :h] + shift[:, None]
    return m * np.exp(-k * spread) - shift[:, None], m * np.exp(k * spread) - shift[:, None]


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


def prepare(cfg: ForecastConfig) -> dict[str, Any]:
    series = load_series(cfg.data, cfg.fmt, cfg.time_col, cfg.targets)
    if cfg.horizon < cfg.holdout:
        raise ValueError(f"horizon {cfg.horizon} must be >= holdout {cfg.holdout}")
    hist, _ = split_holdout(series, cfg.holdout * cfg.val_windows)
    val, val_hist, val_ids = validation_set(series, cfg)
    return {"series": series, "hist": hist, "val": val, "val_hist": val_hist, "val_ids": val_ids}


def run_training(cfg: ForecastConfig, log: Any = print) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg.threads)
    data = prepare(cfg)
    sampler = WindowSampler(data["hist"], cfg.window, cfg.horizon, cfg.period, cfg.recent)
    log(f"{len(data['hist'])} series, {int(sampler.n_origins.sum())} training origins")
    states, histories = [], []
    for i in range(cfg.members):
        net, hist = train_member(cfg, sampler, cfg.seed + i, data["val"], log)
        states.append(net.state_dict())
        histories.append(hist)
    return {"config": asdict(cfg), "members": states, "history": histories}


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
        )
        net.load_state_dict(sd)
        net.eval()
        nets.append(net)
    return ForecastEnsemble(nets).eval()


def evaluate_all(ckpt: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Metrics on the held-out windows + conformal calibration on the training tail."""
    cfg = ForecastConfig(**ckpt["config"])
    x, y, scales = data["val"]
    ens = build_ensemble(ckpt)
    from training.forecast.model import ForecastEnsemble

    metrics: dict[str, Any] = baseline_scores(data["val_hist"], y, cfg.period)
    metrics["members"] = [
        {"seed": cfg.seed + i, **evaluate_point(ForecastEnsemble([m]), x, y, scales, cfg.holdout)}
        for i, m in enumerate(ens.members)
    ]
    med, q = predict(ens, x)
    metrics["ensemble"] = score(y, med[:, : cfg.holdout], scales)
    shift_val = positive_shift(x)
    metrics["quantile_coverage_10_90"] = coverage(y, q[:, : cfg.holdout, 0], q[:, : cfg.holdout, 2])

    # conformal calibration: windows ending holdout*k points before the end of the training part
    # (at least ~MIN_CALIBRATION windows in all: few-series data gets more origins per series)
    n_windows = max(cfg.calib_windows, math.ceil(MIN_CALIBRATION / len(data["hist"])))
    cx, cy, cm, cq, cs = [], [], [], [], []
    for k in range(n_windows):
        xk, yk, _ = origin_windows(
            data["hist"], cfg.window, cfg.holdout, cfg.period, back=k * cfg.holdout
        )
        if len(xk) == 0:
            continue
        mk, qk = predict(ens, xk)
        cx.append(xk)
        cy.append(yk)
        cm.append(mk)
        cq.append(qk)
        cs.append(positive_shift(xk))
    table = conformal_table(
        np.concatenate(cy), np.concatenate(cm), np.concatenate(cq), np.concatenate(cs)
    )
    cov = {}
    for lev in (50, 80, 95):
        lo, hi = intervals(med, q, shift_val, table, lev)
        cov[str(lev)] = coverage(y, lo, hi)
    metrics["interval_coverage"] = cov
    metrics["calibration_windows"] = int(sum(len(c) for c in cy))
    metrics["calibration_windows_per_series"] = n_windows
    return {"metrics": metrics, "table": table, "ensemble": ens, "pred": (med, q)}


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(path, map_location="cpu", weights_only=True))


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
