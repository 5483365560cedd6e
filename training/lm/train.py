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
    batchify,
    bptt_chunks,
    build_vocab,
    count_lines,
    detect_text_format,
    encode,
    read_tokens,
)
from training.lm.model import LMConfig, RNNModel, State, repackage
from training.lm.tokens import TEXT_FORMATS

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
    """A checkpoint written whole or not at all (``lm export`` may read it any time)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
    """JSON written whole or not at all (read while training runs)."""
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


@dataclass
class Corpus:
    """The run's data as the model sees it, and what the card will say about it."""

    vocab: list[str]
    train: torch.Tensor  # [batch_size streams, steps]
    valid: torch.Tensor  # [eval_batch_size streams, steps]
    used: dict[str, dict[str, Any]]  # per split: file, lines and tokens really used


def _apply_dry_run(model_cfg: LMConfig, cfg: TrainConfig) -> None:
    """Shrink the run to seconds; done on the configs so the saved ones say what really ran."""
    cfg.max_train_lines, cfg.max_valid_lines = DRY_RUN_LINES
    cfg.epochs = 1
    model_cfg.emb_size = min(model_cfg.emb_size, DRY_RUN_SIZE)
    model_cfg.hidden_size = min(model_cfg.hidden_size, DRY_RUN_SIZE)


def _fit_softmax(model_cfg: LMConfig, vocab_size: int, quiet: bool) -> None:
    """Size the model's output to the vocabulary (adaptive cutoffs scaled down if needed)."""
    model_cfg.vocab_size = vocab_size
    if model_cfg.softmax != "adaptive":
        return
    fitted = _fit_cutoffs(model_cfg.cutoffs, vocab_size)
    if fitted != model_cfg.cutoffs and not quiet:
        print(
            f"adaptive softmax cutoffs {model_cfg.cutoffs} do not fit a vocabulary of "
            f"{vocab_size}: using {fitted}",
            flush=True,
        )
    model_cfg.cutoffs = fitted


