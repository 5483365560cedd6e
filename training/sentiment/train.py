"""Train one recurrent sentiment classifier (one seed = one ensemble member).

Length-bucketed batches keep padding (and CPU time) small; word dropout replaces a fraction of
training tokens by ``[UNK]``, which teaches the model what to do with words it never saw —
the largest single gain measured on SST-2 dev.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from contract.text import pad_right
from training.common.curves import plot_curves
from training.common.seed import seed_everything
from training.sentiment.model import ClassifierConfig, RNNClassifier
from training.sentiment.tokenizer import PAD_ID, UNK_ID


@dataclass
class TrainConfig:
    """One member's optimisation settings, saved beside its weights in the checkpoint.

    No defaults here: the command line's configuration (``training.sentiment.config``) is the
    one place they are written, and it builds this for each seed.
    """

    epochs: int  # upper bound; early stopping usually ends sooner
    patience: int  # epochs without dev improvement before stopping
    batch_size: int
    lr: float
    lr_decay: float  # multiply the learning rate by this after every epoch
    weight_decay: float  # AdamW
    clip: float  # gradient-norm clipping
    word_dropout: float  # fraction of training tokens replaced by [UNK]
    max_length: int  # tokens per text; longer texts are cut (serving says so)
    seed: int
    threads: int
    limit_train: int | None  # only the first N training rows were used (tests, --dry-run)
    extra: dict[str, Any] = field(default_factory=dict)


def make_batches(
    ids: list[list[int]], batch_size: int, rng: np.random.Generator | None
) -> list[np.ndarray]:
    """Index batches of similar length: sort by length, chunk, shuffle the chunk order."""
    order = np.argsort([len(x) for x in ids], kind="stable")
    if rng is not None:  # jitter lengths a little so batches differ between epochs
        noisy = np.array([len(x) for x in ids]) + rng.uniform(0, 2, len(ids))
        order = np.argsort(noisy, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


def pad(ids: list[list[int]], rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pad_right([ids[i] for i in rows], PAD_ID))


@torch.no_grad()
def predict_proba(model: nn.Module, ids: list[list[int]], batch_size: int = 256) -> np.ndarray:
    model.eval()
    chunks = []
    index = []
    for rows in make_batches(ids, batch_size, None):
        chunks.append(torch.softmax(model(pad(ids, rows)), -1).numpy())
        index.append(rows)
    probs = np.zeros((len(ids), chunks[0].shape[1]))
    for rows, p in zip(index, chunks, strict=True):
        probs[rows] = p
    return probs


def train_member(
    model_cfg: ClassifierConfig,
    cfg: TrainConfig,
    train_ids: list[list[int]],
    train_y: np.ndarray,
    dev_ids: list[list[int]],
    dev_y: np.ndarray,
    out_dir: Path,
    init_embeddings: np.ndarray | None = None,
    soft_targets: np.ndarray | None = None,
    distill_weight: float = 0.5,
    dev_groups: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train with early stopping on dev accuracy; save the best checkpoint, history and curves.

    ``init_embeddings`` ([vocab, emb_dim], NaN rows = no vector) starts the embedding table from
    pretrained vectors; words without one keep their random start. Both are fine-tuned.
    ``soft_targets`` ([n_train, labels]) are a teacher's probabilities: the loss mixes them
    with the hard labels (``distill_weight``), so one small model learns a teacher's answers.
    A row may have only one of the two: ``train_y == -1`` marks a text with no hard label (an
    augmented transfer-set text), a NaN row of ``soft_targets`` one the teacher did not label.
    ``dev_groups`` (name -> dev row indices, e.g. one per dataset) are scored separately, and
    the checkpoint is selected on their mean accuracy, so no one domain dominates selection.
    """
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _init_model(model_cfg, init_embeddings)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    rng = np.random.default_rng(cfg.seed)
    targets = _Targets(train_y, soft_targets, distill_weight)
    history: list[dict[str, float]] = []
    best_acc, best_epoch, bad = -1.0, 0, 0
    ckpt_path = out_dir / f"seed{cfg.seed}.pt"
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_stats = _train_epoch(model, opt, cfg, train_ids, targets, rng, epoch)
        sched.step()
        rec = _epoch_record(epoch, train_stats, model, dev_ids, dev_y, dev_groups, t0)
        dev_acc = rec["dev_accuracy"]
        history.append(rec)
        print(
            json.dumps({"seed": cfg.seed, **{k: round(v, 4) for k, v in rec.items()}}), flush=True
        )
        if dev_acc > best_acc:
            best_acc, best_epoch, bad = dev_acc, epoch, 0
            _save_checkpoint(ckpt_path, model, model_cfg, cfg, epoch, dev_acc)
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    _write_history(out_dir, history, model_cfg, cfg)
    return {
        "seed": cfg.seed,
        "best_epoch": best_epoch,
        "dev_accuracy": best_acc,
        "checkpoint": str(ckpt_path),
        "epochs_run": len(history),
        "seconds": sum(h["seconds"] for h in history),
        "history": history,
    }


@dataclass
class _Targets:
    """What one member learns from: hard labels (-1 = none), optional teacher probabilities
    (NaN row = none) and the teacher's share of the loss."""

    hard: np.ndarray
    soft: np.ndarray | None
    distill_weight: float


