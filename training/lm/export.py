"""Export a trained checkpoint to the next-word model folder and verify it.

    seqserve-train lm export --checkpoint runs/next-word/wikitext2-lstm/best.pt
    # ^ publishes the next free version of the checkpoint's name (wikitext2-lstm:3, ...)

Writes two graphs (legacy exporter, dynamic batch and sequence axes) so serving never builds
[seq, vocab] distributions it does not need:

* ``model.onnx``: input_ids [batch, seq], h0 (, c0) -> log_probs [batch, vocab] at the last
  position, hn (, cn);
* ``score.onnx``: input_ids, target_ids [batch, seq], h0 (, c0) -> token_log_probs
  [batch, seq] = log p(target_t | inputs <= t), hn (, cn);

plus ``tokenizer.json``, ``curves.png`` and ``card.json``. The fp32 graphs are checked against
PyTorch (several shapes, and a run split in two halves with the state carried over); when the
fp32 folder would exceed the size cap int8 graphs are shipped: by default weight-only int8
(``training.lm.quantize``: keeps split-state runs equal to whole runs, which serving's carried
state needs), with onnxruntime's dynamic quantization measured alongside for comparison; both
validation perplexities go into the card.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.artifacts import write_card
from training.common.curves import plot_curves
from training.lm.card_sections import (
    card_metrics,
    dataset_records,
    describe,
    finish_card,
    state_section,
)
from training.lm.evaluate import load_checkpoint, text_format_of
from training.lm.export_config import ExportConfig
from training.lm.measure import load_validation, ship_graphs
from training.lm.tokenizer import build_tokenizer, pretokenize, round_trip_mismatches
from training.lm.tokens import EOS, UNK

TOKENIZER_EXAMPLES = [
    "Happy birthday, my friend!",
    "I don't think John's well-known car cost $1,000 or 3.5%.",
    "The U.S. Army's No. 1 hit (in 1998) was great...",
]


def checkpoint_name(ckpt: dict[str, Any]) -> str:
    """The model name the run was for (older checkpoints: derived from their training file)."""
    cfg = ckpt["train_config"]
    return cfg.get("name") or default_name(cfg["train_file"], ckpt["model_config"]["cell"])


def default_name(train_file: str | Path, cell: str) -> str:
    """``wikitext2-lstm`` for WikiText-2's ``train.txt``, ``lighthouse-lstm`` for a user's
    ``lighthouse_train.txt``: the data's name and the cell."""

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    path = Path(train_file)
    stem = re.sub(r"-?train(ing)?$", "", slug(path.stem)) or slug(path.parent.name) or "my-lm"
    return f"{stem[:50]}-{cell}"


def data_files(cfg: ExportConfig, ckpt: dict[str, Any]) -> tuple[Path, Path]:
    """The given training / validation files, else the ones the checkpoint's run used."""
    used = ckpt["train_config"]
    train = Path(cfg.train_file or used["train_file"])
    valid = Path(cfg.valid_file or used["valid_file"])
    return train, valid


def lines_used(ckpt: dict[str, Any], split: str, path: Path) -> int | None:
    """How many lines of ``path`` the run read for ``split`` (None: all, or another file), so
    a dry run's export checks its 300 + 60 lines, not all of WikiText-2."""
    used = ckpt.get("data", {}).get(split)
    if used and Path(used["file"]).resolve() == path.resolve():
        return int(used["lines_used"])
    return None


def write_tokenizer(
    folder: Path,
    vocab: list[str],
    text_format: str,
    train_file: Path,
    train_limit: int | None,
    valid_lines: list[str],
) -> dict[str, Any]:
    """``tokenizer.json`` and the card's tokenizer section, with a round-trip check: serving
    must cut the training text into exactly the tokens the model was trained on."""
    # plain text was cut by pretokenize (no protected words): serve exactly that
    tokenizer = build_tokenizer(vocab, protect=text_format == "wikitext")
    tokenizer.save(str(folder / "tokenizer.json"))
    train_lines = train_file.read_text(encoding="utf-8").splitlines()[:train_limit]
    split_line = str.split if text_format == "wikitext" else pretokenize
    round_trip = {}
    for split, lines in (("train", train_lines), ("valid", valid_lines)):
        checked, bad, examples = round_trip_mismatches(tokenizer, lines, vocab, split_line)
        round_trip[split] = {"lines": checked, "mismatched_lines": bad, "examples": examples}
    shown = TOKENIZER_EXAMPLES  # typed text, and the words the model reads
    if text_format == "plain":  # the user's own sentences say more than WikiText ones
        shown = [" ".join(line.split()[:15]) for line in valid_lines if line.strip()][:3]
    return {
        "file": "tokenizer.json",
        "type": "tokenizers WordLevel",
        "usage": "Tokenizer.from_file(path).encode(text).ids",
        "examples": {t: " ".join(tokenizer.encode(t).tokens) for t in shown},
        "round_trip": round_trip,
    }


