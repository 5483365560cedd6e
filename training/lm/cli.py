"""``seqserve-train lm {train,evaluate,export}``: the word-level language model's commands.

    seqserve-train lm train --max-minutes 100 --anneal-after-minutes 55     # WikiText-2
    seqserve-train lm evaluate --checkpoint runs/next-word/wikitext2-lstm/best.pt
    seqserve-train lm export --checkpoint runs/next-word/wikitext2-lstm/best.pt --version 7
    seqserve-train lm cache --model models/next-word/wikitext2-lstm/2     # + continuous cache

Your own text (plain text, one paragraph per line; a second file for validation):

    seqserve-train lm train --train my_train.txt --dev my_valid.txt --name my-lm

``train`` keeps its checkpoints in the run folder (``--run-dir``, default
``runs/next-word/<name>``) and then publishes the model (``--no-export``: only train);
``export`` publishes a checkpoint again, reading the files it was trained on unless told
otherwise. Both publish the next free version of the name under ``--models-dir`` (an existing
version only with ``--force``, which moves it aside), and check that before any work; a dry
run's model goes under its run folder. Paths are relative to the current folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from contract import store
from training.common.config_cli import (
    HelpFormatter,
    add_config_flags,
    add_overwrite_run_flag,
    add_publish_flags,
    config_from_args,
    keep_dry_runs_out_of_models,
    prepare_training,
    publish,
    publish_target,
    run_dir,
)
from training.lm.evaluate import EvalConfig
from training.lm.export import checkpoint_name, default_name
from training.lm.export_config import ExportConfig
from training.lm.model import LMConfig
from training.lm.train import DRY_RUN_LINES, DRY_RUN_SIZE, TrainConfig

TASK = "next-word"  # the served task: models/next-word/<name>/<version>/, runs/next-word/<name>/
# export settings that train takes from its own flags (files, threads) or its run (history)
EXPORT_ONLY = ("train_file", "valid_file", "max_valid_lines", "threads", "history")
TRAIN_NAME_HELP = (
    "published model name, also naming the run folder (default: the training "
    "file's name and the cell, e.g. wikitext2-lstm for WikiText-2, lighthouse-lstm for "
    "lighthouse_train.txt)"
)
EXPORT_NAME_HELP = "published model name (default: the name the checkpoint was trained for)"


def _load(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's plain data; a missing file is a one-line error, not a traceback."""
    import torch

    if not checkpoint.is_file():
        raise store.StoreError(f"no checkpoint at {checkpoint} (train one with: lm train)")
    return dict(torch.load(checkpoint, map_location="cpu", weights_only=True))


def _train_name(args: argparse.Namespace, train_file: str) -> str:
    """--name, else the resumed checkpoint's name, else one derived from the data and cell."""
    if args.name:
        return str(args.name)
    if args.resume:
        return checkpoint_name(_load(Path(args.resume)))
    return default_name(train_file, args.cell)


def _cmd_train(args: argparse.Namespace) -> int:
    from training.lm.train import train

    args.name = store.check_name(_train_name(args, args.train_file))
    if args.resume:  # continuing a run writes over its checkpoints by design
        args.overwrite_run = True
    dest = prepare_training(args, TASK)  # run folder and destination, before hours of training
    model_cfg = config_from_args(LMConfig, args)
    cfg = config_from_args(TrainConfig, args, name=args.name)
    result = train(model_cfg, cfg, run_dir(args, TASK))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    checkpoint = Path(result["checkpoint"])
    print(f"\nTrained {checkpoint} (best valid perplexity {result['best_valid_ppl']:.1f}).")
    if dest is None:
        print(
            "Next, export it for serving (the next free version of "
            f"{args.name}):\n  seqserve-train lm export --checkpoint {shlex.quote(str(checkpoint))}"
        )
        return 0
    export_cfg = config_from_args(ExportConfig, args, threads=cfg.threads)
    _publish(checkpoint, dest, export_cfg, args)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.lm.evaluate import evaluate_checkpoint

    checkpoint = Path(args.checkpoint)
    _load(checkpoint)
    result = evaluate_checkpoint(checkpoint, config_from_args(EvalConfig, args))
    print(json.dumps(result, indent=2))
    return 0


def _resolve_export_target(args: argparse.Namespace, ckpt: dict[str, Any]) -> Path:
    """Name, run folder and destination of an export, checked before any work.

    A dry run's checkpoint goes under its run folder unless a models folder is named
    explicitly (``--out`` or ``--models-dir``): a smoke-test model never lands in ``models/``
    by default."""
    checkpoint = Path(args.checkpoint)
    args.name = args.name or checkpoint_name(ckpt)
    if args.run_dir is None:
        args.run_dir = checkpoint.parent
    from_dry_run = bool(ckpt["train_config"].get("dry_run"))
    keep_dry_runs_out_of_models(args, from_dry_run, Path(args.run_dir))
    return publish_target(args, TASK)


