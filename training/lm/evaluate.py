"""Validation metrics of a checkpoint (PyTorch) and of exported graphs (onnxruntime).

    seqserve-train lm evaluate --checkpoint runs/next-word/wikitext2-lstm/best.pt

Perplexity uses ``eval_batch_size`` parallel streams with the state carried across chunks, the
usual WikiText-2 protocol; the ONNX functions follow the same protocol on the shipped graphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.common.config_cli import option
from training.lm.data import batchify, encode, read_tokens
from training.lm.model import LMConfig, RNNModel, State


def load_checkpoint(path: str | Path) -> tuple[RNNModel, dict[str, Any]]:
    """Rebuild the model from the plain-data checkpoint (config dict + state dict)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = RNNModel(LMConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def text_format_of(ckpt: dict[str, Any]) -> str:
    """How the checkpoint's training text was cut into tokens (older checkpoints: WikiText)."""
    fmt = ckpt["train_config"].get("text_format", "wikitext")
    return "wikitext" if fmt == "auto" else str(fmt)


def torch_metrics(model: RNNModel, data: torch.Tensor, chunk: int = 70) -> dict[str, float]:
    """Perplexity and top-1/top-5 accuracy over [streams, steps] ids."""
    model.eval()
    nll, top1, top5, count = 0.0, 0, 0, 0
    state: State = model.init_hidden(data.size(0))
    with torch.no_grad():
        for i in range(0, data.size(1) - 1, chunk):
            n = min(chunk, data.size(1) - 1 - i)
            inputs, targets = data[:, i : i + n], data[:, i + 1 : i + 1 + n]
            out, state = model.features(inputs, state)
            lp = model.log_prob(out.reshape(-1, out.size(-1)))
            flat = targets.reshape(-1)
            nll -= float(lp.gather(1, flat.unsqueeze(1)).sum())
            best = lp.topk(5, dim=-1).indices
            top1 += int((best[:, 0] == flat).sum())
            top5 += int((best == flat.unsqueeze(1)).any(dim=1).sum())
            count += flat.numel()
    return {
        "perplexity": math.exp(nll / count),
        "top1": top1 / count,
        "top5": top5 / count,
        "positions": count,
    }


@dataclass
class EvalConfig:
    """``lm evaluate``'s settings (each field is a flag)."""

    valid_file: str | None = option(
        None,
        "validation text (default: the file the checkpoint was validated on)",
        flag="--dev",
    )
    max_valid_lines: int | None = option(
        None, "only use the first N validation lines (default: all)", flag="--max-dev-lines"
    )
    threads: int = option(2, "torch intra-op threads")


def evaluate_checkpoint(checkpoint: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    model, ckpt = load_checkpoint(checkpoint)
    valid_file = cfg.valid_file or ckpt["train_config"]["valid_file"]
    tokens = read_tokens(valid_file, cfg.max_valid_lines, text_format_of(ckpt))
    data = batchify(encode(tokens, ckpt["vocab"]), ckpt["train_config"]["eval_batch_size"])
    return {"epoch": ckpt["epoch"], "valid_file": str(valid_file), **torch_metrics(model, data)}


def _zero_state(
    state_names: list[str], layers: int, batch: int, hidden: int
) -> dict[str, np.ndarray]:
    return {n: np.zeros((layers, batch, hidden), dtype=np.float32) for n in state_names}


def onnx_perplexity(
    session: Any,
    data: np.ndarray,
    layers: int,
    hidden: int,
    state_in: list[str],
    state_out: list[str],
    chunk: int = 140,
) -> float:
    """Perplexity of ``score.onnx`` over [streams, steps] ids, state carried across chunks."""
    feeds = _zero_state(state_in, layers, data.shape[0], hidden)
    nll, count = 0.0, 0
    for i in range(0, data.shape[1] - 1, chunk):
        n = min(chunk, data.shape[1] - 1 - i)
        inputs, targets = data[:, i : i + n], data[:, i + 1 : i + 1 + n]
        outs = session.run(
            ["token_log_probs", *state_out], {"input_ids": inputs, "target_ids": targets, **feeds}
        )
        nll -= float(np.sum(outs[0], dtype=np.float64))
        count += outs[0].size
        feeds = dict(zip(state_in, outs[1:], strict=True))
    return math.exp(nll / count)


def onnx_topk(
    session: Any,
    data: np.ndarray,
    layers: int,
    hidden: int,
    state_in: list[str],
    state_out: list[str],
    max_positions: int | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy of ``model.onnx`` fed one token at a time, as serving uses it."""
    feeds = _zero_state(state_in, layers, data.shape[0], hidden)
    steps = data.shape[1] - 1
    if max_positions is not None:
        steps = min(steps, max(1, max_positions // data.shape[0]))
    top1 = top5 = count = 0
    for i in range(steps):
        outs = session.run(["log_probs", *state_out], {"input_ids": data[:, i : i + 1], **feeds})
        feeds = dict(zip(state_in, outs[1:], strict=True))
        best = np.argpartition(-outs[0], 5, axis=1)[:, :5]
        target = data[:, i + 1]
        top1 += int(np.sum(np.argmax(outs[0], axis=1) == target))
        top5 += int(np.sum(np.any(best == target[:, None], axis=1)))
        count += target.size
    return {"top1": top1 / count, "top5": top5 / count, "positions": count}
