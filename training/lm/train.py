"""Train a word-level language model (truncated BPTT, plain SGD, anneal on plateau).

    seqserve-train lm train --max-minutes 100 --anneal-after-minutes 55
    # ^ the shipped model's recipe on WikiText-2: ~100 min on 2 cores, validation perplexity 124.5
    seqserve-train lm train --dry-run  # seconds, for CI and tests
    seqserve-train lm train --train my_train.txt --dev my_valid.txt
    # ^ a user's plain text: detected as such and cut into words by the served tokenizer's rules

Every epoch writes ``history.json`` and ``curves.png`` into the run folder; whenever validation
improves it also writes ``best.pt`` atomically, so ``lm export`` can run at any time from the
best model so far. The checkpoint holds plain data only (config dicts, vocabulary, tensors): no
pickled modules.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from training.common.config_cli import option
from training.common.curves import plot_curves
from training.common.seed import seed_everything
from training.lm.data import (
    DEFAULT_DATA_DIR,
    TEXT_FORMATS,
    batchify,
    bptt_chunks,
    build_vocab,
    count_lines,
    detect_text_format,
    encode,
    read_tokens,
)
from training.lm.model import LMConfig, RNNModel, State, repackage

DRY_RUN_LINES = (300, 60)  # train / valid lines used by --dry-run
DRY_RUN_SIZE = 32  # --dry-run caps the embedding and hidden sizes at this


@dataclass
class TrainConfig:
    """Optimisation and data settings; saved next to the weights. Each field with help is a flag
    of ``lm train`` (``training.common.config_cli``), so its default is written only here; the
    defaults are the shipped model's recipe (with ``--max-minutes 100
    --anneal-after-minutes 55``)."""

    train_file: str = option(
        str(DEFAULT_DATA_DIR / "train.txt"),
        "training text, one line per paragraph (WikiText-2 or plain text)",
        flag="--train",
    )
    valid_file: str = option(
        str(DEFAULT_DATA_DIR / "valid.txt"), "validation text, same format", flag="--dev"
    )
    max_train_lines: int | None = option(None, "only use the first N training lines (default: all)")
    max_valid_lines: int | None = option(
        None, "only use the first N validation lines (default: all)", flag="--max-dev-lines"
    )
    text_format: str = option(
        "auto",
        "wikitext = already tokenized (split on spaces); plain = ordinary text, cut into words "
        "by the served tokenizer's rules; auto = wikitext when splitting the plain way would "
        "change almost no word",
        choices=["auto", *TEXT_FORMATS],
    )
    batch_size: int = option(20, "parallel training streams")
    eval_batch_size: int = option(10, "parallel validation streams")
    bptt: int = option(35, "truncated back-propagation length in tokens")
    lr: float = option(20.0, "initial SGD learning rate (plain SGD beat Adam by far here)")
    clip: float = option(0.25, "gradient-norm clipping threshold")
    epochs: int = option(40, "maximum number of epochs (--dry-run: 1)")
    anneal_factor: float = option(4.0, "divide the learning rate by this on a validation plateau")
    anneal_threshold: float = option(
        0.01, "plateau = validation loss improved by less than this (nats)"
    )
    min_lr: float = option(0.01, "stop when the learning rate falls below this")
    max_minutes: float = option(0.0, "stop after this many minutes of training (0 = no limit)")
    anneal_after_minutes: float = option(
        0.0, "force one anneal after this many minutes if none happened (0 = off)"
    )
    eval_interval: int = option(
        1500,
        "validate, save the best and maybe anneal every N batches (0 = once per epoch); "
        "history then has fractional epochs",
    )
    seed: int = option(1111, "random seed")
    threads: int = option(2, "torch intra-op threads")
    resume: str | None = option(
        None,
        "continue from a best.pt (its architecture, weights and history; the architecture "
        "flags are ignored), e.g. with a lower --lr",
    )
    dry_run: bool = False  # --dry-run (a run flag): one epoch on the first lines of each file
    name: str = ""  # the model name the run is for: lm export publishes under it


def evaluate_loss(model: RNNModel, data: torch.Tensor, bptt: int) -> float:
    """Mean NLL (nats/token) over [batch, steps] streams, state carried across chunks."""
    model.eval()
    total, count = 0.0, 0
    state: State = model.init_hidden(data.size(0))
    with torch.no_grad():
        for inputs, targets in bptt_chunks(data, bptt):
            loss, state = model.loss(inputs, targets, state)
            total += float(loss) * targets.numel()
            count += targets.numel()
    return total / count


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _fit_cutoffs(cutoffs: list[int], vocab_size: int) -> list[int]:
    """A small corpus (a dry run's slice, a user's text) has a small vocabulary: scale the
    adaptive softmax cutoffs down to fit it."""
    kept = [c for c in cutoffs if c < vocab_size - 1]
    if kept == cutoffs:
        return cutoffs
    return [max(1, vocab_size // 4), max(2, vocab_size // 2)]


def train(model_cfg: LMConfig, cfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)

    if cfg.dry_run:  # the saved configuration says what really ran
        cfg.max_train_lines, cfg.max_valid_lines = DRY_RUN_LINES
        cfg.epochs = 1
        model_cfg.emb_size = min(model_cfg.emb_size, DRY_RUN_SIZE)
        model_cfg.hidden_size = min(model_cfg.hidden_size, DRY_RUN_SIZE)
    max_train, max_valid = cfg.max_train_lines, cfg.max_valid_lines
    if cfg.text_format == "auto":
        cfg.text_format = detect_text_format(cfg.train_file)
        print(f"text format: {cfg.text_format} (detected; --text-format to override)", flush=True)
    train_tokens = read_tokens(cfg.train_file, max_train, cfg.text_format)
    valid_tokens = read_tokens(cfg.valid_file, max_valid, cfg.text_format)
    vocab = build_vocab(train_tokens)
    model_cfg.vocab_size = len(vocab)
    if model_cfg.softmax == "adaptive":
        fitted = _fit_cutoffs(model_cfg.cutoffs, len(vocab))
        if fitted != model_cfg.cutoffs and not cfg.dry_run:
            print(
                f"adaptive softmax cutoffs {model_cfg.cutoffs} do not fit a vocabulary of "
                f"{len(vocab)}: using {fitted}",
                flush=True,
            )
        model_cfg.cutoffs = fitted
    train_data = batchify(encode(train_tokens, vocab), cfg.batch_size)
    valid_data = batchify(encode(valid_tokens, vocab), cfg.eval_batch_size)
    # what the card will say about the data: files, lines and tokens really used
    data_used: dict[str, dict[str, Any]] = {}
    for split, path, limit, tokens in (
        ("train", cfg.train_file, max_train, train_tokens),
        ("valid", cfg.valid_file, max_valid, valid_tokens),
    ):
        lines = count_lines(path)
        data_used[split] = {
            "file": str(path),
            "lines_in_file": lines,
            "lines_used": lines if limit is None else min(lines, limit),
            "tokens": len(tokens),  # <eos> included
            "text_format": cfg.text_format,
        }
    title = f"word-level LM on {Path(cfg.train_file).name}"

    resumed: dict[str, Any] | None = None
    if cfg.resume:
        resumed = torch.load(cfg.resume, weights_only=True)
        if resumed["vocab"] != vocab:
            raise ValueError(f"{cfg.resume} was trained with another vocabulary than this data")
        model_cfg = LMConfig.from_dict(resumed["model_config"])
    model = RNNModel(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"vocab {len(vocab)}  train tokens {train_data.numel()}  valid tokens "
        f"{valid_data.numel()}  params {n_params}",
        flush=True,
    )
    print(f"model {model_cfg}\ntrain {cfg}", flush=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr)

    history: list[dict[str, float]] = []
    best_loss = math.inf
    epoch_offset, minutes_offset = 0.0, 0.0
    if resumed is not None:  # carry on the curves from where the checkpoint was saved
        model.load_state_dict(resumed["state_dict"])
        history = list(resumed["history"])
        best_loss = float(resumed["valid_loss"])
        epoch_offset = float(resumed["epoch"])
        minutes_offset = history[-1]["elapsed_minutes"] if history else 0.0
        print(
            f"resuming from {cfg.resume}: epoch {epoch_offset:g}, valid ppl "
            f"{math.exp(best_loss):.2f}, lr {cfg.lr:g}",
            flush=True,
        )
    best_path = out / "best.pt"
    lr = cfg.lr
    annealed = False
    started = time.monotonic()
    n_chunks = math.ceil((train_data.size(1) - 1) / cfg.bptt)

    def checkpoint(epoch: float, valid_loss: float) -> dict[str, Any]:
        return {
            "model_config": model_cfg.to_dict(),
            "train_config": asdict(cfg),
            "vocab": vocab,
            "state_dict": model.state_dict(),
            "epoch": epoch,
            "valid_loss": valid_loss,
            "history": history,
            "data": data_used,
        }

    def end_of_period(epoch_pos: float, train_loss: float, tokens: int, seconds: float) -> bool:
        """Validate, save if best, anneal on a plateau; True when training should stop."""
        nonlocal best_loss, lr, annealed
        valid_loss = evaluate_loss(model, valid_data, cfg.bptt)
        model.train()
        elapsed_min = (time.monotonic() - started) / 60
        improved = valid_loss < best_loss
        epoch_pos += epoch_offset
        history.append(
            {
                "epoch": round(epoch_pos, 3),
                "lr": lr,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "train_ppl": math.exp(train_loss),
                "valid_ppl": math.exp(valid_loss),
                "train_seconds": seconds,
                "tokens_per_second": tokens / seconds,
                "elapsed_minutes": elapsed_min + minutes_offset,
            }
        )
        print(
            f"| epoch {epoch_pos:6.2f} | lr {lr:g} | {seconds:6.1f}s "
            f"({tokens / seconds:,.0f} tok/s) | train ppl {math.exp(train_loss):8.2f} | "
            f"valid ppl {math.exp(valid_loss):8.2f} | {elapsed_min + minutes_offset:5.1f} min |"
            f"{' best' if improved else ''}",
            flush=True,
        )
        plateau = valid_loss > best_loss - cfg.anneal_threshold
        if improved:
            best_loss = valid_loss
            _save_atomic(checkpoint(epoch_pos, valid_loss), best_path)
        _write_json_atomic(history, out / "history.json")
        plot_curves(
            history,
            out / "curves.png",
            [
                ("loss (nats/token)", ["train_loss", "valid_loss"]),
                ("perplexity", ["train_ppl", "valid_ppl"]),
            ],
            title=title,
        )
        if cfg.max_minutes and elapsed_min >= cfg.max_minutes:
            print(f"time budget of {cfg.max_minutes} min reached", flush=True)
            return True
        forced = (
            cfg.anneal_after_minutes > 0
            and not annealed
            and elapsed_min >= cfg.anneal_after_minutes
        )
        if plateau or forced:
            if not improved:  # got worse: continue from the best weights, not the overfit ones
                best = torch.load(best_path, weights_only=True)
                model.load_state_dict(best["state_dict"])
            lr /= cfg.anneal_factor
            annealed = True
            for group in optimizer.param_groups:
                group["lr"] = lr
            print(
                f"annealing lr to {lr:g} ({'forced' if forced and not plateau else 'plateau'})",
                flush=True,
            )
            if lr < cfg.min_lr:
                print("learning rate below min_lr: stopping", flush=True)
                return True
        return False

    if resumed is not None and not best_path.exists():  # annealing may reload the best weights
        _save_atomic(checkpoint(epoch_offset, best_loss), best_path)
    stop = False
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        state: State = model.init_hidden(cfg.batch_size)
        total, count = 0.0, 0
        t0 = time.monotonic()
        bar = tqdm(
            bptt_chunks(train_data, cfg.bptt),
            total=n_chunks,
            desc=f"epoch {epoch}",
            mininterval=30 if not cfg.dry_run else 0.1,
        )
        for batch, (inputs, targets) in enumerate(bar, start=1):
            state = repackage(state)
            optimizer.zero_grad(set_to_none=True)
            loss, state = model.loss(inputs, targets, state)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            total += loss.item() * targets.numel()
            count += targets.numel()
            bar.set_postfix(
                loss=f"{total / count:.3f}", ppl=f"{math.exp(total / count):.1f}", refresh=False
            )
            if batch == n_chunks or (cfg.eval_interval and batch % cfg.eval_interval == 0):
                stop = end_of_period(
                    epoch - 1 + batch / n_chunks, total / count, count, time.monotonic() - t0
                )
                total, count = 0.0, 0
                t0 = time.monotonic()
                if stop:
                    break
        bar.close()
        if stop:
            break
    return {
        "best_valid_loss": best_loss,
        "best_valid_ppl": math.exp(best_loss),
        "checkpoint": str(best_path),
        "history": history,
    }
