"""Train the anomaly forecaster: truncated BPTT over chunks of long sequences.

Each batch holds ``batch_size`` normalised crops of ``seq_len`` points; they are fed in
``chunk``-point chunks with the recurrent state carried (detached) from chunk to chunk, so the
net learns to run over long series from a zero start state as serving runs it. Loss: Gaussian
(or Laplace) NLL of the next normalised value. Gradient-norm clipping, cosine learning rate,
early stopping on the NLL of held-out *training* source series (never NAB).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from training.anomaly.data import (
    ETTH1_PATH,
    M4_PATH,
    SequenceSampler,
    multi_rate,
    source_series,
    split_sources,
)
from training.common.config_cli import option

DEFAULT_NAME = "nab-gru"
DEFAULT_DATA = [str(M4_PATH), str(ETTH1_PATH)]


@dataclass
class AnomalyConfig:
    """Everything that shapes a trained forecaster; saved in the checkpoint and the card."""

    data: list[str] = option(
        DEFAULT_DATA,
        "training series: M4-style wide CSVs (first column V1) or CSVs with a time column and "
        "value columns (every value column is a series); none, or only missing default files, "
        "trains on synthetic series alone",
    )
    synthetic_frac: float = option(0.3, "share of training crops drawn from synthetic series")
    synthetic_profile: bool = option(
        False, "add the repeated-daily-profile family to the synthetic series"
    )
    upsample: list[int] = option(
        [2, 4], "interpolation factors of the finer-rate copies of every series"
    )
    val_frac: float = option(0.1, "share of source series held out for early stopping")
    cell: str = option("gru", "recurrent cell", choices=["gru", "lstm"])
    hidden: int = option(32, "hidden units")
    layers: int = option(1, "recurrent layers")
    dist: str = option("gaussian", "predictive distribution", choices=["gaussian", "laplace"])
    seq_len: int = option(1024, "crop length")
    chunk: int = option(128, "BPTT chunk length (state carried between chunks)")
    warmup_min: int = option(100, "shortest warm-up (scale-learning prefix) of a crop")
    warmup_max: int = option(400, "longest warm-up of a crop")
    clip_input: float = option(20.0, "clip of the normalised inputs and targets")
    lags: list[int] = option([], "extra lagged inputs u[t+1-L] (periods in steps)")
    batch_size: int = option(32, "crops per batch")
    steps: int = option(16000, "optimiser steps, one per chunk (cosine schedule length)")
    eval_every: int = option(40, "steps between validations")
    patience: int = option(5, "early-stopping patience (validations)")
    lr: float = option(3e-3, "initial learning rate (cosine decay to --lr-final)")
    lr_final: float = option(1e-4, "final learning rate")
    clip: float = option(1.0, "gradient-norm clip")
    seed: int = option(0, "seed")
    threads: int = option(1, "torch CPU threads")
    val_batches: int = option(4, "validation batches (of --batch-size crops)")
    snapshots: bool = option(
        False, "keep the weights of every validation step in the checkpoint (model selection)"
    )
    extra: dict[str, Any] = field(default_factory=dict)


def config_from_dict(raw: dict[str, Any]) -> AnomalyConfig:
    """The configuration saved in a checkpoint, including ones saved before ``data`` replaced
    ``m4``/``etth1`` (unknown keys such as the old ``name``/``version`` are dropped)."""
    raw = dict(raw)
    if "data" not in raw:
        raw["data"] = [p for p in (raw.get("m4"), raw.get("etth1")) if p]
    names = {f.name for f in fields(AnomalyConfig)}
    return AnomalyConfig(**{k: v for k, v in raw.items() if k in names})


def missing_default_data(cfg: AnomalyConfig) -> tuple[list[str], list[str]]:
    """(default files that are absent, other files that are absent): the first are skipped
    with a note (a checkout without ../shared still trains, on synthetic series), the second
    are an error."""
    absent = [p for p in cfg.data if not Path(p).is_file()]
    return [p for p in absent if p in DEFAULT_DATA], [p for p in absent if p not in DEFAULT_DATA]


def build_samplers(cfg: AnomalyConfig) -> tuple[SequenceSampler, np.ndarray, dict[str, Any]]:
    """(training sampler, fixed validation batch [N, L], data summary)."""
    rng = np.random.default_rng(cfg.seed)
    sources = source_series(cfg.data)
    train_src, val_src = split_sources(sources, cfg.val_frac, rng)
    train_pool = multi_rate(train_src, rng, cfg.seq_len, cfg.upsample)
    val_pool = multi_rate(val_src, rng, cfg.seq_len, cfg.upsample)
    wr = (cfg.warmup_min, cfg.warmup_max)
    sampler = SequenceSampler(
        train_pool, cfg.seq_len, wr, cfg.clip_input, cfg.synthetic_frac, cfg.synthetic_profile
    )
    vs = SequenceSampler(
        val_pool, cfg.seq_len, wr, cfg.clip_input, cfg.synthetic_frac, cfg.synthetic_profile
    )
    val = vs.sample(cfg.val_batches * cfg.batch_size, np.random.default_rng(cfg.seed + 999))
    summary = {
        "source_series": len(sources),
        "train_sources": len(train_src),
        "val_sources": len(val_src),
        "train_pool_series": len(train_pool),
        "train_pool_points": int(sum(len(p) for p in train_pool)),
        "val_pool_series": len(val_pool),
    }
    return sampler, val, summary


def run_chunks(net: Any, u: Any, cfg: AnomalyConfig, opt: Any = None) -> float:
    """NLL over a batch of sequences u [B, L], chunk by chunk with the state carried; one
    optimiser step per chunk when ``opt`` is given."""
    import torch

    from training.anomaly.model import nll

    state: Any = None
    total, count = 0.0, 0
    from contract.anomaly import lag_features

    x_all = torch.from_numpy(lag_features(u.numpy(), cfg.lags)[:, :-1].astype(np.float32))
    y_all = u[:, 1:]
    for s in range(0, x_all.shape[1], cfg.chunk):
        x = x_all[:, s : s + cfg.chunk]
        y = y_all[:, s : s + cfg.chunk]
        mean, log_scale, state = net.forward_state(x, state)
        loss = nll(mean, log_scale, y, cfg.dist)
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
        state = tuple(h.detach() for h in state) if isinstance(state, tuple) else state.detach()
        total += float(loss.item()) * x.shape[1]
        count += x.shape[1]
    return total / max(count, 1)


def validation_nll(net: Any, val: np.ndarray, cfg: AnomalyConfig) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        losses = [
            run_chunks(net, torch.from_numpy(val[i : i + cfg.batch_size]), cfg)
            for i in range(0, len(val), cfg.batch_size)
        ]
    net.train()
    return float(np.mean(losses))


def run_training(cfg: AnomalyConfig, log: Any = print) -> dict[str, Any]:
    """Train and return a checkpoint dict (config, state_dict of the best step, history)."""
    import copy

    import torch
    from tqdm import tqdm

    from training.anomaly.model import AnomalyNet
    from training.common.seed import seed_everything

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    t_start = time.time()
    sampler, val, summary = build_samplers(cfg)
    log(f"data: {summary}")
    rng = np.random.default_rng(cfg.seed + 1)
    net = AnomalyNet(cfg.hidden, cfg.layers, cfg.cell, 1 + len(cfg.lags))
    chunks = math.ceil((cfg.seq_len - 1) / cfg.chunk)
    total = max(1, cfg.steps // chunks)  # batches
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=cfg.lr_final)
    history: list[dict[str, float]] = []
    best, best_state, bad = math.inf, copy.deepcopy(net.state_dict()), 0
    eval_batches = max(1, cfg.eval_every // chunks)
    losses: list[float] = []
    snaps: list[dict[str, Any]] = []
    bar = tqdm(range(1, total + 1), desc="anomaly", mininterval=5.0)
    for b in bar:
        u = torch.from_numpy(sampler.sample(cfg.batch_size, rng))
        losses.append(run_chunks(net, u, cfg, opt))
        sched.step()
        if b % eval_batches == 0 or b == total:
            v = validation_nll(net, val, cfg)
            rec = {
                "epoch": float(len(history) + 1),
                "step": float(b * chunks),
                "train_nll": float(np.mean(losses)),
                "val_nll": v,
                "seconds": time.time() - t_start,
            }
            history.append(rec)
            if cfg.snapshots:
                snaps.append(
                    {"step": int(rec["step"]), "state_dict": copy.deepcopy(net.state_dict())}
                )
            losses = []
            bar.set_postfix(train=f"{rec['train_nll']:.3f}", val=f"{v:.3f}")
            log(
                f"  step {int(rec['step'])} train NLL {rec['train_nll']:.4f} val NLL {v:.4f} "
                f"({rec['seconds']:.0f}s)"
            )
            if v < best - 1e-4:
                best, best_state, bad = v, copy.deepcopy(net.state_dict()), 0
            else:
                bad += 1
                if bad >= cfg.patience:
                    log(f"  early stop: no validation gain in {cfg.patience} evaluations")
                    break
    return {
        "config": asdict(cfg),
        "state_dict": best_state,
        "history": history,
        "best_val_nll": best,
        "data": summary,
        "seconds": time.time() - t_start,
        **({"snapshots": snaps} if cfg.snapshots else {}),
    }


def build_net(ckpt: dict[str, Any]) -> Any:
    from training.anomaly.model import AnomalyNet

    cfg = config_from_dict(ckpt["config"])
    net = AnomalyNet(cfg.hidden, cfg.layers, cfg.cell, 1 + len(cfg.lags))
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    return net


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """torch.save of the checkpoint dict (plain containers and tensors only)."""
    import torch

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, str(path))
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    import torch

    return dict(torch.load(str(path), map_location="cpu", weights_only=True))