def _data_used(cfg: TrainConfig, tokens: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """What the card will say about the data: files, lines and tokens really used."""
    used: dict[str, dict[str, Any]] = {}
    for split, path, limit in (
        ("train", cfg.train_file, cfg.max_train_lines),
        ("valid", cfg.valid_file, cfg.max_valid_lines),
    ):
        lines = count_lines(path)
        used[split] = {
            "file": str(path),
            "lines_in_file": lines,
            "lines_used": lines if limit is None else min(lines, limit),
            "tokens": len(tokens[split]),  # <eos> included
            "text_format": cfg.text_format,
        }
    return used


def read_corpus(model_cfg: LMConfig, cfg: TrainConfig) -> Corpus:
    """Read both files in the run's text format (detected when ``auto``), build the vocabulary
    from the training text and size the model's output to it."""
    if cfg.text_format == "auto":
        cfg.text_format = detect_text_format(cfg.train_file)
        print(f"text format: {cfg.text_format} (detected; --text-format to override)", flush=True)
    tokens = {
        "train": read_tokens(cfg.train_file, cfg.max_train_lines, cfg.text_format),
        "valid": read_tokens(cfg.valid_file, cfg.max_valid_lines, cfg.text_format),
    }
    vocab = build_vocab(tokens["train"])
    _fit_softmax(model_cfg, len(vocab), quiet=cfg.dry_run)
    return Corpus(
        vocab=vocab,
        train=batchify(encode(tokens["train"], vocab), cfg.batch_size),
        valid=batchify(encode(tokens["valid"], vocab), cfg.eval_batch_size),
        used=_data_used(cfg, tokens),
    )


class Run:
    """One training run's moving parts: model, optimizer, learning rate, best loss, history.

    ``end_of_period`` runs after every epoch (or ``--eval-interval`` batches): validate, save
    the best checkpoint, and anneal the learning rate on a plateau."""

    def __init__(
        self,
        model_cfg: LMConfig,
        cfg: TrainConfig,
        corpus: Corpus,
        out: Path,
        resumed: dict[str, Any] | None,
    ) -> None:
        self.model_cfg, self.cfg, self.corpus, self.out = model_cfg, cfg, corpus, out
        self.model = RNNModel(model_cfg)
        n_params = sum(p.numel() for p in self.model.parameters())
        print(
            f"vocab {len(corpus.vocab)}  train tokens {corpus.train.numel()}  valid tokens "
            f"{corpus.valid.numel()}  params {n_params}",
            flush=True,
        )
        print(f"model {model_cfg}\ntrain {cfg}", flush=True)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr)
        self.history: list[dict[str, float]] = []
        self.best_loss = math.inf
        self.epoch_offset, self.minutes_offset = 0.0, 0.0
        self.best_path = out / "best.pt"
        self.lr = cfg.lr
        self.annealed = False
        if resumed is not None:
            self._resume(resumed)
        self.started = time.monotonic()

    def _resume(self, resumed: dict[str, Any]) -> None:
        """Carry on the weights and the curves from where the checkpoint was saved."""
        self.model.load_state_dict(resumed["state_dict"])
        self.history = list(resumed["history"])
        self.best_loss = float(resumed["valid_loss"])
        self.epoch_offset = float(resumed["epoch"])
        self.minutes_offset = self.history[-1]["elapsed_minutes"] if self.history else 0.0
        print(
            f"resuming from {self.cfg.resume}: epoch {self.epoch_offset:g}, valid ppl "
            f"{math.exp(self.best_loss):.2f}, lr {self.cfg.lr:g}",
            flush=True,
        )
        if not self.best_path.exists():  # annealing may reload the best weights
            _save_atomic(self.checkpoint(self.epoch_offset, self.best_loss), self.best_path)

    def checkpoint(self, epoch: float, valid_loss: float) -> dict[str, Any]:
        """Plain data only (config dicts, vocabulary, tensors): no pickled modules."""
        return {
            "model_config": self.model_cfg.to_dict(),
            "train_config": asdict(self.cfg),
            "vocab": self.corpus.vocab,
            "state_dict": self.model.state_dict(),
            "epoch": epoch,
            "valid_loss": valid_loss,
            "history": self.history,
            "data": self.corpus.used,
        }

    def _record(
        self,
        epoch_pos: float,
        train_loss: float,
        valid_loss: float,
        tokens: int,
        seconds: float,
        elapsed_min: float,
    ) -> None:
        """Append the period's row to the history and print it."""
        improved = valid_loss < self.best_loss
        minutes = elapsed_min + self.minutes_offset
        self.history.append(
            {
                "epoch": round(epoch_pos, 3),
                "lr": self.lr,
                "train_loss": train_loss,
                "valid_loss": valid_loss,
                "train_ppl": math.exp(train_loss),
                "valid_ppl": math.exp(valid_loss),
                "train_seconds": seconds,
                "tokens_per_second": tokens / seconds,
                "elapsed_minutes": minutes,
            }
        )
        print(
            f"| epoch {epoch_pos:6.2f} | lr {self.lr:g} | {seconds:6.1f}s "
            f"({tokens / seconds:,.0f} tok/s) | train ppl {math.exp(train_loss):8.2f} | "
            f"valid ppl {math.exp(valid_loss):8.2f} | {minutes:5.1f} min |"
            f"{' best' if improved else ''}",
            flush=True,
        )

    def _anneal(self, improved: bool, plateau: bool, forced: bool) -> bool:
        """Divide the learning rate; True when it falls below ``min_lr`` (stop)."""
        if not improved:  # got worse: continue from the best weights, not the overfit ones
            best = torch.load(self.best_path, weights_only=True)
            self.model.load_state_dict(best["state_dict"])
        self.lr /= self.cfg.anneal_factor
        self.annealed = True
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        print(
            f"annealing lr to {self.lr:g} ({'forced' if forced and not plateau else 'plateau'})",
            flush=True,
        )
        if self.lr < self.cfg.min_lr:
            print("learning rate below min_lr: stopping", flush=True)
            return True
        return False

    def end_of_period(
        self, epoch_pos: float, train_loss: float, tokens: int, seconds: float
    ) -> bool:
        """Validate, save if best, anneal on a plateau; True when training should stop."""
        cfg = self.cfg
        valid_loss = evaluate_loss(self.model, self.corpus.valid, cfg.bptt)
        self.model.train()
        elapsed_min = (time.monotonic() - self.started) / 60
        improved = valid_loss < self.best_loss
        epoch_pos += self.epoch_offset
        self._record(epoch_pos, train_loss, valid_loss, tokens, seconds, elapsed_min)
        plateau = valid_loss > self.best_loss - cfg.anneal_threshold
        if improved:
            self.best_loss = valid_loss
            _save_atomic(self.checkpoint(epoch_pos, valid_loss), self.best_path)
        _write_json_atomic(self.history, self.out / "history.json")
        plot_curves(
            self.history,
            self.out / "curves.png",
            [
                ("loss (nats/token)", ["train_loss", "valid_loss"]),
                ("perplexity", ["train_ppl", "valid_ppl"]),
            ],
            title=f"word-level LM on {Path(cfg.train_file).name}",
        )
        if cfg.max_minutes and elapsed_min >= cfg.max_minutes:
            print(f"time budget of {cfg.max_minutes} min reached", flush=True)
            return True
        forced = (
            cfg.anneal_after_minutes > 0
            and not self.annealed
            and elapsed_min >= cfg.anneal_after_minutes
        )
        if plateau or forced:
            return self._anneal(improved, plateau, forced)
        return False

    def epoch(self, epoch: int) -> bool:
        """One pass over the training streams (truncated BPTT, state carried between chunks);
        True when ``end_of_period`` says to stop."""
        cfg, model, data = self.cfg, self.model, self.corpus.train
        n_chunks = math.ceil((data.size(1) - 1) / cfg.bptt)
        model.train()
        state: State = model.init_hidden(cfg.batch_size)
        total, count = 0.0, 0
        t0 = time.monotonic()
        bar = tqdm(
            bptt_chunks(data, cfg.bptt),
            total=n_chunks,
            desc=f"epoch {epoch}",
            mininterval=30 if not cfg.dry_run else 0.1,
        )
        stop = False
        for batch, (inputs, targets) in enumerate(bar, start=1):
            state = repackage(state)
            self.optimizer.zero_grad(set_to_none=True)
            loss, state = model.loss(inputs, targets, state)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            self.optimizer.step()
            total += loss.item() * targets.numel()
            count += targets.numel()
            bar.set_postfix(
                loss=f"{total / count:.3f}", ppl=f"{math.exp(total / count):.1f}", refresh=False
            )
            if batch == n_chunks or (cfg.eval_interval and batch % cfg.eval_interval == 0):
                stop = self.end_of_period(
                    epoch - 1 + batch / n_chunks, total / count, count, time.monotonic() - t0
                )
                total, count = 0.0, 0
                t0 = time.monotonic()
                if stop:
                    break
        bar.close()
        return stop


def train(model_cfg: LMConfig, cfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train into ``out_dir`` (``best.pt``, ``history.json``, ``curves.png``); return the best
    validation loss and the checkpoint's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if cfg.dry_run:
        _apply_dry_run(model_cfg, cfg)
    corpus = read_corpus(model_cfg, cfg)
    resumed: dict[str, Any] | None = None
    if cfg.resume:
        resumed = torch.load(cfg.resume, weights_only=True)
        if resumed["vocab"] != corpus.vocab:
            raise ValueError(f"{cfg.resume} was trained with another vocabulary than this data")
        model_cfg = LMConfig.from_dict(resumed["model_config"])
    run = Run(model_cfg, cfg, corpus, out, resumed)
    for epoch in range(1, cfg.epochs + 1):
        if run.epoch(epoch):
            break
    return {
        "best_valid_loss": run.best_loss,
        "best_valid_ppl": math.exp(run.best_loss),
        "checkpoint": str(run.best_path),
        "history": run.history,
    }