def _cmd_export(args: argparse.Namespace) -> int:
    checkpoint = Path(args.checkpoint)
    dest = _resolve_export_target(args, _load(checkpoint))
    _publish(checkpoint, dest, config_from_args(ExportConfig, args), args)
    return 0


def _publish(checkpoint: Path, dest: Path, cfg: ExportConfig, args: argparse.Namespace) -> None:
    """Export ``checkpoint`` through the store to ``dest`` and print how to serve it."""
    import torch

    from training.common.try_it import try_it_lines
    from training.lm.card_sections import try_it_requests
    from training.lm.export import data_files, export_model

    with publish(args, TASK, dest) as pub:
        card = export_model(checkpoint, pub.staging, cfg, dest.parent.name, dest.name)
    print(json.dumps({"model_dir": str(pub.path), "metrics": card.get("metrics")}, indent=2))
    print(f"\n{card['description']}\n{pub.message()}")
    about = f"vocabulary {card['vocab_size']:,}, valid perplexity "
    about += f"{card['metrics']['valid_perplexity']:.1f}"
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    train_file, _ = data_files(cfg, ckpt)
    print(try_it_lines(pub.path, TASK, try_it_requests(train_file), about))


def _cmd_cache(args: argparse.Namespace) -> int:
    """Publish a model again with a continuous cache tuned on validation text (no training)."""
    from training.lm.cache import publish_with_cache

    src = Path(args.model)
    if not (src / "card.json").is_file():
        raise SystemExit(f"{src}: no card.json (give a published next-word model folder)")
    if not Path(args.dev).is_file():
        raise SystemExit(f"{args.dev}: no such file (--dev)")
    args.name = args.name or src.parent.name
    dest = publish_target(args, TASK)
    with publish(args, TASK, dest) as pub:
        card = publish_with_cache(
            src, Path(args.dev), pub.staging, args.text_tokens, args.max_dev_lines
        )
    print(json.dumps(card["metrics"]["cache"], indent=2))
    print(pub.message())
    return 0


def _checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", type=Path, required=True, help="best.pt from lm train (in its run folder)"
    )


def register(subparsers: Any) -> None:
    lm = subparsers.add_parser(
        "lm",
        help="word-level language model (WikiText-2 or your own text)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    sub = lm.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train with truncated BPTT (best.pt in the run folder), then publish the model",
        formatter_class=HelpFormatter,
    )
    add_config_flags(t, TrainConfig)
    add_config_flags(t, LMConfig)
    add_config_flags(t, ExportConfig, exclude=EXPORT_ONLY)
    add_publish_flags(t, name=None, name_help=TRAIN_NAME_HELP)
    t.add_argument(
        "--no-export",
        action="store_true",
        help="only train (checkpoints in the run folder); publish later with lm export",
    )
    t.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where best.pt, history.json and curves.png go (default: runs/next-word/<name>, "
        "or runs/next-word/<name>-dry-run with --dry-run)",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help=f"one epoch on the first {DRY_RUN_LINES[0]} training and {DRY_RUN_LINES[1]} "
        f"validation lines, embedding and hidden sizes at most {DRY_RUN_SIZE} (seconds), for "
        "smoke tests; the model is published under the run folder, never under --models-dir",
    )
    add_overwrite_run_flag(t)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="validation perplexity and top-k of a checkpoint (PyTorch)",
        formatter_class=HelpFormatter,
    )
    _checkpoint_flag(e)
    add_config_flags(e, EvalConfig)
    e.set_defaults(func=_cmd_evaluate)

    x = sub.add_parser(
        "export",
        help="publish model.onnx + score.onnx, tokenizer and card as a new model version",
        formatter_class=HelpFormatter,
    )
    _checkpoint_flag(x)
    add_config_flags(x, ExportConfig)
    add_publish_flags(x, name=None, name_help=EXPORT_NAME_HELP)
    x.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="with --dry-run the model is published under RUN_DIR/models (default: the "
        "checkpoint's folder)",
    )
    x.add_argument(
        "--dry-run",
        action="store_true",
        help="publish under the run folder, never under --models-dir (automatic for a dry "
        "run's checkpoint unless --out or --models-dir is given)",
    )
    x.set_defaults(func=_cmd_export)

    c = sub.add_parser(
        "cache",
        help="publish a model again with a continuous cache (θ, λ, window tuned on validation)",
        formatter_class=HelpFormatter,
    )
    c.add_argument("--model", type=Path, required=True, help="published next-word model folder")
    c.add_argument(
        "--dev",
        type=Path,
        default=Path(__file__).resolve().parents[2].parent / "shared/data/wikitext2/valid.txt",
        help="validation text, one paragraph a line (first half tunes, second half measures)",
    )
    c.add_argument(
        "--text-tokens",
        type=int,
        default=4500,
        help="lines are grouped into texts of at most this many tokens, each with its own cache, "
        "as requests to the API would be",
    )
    c.add_argument("--max-dev-lines", type=int, default=None, help="only the first N lines")
    add_publish_flags(c, name=None, name_help="published name (default: the model's own)")
    c.set_defaults(func=_cmd_cache)
