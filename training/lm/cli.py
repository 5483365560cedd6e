"""``seqserve-train lm {train,evaluate,export}``: the word-level language model's commands.

    seqserve-train lm train --out-dir runs/lm
    seqserve-train lm evaluate --checkpoint runs/lm/best.pt
    seqserve-train lm export --checkpoint runs/lm/best.pt \
        --model-dir models/next-word/wikitext2-lstm/2

Your own text (plain text, one paragraph per line; a second file for validation):

    seqserve-train lm train --train-file my_train.txt --valid-file my_valid.txt --out-dir runs/my
    seqserve-train lm export --checkpoint runs/my/best.pt --model-dir models/next-word/my/1

``evaluate`` and ``export`` read the files the checkpoint was trained on unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

from training.lm.data import REPO_ROOT

DATA_DIR = "../shared/data/wikitext2"  # relative to the repository root


def _repo_path(value: str) -> Path:
    """Relative paths resolve against the repository root, not the working directory."""
    p = Path(value)
    return p if p.is_absolute() else REPO_ROOT / p


def _data_file(value: str | None, checkpoint: Path, split: str) -> Path:
    """The given file, else the one the checkpoint was trained / validated on."""
    if value:
        return _repo_path(value)
    import torch

    cfg = torch.load(checkpoint, map_location="cpu", weights_only=True)["train_config"]
    return Path(cfg[f"{split}_file"])


def _cmd_train(args: argparse.Namespace) -> int:
    from training.lm.model import LMConfig
    from training.lm.train import TrainConfig, train

    model_cfg = LMConfig(
        cell=args.cell,
        emb_size=args.emb_size,
        hidden_size=args.hidden_size,
        layers=args.layers,
        dropout=args.dropout,
        tie_weights=args.tied,
        softmax=args.softmax,
        cutoffs=list(args.cutoffs),
        div_value=args.div_value,
    )
    cfg = TrainConfig(
        train_file=str(_repo_path(args.train_file or f"{DATA_DIR}/train.txt")),
        valid_file=str(_repo_path(args.valid_file or f"{DATA_DIR}/valid.txt")),
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        bptt=args.bptt,
        lr=args.lr,
        clip=args.clip,
        epochs=1 if args.dry_run else args.epochs,
        anneal_factor=args.anneal_factor,
        anneal_threshold=args.anneal_threshold,
        min_lr=args.min_lr,
        max_minutes=args.max_minutes,
        anneal_after_minutes=args.anneal_after_minutes,
        eval_interval=args.eval_interval,
        seed=args.seed,
        threads=args.threads,
        dry_run=args.dry_run,
        max_lines=[args.max_train_lines, args.max_valid_lines],
        resume=str(_repo_path(args.resume)) if args.resume else None,
        text_format=args.text_format,
    )
    out_dir = args.out_dir or ("runs/lm-dry-run" if args.dry_run else "runs/lm")
    result = train(model_cfg, cfg, _repo_path(out_dir))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))

    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")

    # lighthouse_train.txt -> lighthouse; wikitext2/train.txt -> wikitext2
    name = re.sub(r"-?train$", "", slug(Path(cfg.train_file).stem))
    name = name or slug(Path(cfg.train_file).parent.name) or "my-lm"
    print(
        f"\nTrained {result['checkpoint']} (best valid perplexity "
        f"{result['best_valid_ppl']:.1f}). Next, export it for serving:\n"
        f"  seqserve-train lm export --checkpoint {shlex.quote(result['checkpoint'])} "
        f"--model-dir models/next-word/{name}/1"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.lm.evaluate import evaluate_checkpoint

    checkpoint = _repo_path(args.checkpoint)
    result = evaluate_checkpoint(
        checkpoint,
        _data_file(args.valid_file, checkpoint, "valid"),
        threads=args.threads,
        max_lines=args.max_valid_lines,
    )
    print(json.dumps(result, indent=2))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from training.common.try_it import try_it_lines
    from training.lm.export import export_model, try_it_requests

    checkpoint = _repo_path(args.checkpoint)
    train_file = _data_file(args.train_file, checkpoint, "train")
    model_dir = _repo_path(args.model_dir)
    card = export_model(
        checkpoint=checkpoint,
        model_dir=model_dir,
        train_file=train_file,
        valid_file=_data_file(args.valid_file, checkpoint, "valid"),
        opset=args.opset,
        quantize=args.quantize,
        threads=args.threads,
        max_valid_lines=args.max_valid_lines,
        topk_positions=args.topk_positions or None,
        int8_method=args.int8_method,
        history=_repo_path(args.history) if args.history else None,
    )
    summary: dict[str, Any] = {
        "model_dir": str(model_dir),
        "metrics": card.get("metrics"),
    }
    print(json.dumps(summary, indent=2))
    print(f"\n{card['description']}")
    about = f"vocabulary {card['vocab_size']:,}, valid perplexity "
    about += f"{card['metrics']['valid_perplexity']:.1f}"
    print(try_it_lines(model_dir, "next-word", try_it_requests(train_file), about))
    return 0


def _data_flags(p: argparse.ArgumentParser, train: bool = True, training: bool = False) -> None:
    def default(file: str) -> str:
        if training:
            return f"default: {DATA_DIR}/{file}, WikiText-2"
        return "default: the file the checkpoint was trained with"

    if train:
        p.add_argument(
            "--train-file",
            default=None,
            help="training text, one line per paragraph (WikiText-2 or plain text), "
            f"relative to the repo root ({default('train.txt')})",
        )
    p.add_argument(
        "--valid-file",
        default=None,
        help=f"validation text, relative to the repo root ({default('valid.txt')})",
    )
    p.add_argument(
        "--max-valid-lines",
        type=int,
        default=None,
        help="only use the first N validation lines (default: all)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime intra-op threads")


def register(subparsers: Any) -> None:
    lm = subparsers.add_parser(
        "lm",
        help="word-level language model (WikiText-2 or your own text)",
        description=__doc__.split("\n\n")[0],
    )
    sub = lm.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train with truncated BPTT; writes best.pt every epoch")
    _data_flags(t, training=True)
    t.add_argument(
        "--text-format",
        choices=["auto", "wikitext", "plain"],
        default="auto",
        help="wikitext = already tokenized (split on spaces); plain = ordinary text, cut into "
        "words by the served tokenizer's rules; auto = wikitext when splitting the plain way "
        "would change almost no word (default: %(default)s)",
    )
    t.add_argument(
        "--max-train-lines",
        type=int,
        default=None,
        help="only use the first N training lines (default: all)",
    )
    t.add_argument(
        "--out-dir",
        default=None,
        help="where best.pt, history.json and curves.png go "
        "(default: runs/lm, or runs/lm-dry-run with --dry-run)",
    )
    t.add_argument(
        "--cell", choices=["rnn", "lstm", "gru"], default="lstm", help="recurrent cell type"
    )
    t.add_argument("--emb-size", type=int, default=400, help="word embedding size")
    t.add_argument("--hidden-size", type=int, default=400, help="hidden units per layer")
    t.add_argument("--layers", type=int, default=2, help="number of recurrent layers")
    t.add_argument(
        "--dropout",
        type=float,
        default=0.4,
        help="dropout on embeddings, between layers and before the softmax",
    )
    t.add_argument(
        "--tied",
        action="store_true",
        help="tie embedding and output weights (needs --softmax full, emb==hidden)",
    )
    t.add_argument(
        "--softmax",
        choices=["adaptive", "full"],
        default="adaptive",
        help="adaptive softmax (fast for a 33k vocabulary) or a full softmax",
    )
    t.add_argument(
        "--cutoffs",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="adaptive softmax cluster boundaries (ids are frequency-sorted)",
    )
    t.add_argument(
        "--div-value",
        type=float,
        default=4.0,
        help="adaptive softmax: tail projection shrink factor per cluster",
    )
    t.add_argument("--batch-size", type=int, default=20, help="parallel training streams")
    t.add_argument("--eval-batch-size", type=int, default=10, help="validation streams")
    t.add_argument("--bptt", type=int, default=35, help="truncated BPTT length in tokens")
    t.add_argument("--lr", type=float, default=20.0, help="initial SGD learning rate")
    t.add_argument("--clip", type=float, default=0.25, help="gradient-norm clipping threshold")
    t.add_argument("--epochs", type=int, default=40, help="maximum number of epochs")
    t.add_argument(
        "--anneal-factor",
        type=float,
        default=4.0,
        help="divide the learning rate by this on a validation plateau",
    )
    t.add_argument(
        "--anneal-threshold",
        type=float,
        default=0.01,
        help="plateau = validation loss improved by less than this (nats)",
    )
    t.add_argument(
        "--min-lr", type=float, default=0.01, help="stop when the learning rate falls below this"
    )
    t.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="stop after this many minutes of training (0 = no limit)",
    )
    t.add_argument(
        "--anneal-after-minutes",
        type=float,
        default=0.0,
        help="force one anneal after this many minutes if none happened (0 = off)",
    )
    t.add_argument(
        "--eval-interval",
        type=int,
        default=1500,
        help="validate, save the best and maybe anneal every N batches "
        "(0 = once per epoch); history then has fractional epochs",
    )
    t.add_argument("--seed", type=int, default=1111, help="random seed")
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="one epoch on a tiny slice of the data (seconds), for smoke tests",
    )
    t.add_argument(
        "--resume",
        default=None,
        metavar="CHECKPOINT",
        help="continue from a best.pt (its architecture, weights and history; the "
        "architecture flags are ignored), e.g. with a lower --lr",
    )
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="validation perplexity of a checkpoint (PyTorch)")
    e.add_argument("--checkpoint", default="runs/lm/best.pt", help="checkpoint from lm train")
    _data_flags(e, train=False)
    e.set_defaults(func=_cmd_evaluate)

    x = sub.add_parser("export", help="export model.onnx + score.onnx, tokenizer, card")
    x.add_argument("--checkpoint", default="runs/lm/best.pt", help="checkpoint from lm train")
    x.add_argument(
        "--model-dir", default="models/next-word/wikitext2-lstm/2", help="model folder to write"
    )
    x.add_argument(
        "--history",
        default=None,
        help="history.json for curves.png (default: next to the checkpoint)",
    )
    x.add_argument(
        "--topk-positions",
        type=int,
        default=20000,
        help="top-1/top-5 accuracy on N validation positions spread over 50 streams "
        "(model.onnx one token at a time is slow; 0 = all)",
    )
    x.add_argument(
        "--int8-method",
        choices=["weight-only", "dynamic"],
        default="weight-only",
        help="int8 graphs to ship: weight-only (fp32 arithmetic, split-state exact) "
        "or onnxruntime dynamic quantization; the other is measured too",
    )
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    x.add_argument(
        "--quantize",
        choices=["auto", "yes", "no"],
        default="auto",
        help="int8-quantize the shipped graphs: auto = when fp32 exceeds the size cap",
    )
    _data_flags(x)
    x.set_defaults(func=_cmd_export)