def _history_curves(
    cfg: ExportConfig, checkpoint: Path, ckpt: dict[str, Any], folder: Path, train_name: str
) -> list[dict[str, Any]]:
    """The run's history (``--history``, else the file next to the checkpoint, else the
    checkpoint's own copy), drawn into ``curves.png``."""
    hist_path = Path(cfg.history) if cfg.history else checkpoint.with_name("history.json")
    hist: list[dict[str, Any]] = (
        json.loads(hist_path.read_text()) if hist_path.exists() else ckpt["history"]
    )
    plot_curves(
        hist,
        folder / "curves.png",
        [
            ("loss (nats/token)", ["train_loss", "valid_loss"]),
            ("perplexity", ["train_ppl", "valid_ppl"]),
        ],
        title=f"word-level LM on {train_name}",
    )
    return hist


def _special_tokens(vocab: list[str]) -> dict[str, Any]:
    """The card's special tokens, and the start token serving feeds before a fresh prompt."""
    return {
        "special_tokens": {
            "unk": {"token": UNK, "id": vocab.index(UNK)},
            "eos": {"token": EOS, "id": vocab.index(EOS)},
        },
        "start_token": {
            "token": EOS,
            "id": vocab.index(EOS),
            "note": "training text is a stream of lines each ended by <eos>; feed "
            "it first so a fresh prompt starts like a new line",
        },
    }


def _training_section(
    checkpoint: Path,
    ckpt: dict[str, Any],
    cfg: ExportConfig,
    model_config: dict[str, Any],
    hist: list[dict[str, Any]],
    text_format: str,
) -> dict[str, Any]:
    """How the shipped weights were made: configs, best epoch and the full history."""
    return {
        "checkpoint": str(checkpoint),
        "model_config": model_config,
        "train_config": ckpt["train_config"],
        "export_config": asdict(cfg),
        "best_epoch": ckpt["epoch"],
        "epochs_run": len(hist),
        "best_valid_perplexity_pytorch": float(np.exp(ckpt["valid_loss"])),
        "text_format": text_format,
        "history": hist,
    }


def export_model(
    checkpoint: Path, folder: Path, cfg: ExportConfig, name: str, version: str
) -> dict[str, Any]:
    """Write the next-word model folder for ``checkpoint`` into ``folder`` (the store's staging
    folder: ``contract.store.publishing`` moves it into place) and return its card."""
    torch.set_num_threads(cfg.threads)
    model, ckpt = load_checkpoint(checkpoint)
    vocab: list[str] = ckpt["vocab"]
    train_file, valid_file = data_files(cfg, ckpt)
    text_format = text_format_of(ckpt)
    limit = cfg.max_valid_lines
    if limit is None:
        limit = lines_used(ckpt, "valid", valid_file)
    eval_streams = ckpt["train_config"]["eval_batch_size"]
    val = load_validation(valid_file, limit, vocab, text_format, eval_streams)
    train_limit = lines_used(ckpt, "train", train_file)
    tokenizer = write_tokenizer(folder, vocab, text_format, train_file, train_limit, val.lines)
    graphs = ship_graphs(model, folder, val, cfg)
    shipped_key = graphs["shipped_key"]

    hist = _history_curves(cfg, checkpoint, ckpt, folder, train_file.name)
    shipped = graphs["metrics"][shipped_key]
    datasets = dataset_records(train_file, valid_file, ckpt, val, vocab, text_format)
    mcfg = model.config
    card: dict[str, Any] = {
        "task": "next-word",
        "name": name,
        "version": version,
        "description": describe(mcfg, datasets, shipped["valid_perplexity"]),
        "cell": mcfg.cell,
        "layers": mcfg.layers,
        "emb_size": mcfg.emb_size,
        "hidden_size": mcfg.hidden_size,
        "vocab_size": mcfg.vocab_size,
        "precision": f"int8 ({cfg.int8_method})" if shipped_key != "fp32" else "fp32",
        "tokenizer": tokenizer,
        **_special_tokens(vocab),
        "onnx": graphs["specs"]["model.onnx"],
        "score_onnx": graphs["specs"]["score.onnx"],
        "weights": graphs["weights"],
        "state": state_section(model),
        "training": _training_section(checkpoint, ckpt, cfg, mcfg.to_dict(), hist, text_format),
        "datasets": [{"role": role, **rec} for role, rec in datasets.items()],
        "metrics": card_metrics(shipped, graphs, cfg, val, valid_file, hist),
        "quantization": graphs["quant"],
        "curves": "curves.png",
    }
    write_card(folder, card)
    return finish_card(folder)