def _init_model(model_cfg: ClassifierConfig, init_embeddings: np.ndarray | None) -> RNNClassifier:
    """A fresh member; rows of ``init_embeddings`` that are not NaN overwrite the random
    embedding start, so pretrained vectors help where they exist and cost nothing elsewhere."""
    model = RNNClassifier(model_cfg)
    if init_embeddings is not None:
        with torch.no_grad():
            have = ~np.isnan(init_embeddings).any(1)
            model.embedding.weight[torch.from_numpy(have)] = torch.from_numpy(init_embeddings[have])
    return model


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    train_ids: list[list[int]],
    targets: _Targets,
    rng: np.random.Generator,
    epoch: int,
) -> dict[str, float]:
    """One pass over the training rows in length-bucketed batches; returns the mean loss and
    the accuracy on rows that have a hard label (teacher-only rows have nothing to be right
    about)."""
    model.train()
    total_loss, correct, seen, labelled = 0.0, 0, 0, 0
    batches = make_batches(train_ids, cfg.batch_size, rng)
    bar = tqdm(batches, desc=f"seed {cfg.seed} epoch {epoch}", leave=False, mininterval=2)
    for rows in bar:
        x = _word_dropout(pad(train_ids, rows), cfg.word_dropout)
        y = torch.from_numpy(targets.hard[rows])
        logits = model(x)
        loss = distill_loss(
            logits,
            y,
            None if targets.soft is None else torch.from_numpy(targets.soft[rows]),
            targets.distill_weight,
        )
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        total_loss += loss.item() * len(rows)
        correct += int((logits.argmax(-1) == y).sum())
        seen += len(rows)
        labelled += int((y >= 0).sum())
        bar.set_postfix(loss=f"{total_loss / seen:.3f}")
    return {"train_loss": total_loss / seen, "train_accuracy": correct / max(labelled, 1)}


def _word_dropout(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Replace a ``rate`` fraction of real (non-pad) tokens by [UNK], so the model learns what
    to do with words it never saw."""
    if rate <= 0:
        return x
    drop = (torch.rand(x.shape) < rate) & (x != PAD_ID)
    return x.masked_fill(drop, UNK_ID)


def _epoch_record(
    epoch: int,
    train_stats: dict[str, float],
    model: nn.Module,
    dev_ids: list[list[int]],
    dev_y: np.ndarray,
    dev_groups: dict[str, np.ndarray] | None,
    t0: float,
) -> dict[str, float]:
    """The epoch's history row. With ``dev_groups``, ``dev_accuracy`` (the selection figure)
    is the mean of the groups' accuracies, so no one domain dominates checkpoint selection."""
    dev_p = predict_proba(model, dev_ids)
    dev_loss = float(-np.mean(np.log(dev_p[np.arange(len(dev_y)), dev_y] + 1e-12)))
    hits = dev_p.argmax(1) == dev_y
    rec = {
        "epoch": epoch,
        **train_stats,
        "dev_loss": dev_loss,
        "dev_accuracy": float(hits.mean()),
        "seconds": time.perf_counter() - t0,
    }
    if dev_groups:
        for name, idx in dev_groups.items():
            rec[f"dev_accuracy_{name}"] = float(hits[idx].mean())
        rec["dev_accuracy"] = float(np.mean([hits[idx].mean() for idx in dev_groups.values()]))
    return rec


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    model_cfg: ClassifierConfig,
    cfg: TrainConfig,
    epoch: int,
    dev_acc: float,
) -> None:
    """Weights plus both configurations, so ``load_member`` can rebuild the member alone."""
    torch.save(
        {
            "model_config": asdict(model_cfg),
            "train_config": asdict(cfg),
            "state_dict": model.state_dict(),
            "epoch": epoch,
            "dev_accuracy": dev_acc,
        },
        path,
    )


def _write_history(
    out_dir: Path, history: list[dict[str, float]], model_cfg: ClassifierConfig, cfg: TrainConfig
) -> None:
    """Per-epoch figures as JSON and as curves, to judge over- and under-fitting afterwards."""
    (out_dir / f"seed{cfg.seed}.history.json").write_text(json.dumps(history, indent=1))
    plot_curves(
        history,
        out_dir / f"seed{cfg.seed}.curves.png",
        [("loss", ["train_loss", "dev_loss"]), ("accuracy", ["train_accuracy", "dev_accuracy"])],
        title=f"{model_cfg.cell} seed {cfg.seed}",
    )


def distill_loss(
    logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None, weight: float
) -> torch.Tensor:
    """Hard-label cross-entropy mixed with soft cross-entropy against a teacher's probabilities.

    Rows with ``y == -1`` contribute only the soft term, rows whose ``soft`` is NaN only the
    hard one; every row counts once in the mean.
    """
    logp = torch.log_softmax(logits, -1)
    has_y = y >= 0
    hard = -logp.gather(1, y.clamp(min=0).unsqueeze(1)).squeeze(1)
    if soft is None:
        return hard[has_y].sum() / has_y.sum().clamp(min=1)
    has_soft = ~torch.isnan(soft).any(-1)
    kd = -(torch.nan_to_num(soft) * logp).sum(-1)
    w_hard = torch.where(has_soft, 1.0 - weight, 1.0) * has_y
    w_soft = torch.where(has_y, weight, 1.0) * has_soft
    return (w_hard * hard + w_soft * kd).sum() / len(y)


def load_member(path: str | Path) -> tuple[RNNClassifier, dict[str, Any]]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = RNNClassifier(ClassifierConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
