"""The parts of the next-word card that describe rather than measure: the data files (known
public ones recognised by their bytes), the one-sentence description, the state, the metrics
section and the folder size, plus the try-it requests printed after publishing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.common.artifacts import dataset_record, sha256_file
from training.lm.data import count_lines
from training.lm.export_config import MAX_FOLDER_BYTES, ExportConfig
from training.lm.graphs import state_names
from training.lm.measure import Validation
from training.lm.model import RNNModel
from training.lm.tokens import UNK

DATASET_URL = "https://huggingface.co/datasets/Salesforce/wikitext"
# public files recognised by their bytes (sha256), never by their name or folder
KNOWN_FILES = {
    "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f": ("WikiText-2", DATASET_URL),
    "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8": ("WikiText-2", DATASET_URL),
}
FORMAT_WORDS = {"wikitext": "already tokenized text", "plain": "plain text"}


def folder_bytes(folder: Path) -> int:
    """Bytes of the files in ``folder`` (the shipped folder's size, against the cap)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def text_record(path: Path, text_format: str) -> dict[str, Any]:
    """A text file's card record: hash, size, line count, format, and its public name when
    its bytes are a known file."""
    rec = dataset_record(path)
    known = KNOWN_FILES.get(rec["sha256"])
    if known:
        rec["dataset"], rec["url"] = known
    rec["lines"] = count_lines(path)
    rec["text_format"] = text_format
    return rec


def _train_record(path: Path, ckpt: dict[str, Any], text_format: str) -> dict[str, Any]:
    """The training file with the lines and tokens the run really used (from the checkpoint)."""
    rec = text_record(path, text_format)
    used = ckpt.get("data", {}).get("train")
    trained_on = Path(used["file"] if used else ckpt["train_config"]["train_file"])
    if trained_on.resolve() != path.resolve():
        rec["note"] = f"the checkpoint was trained on {trained_on}, not on this file"
    elif used:
        rec["lines_used"], rec["tokens"] = used["lines_used"], used["tokens"]
    return rec


def _amount(rec: dict[str, Any]) -> str:
    """How much of a file was used, in words (``first 300 of 36,718 lines, ...``)."""
    lines = rec["lines"]
    used = rec.get("lines_used", lines)
    text = f"{lines:,} lines" if used == lines else f"first {used:,} of {lines:,} lines"
    return f"{text}, {rec['tokens']:,} tokens" if "tokens" in rec else text


def describe(cfg: Any, datasets: dict[str, dict[str, Any]], valid_perplexity: float) -> str:
    """One sentence generated from the run: model, the data it was trained and scored on."""
    train, valid = datasets["train"], datasets["valid"]

    def name(rec: dict[str, Any]) -> str:
        return f"{rec['dataset']} {rec['file']}" if rec.get("dataset") else rec["file"]

    return (
        f"Word-level {cfg.cell.upper()} language model ({cfg.layers}x{cfg.hidden_size}, "
        f"{cfg.softmax} softmax, {cfg.vocab_size:,}-word vocabulary) trained on {name(train)} "
        f"({_amount(train)}, {FORMAT_WORDS.get(train['text_format'], train['text_format'])}); "
        f"validation perplexity {valid_perplexity:.1f} on {name(valid)} ({_amount(valid)})."
    )


def try_it_requests(train_file: Path) -> list[tuple[str, dict[str, Any]]]:
    """A /next-word and a /next-word/score request made from the first words of the text."""
    words: list[str] = []
    with open(train_file, encoding="utf-8") as fh:
        for line in fh:
            words = line.split()
            if len(words) >= 6 and not line.lstrip().startswith("="):  # not a WikiText heading
                break
    prompt = " ".join(words[:4]) or "The"
    return [
        ("/next-word", {"text": prompt, "k": 5}),
        ("/next-word/score", {"text": " ".join(words[:12]) or prompt}),
    ]


def dataset_records(
    train_file: Path,
    valid_file: Path,
    ckpt: dict[str, Any],
    val: Validation,
    vocab: list[str],
    text_format: str,
) -> dict[str, dict[str, Any]]:
    """The card's record of the training and validation files, keyed by role."""
    valid = text_record(valid_file, text_format)
    valid["lines_used"] = len(val.lines)
    valid["tokens"] = len(val.tokens)
    valid["unknown_tokens"] = int((val.ids == vocab.index(UNK)).sum())
    return {"train": _train_record(train_file, ckpt, text_format), "valid": valid}


def card_metrics(
    shipped: dict[str, Any],
    graphs: dict[str, Any],
    cfg: ExportConfig,
    val: Validation,
    valid_file: Path,
    hist: list[dict[str, Any]],
) -> dict[str, Any]:
    """The card's ``metrics``: the shipped graphs' figures, every precision, training speed
    and parity."""
    metrics = graphs["metrics"]
    parity = graphs["parity"]
    epoch_seconds = [h["train_seconds"] for h in hist]
    return {
        "valid_perplexity": shipped["valid_perplexity"],
        "valid_perplexity_fp32": metrics["fp32"]["valid_perplexity"],
        "valid_perplexity_int8": metrics.get(cfg.int8_method, {}).get("valid_perplexity"),
        "valid_top1": shipped["valid_top1"],
        "valid_top5": shipped["valid_top5"],
        "evaluation": f"shipped ONNX graphs on {valid_file.name}: score.onnx for perplexity "
        f"({val.data.shape[0]} streams, state carried), model.onnx fed one "
        f"token at a time ({val.topk_data.shape[0]} streams) for top-k",
        "by_precision": metrics,
        # history rows may be fractions of an epoch (--eval-interval): normalise per epoch
        "train_seconds_per_epoch": (
            float(sum(epoch_seconds) / hist[-1]["epoch"]) if epoch_seconds else None
        ),
        "train_tokens_per_second": (
            float(np.mean([h["tokens_per_second"] for h in hist])) if hist else None
        ),
        "parity": {k: parity[k] for k in ("max_abs_diff", "tolerance", "cases", "passed")},
    }


def state_section(model: RNNModel) -> dict[str, Any]:
    """The card's ``state``: what serving feeds and carries between requests."""
    s_in, s_out = state_names(model)
    cfg = model.config
    return {
        "inputs": s_in,
        "outputs": s_out,
        "shape": [cfg.layers, "batch", cfg.hidden_size],
        "per_sequence_shape": [cfg.layers, cfg.hidden_size],
        "layers": cfg.layers,
        "hidden_size": cfg.hidden_size,
        "dtype": "float32",
        "initial": "zeros",
    }


def finish_card(folder: Path) -> dict[str, Any]:
    """write_card hashes only the main graph: add the score graph's hash and the folder size."""
    full: dict[str, Any] = json.loads((folder / "card.json").read_text())
    full["score_onnx"]["sha256"] = sha256_file(folder / "score.onnx")
    full["score_onnx"]["bytes"] = (folder / "score.onnx").stat().st_size
    full["folder_cap_bytes"] = MAX_FOLDER_BYTES
    for _ in range(2):  # the second pass counts the card with its own size in it
        full["folder_bytes"] = folder_bytes(folder)
        (folder / "card.json").write_text(json.dumps(full, indent=2) + "\n")
    if full["folder_bytes"] > MAX_FOLDER_BYTES:
        print(f"WARNING: model folder is {full['folder_bytes']:,} bytes > cap {MAX_FOLDER_BYTES:,}")
    return full
