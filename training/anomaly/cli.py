"""``seqserve-train anomaly {train,export,evaluate}``: the NAB-validated stream anomaly detector.

    seqserve-train anomaly train --dry-run   # seconds; under runs/anomaly/nab-gru-dry-run/
    seqserve-train anomaly train             # next free version of nab-gru in models/ (~1-2 min)
    seqserve-train anomaly export --checkpoint runs/anomaly/nab-gru/ckpt.pt   # next free version
    seqserve-train anomaly evaluate --model models/anomaly/nab-gru/1   # NAB scores of a folder

Training reads M4 hourly and ETTh1 from ../shared/data by default (never NAB; synthetic series
only when those files are absent); export writes the ONNX graph, curves and card.json and, when
the NAB data is present, scores the detector with NAB's own scorer through the serving scoring
core (``contract.anomaly``). Models are published through the append-only store
(``contract.store``): a published version is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from training.anomaly.data import NAB_DIR
from training.anomaly.train import DEFAULT_NAME, AnomalyConfig
from training.common.config_cli import (
    HelpFormatter,
    add_config_flags,
    add_publish_flags,
    add_run_flags,
    config_from_args,
    keep_dry_runs_out_of_models,
    prepare_training,
    publish,
    publish_target,
    run_dir,
)

TASK = "anomaly"
HELP = "GRU next-step forecaster + anomaly likelihood (NAB-scored)"
# --dry-run: a few optimiser steps of a tiny net on short crops
DRY_RUN = {"steps": 16, "eval_every": 8, "seq_len": 256, "chunk": 64, "batch_size": 4}


def register(subparsers: Any) -> None:
    desc = __doc__.split("\n\n")[0]
    task = subparsers.add_parser(TASK, help=HELP, description=desc, formatter_class=HelpFormatter)
    commands = task.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser(
        "train",
        help="train the forecaster, then export, score and publish it",
        description="Train the forecaster, then publish it (ONNX, card, NAB scores) as the next "
        "free version of --name under --models-dir (--dry-run: under the run folder).",
        formatter_class=HelpFormatter,
    )
    add_config_flags(t, AnomalyConfig)
    add_run_flags(t)
    t.add_argument(
        "--no-export", action="store_true", help="only train and save the checkpoint in --run-dir"
    )
    add_publish_flags(t, name=DEFAULT_NAME)
    _add_export_flags(t)
    t.set_defaults(func=cmd_train)

    x = commands.add_parser(
        "export",
        help="publish a checkpoint as ONNX + card.json (+ NAB scores)",
        description="Export a checkpoint written by train and publish it as the next free "
        "version of --name under --models-dir (or --out / --version).",
        formatter_class=HelpFormatter,
    )
    x.add_argument("--checkpoint", type=Path, required=True, help="ckpt.pt written by train")
    add_publish_flags(x, name=DEFAULT_NAME)
    _add_export_flags(x)
    x.set_defaults(func=cmd_export)

    e = commands.add_parser(
        "evaluate",
        help="NAB scores of a published model folder",
        description="Score a published model folder on NAB through onnxruntime and the serving "
        "scoring core; nothing is written to the folder.",
        formatter_class=HelpFormatter,
    )
    e.add_argument(
        "--model", type=Path, required=True, help="published folder with model.onnx and card.json"
    )
    e.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB data folder")
    e.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="keep the NAB results layout here (a temporary folder when not set)",
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)


def _add_export_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument(
        "--scoring",
        default=None,
        help="JSON object (or a JSON file) of scoring parameters over the defaults of "
        "contract.anomaly.DEFAULT_SCORING",
    )
    g.add_argument(
        "--experiments", default=None, help="JSON file: list of variants to record in the card"
    )
    g.add_argument("--notes", default=None, help="JSON file: list of findings for the card")
    g.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB data folder")
    g.add_argument(
        "--nab",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score the exported detector on NAB when --nab-dir holds it (default: on, off "
        "with --dry-run)",
    )


def _json_arg(value: str | None) -> Any:
    """A JSON value given inline or as a file (resolved from the current folder)."""
    if not value:
        return None
    path = Path(value)
    return json.loads(path.read_text() if path.is_file() else value)


def _export_options(args: argparse.Namespace) -> dict[str, Any]:
    """The export flags, read before any training so a bad JSON fails in a second."""
    nab = args.nab if args.nab is not None else not getattr(args, "dry_run", False)
    return {
        "scoring": _json_arg(args.scoring),
        "experiments": _json_arg(args.experiments),
        "notes": _json_arg(args.notes),
        "nab_dir": args.nab_dir if nab else None,
    }


def _fail(message: str) -> int:
    print(f"seqserve-train: {message}", file=sys.stderr)
    return 2


def train_config(args: argparse.Namespace) -> AnomalyConfig:
    """The configuration from the flags (--dry-run shrinks it to seconds)."""
    cfg = config_from_args(AnomalyConfig, args)
    if args.dry_run:
        cfg = config_from_args(
            AnomalyConfig, args, **DRY_RUN, hidden=min(cfg.hidden, 8), val_batches=1
        )
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from contract import store
    from training.anomaly.train import missing_default_data, run_training, save_checkpoint

    cfg = train_config(args)
    skipped, absent = missing_default_data(cfg)
    if absent:
        return _fail(f"--data file(s) not found: {', '.join(absent)}")
    if skipped:
        print(f"note: default data not found, skipped: {', '.join(skipped)}")
    if not [p for p in cfg.data if p not in skipped]:
        print("note: training on synthetic series only")
    store.check_name(args.name)
    options = None if args.no_export else _export_options(args)
    dest = prepare_training(args, TASK)  # run folder and destination, before hours of training
    ckpt = run_training(cfg)
    ckpt["dry_run"] = bool(args.dry_run)
    path = save_checkpoint(ckpt, run_dir(args, TASK) / "ckpt.pt")
    print(f"checkpoint: {path}")
    if dest is None or options is None:
        print(f"Next: seqserve-train anomaly export --checkpoint {path}")
        return 0
    return _publish(ckpt, dest, args, options)


def cmd_export(args: argparse.Namespace) -> int:
    from training.anomaly.train import load_checkpoint

    options = _export_options(args)
    if not args.checkpoint.is_file():
        return _fail(f"--checkpoint {args.checkpoint} not found")
    ckpt = load_checkpoint(args.checkpoint)
    keep_dry_runs_out_of_models(args, bool(ckpt.get("dry_run")), args.checkpoint.parent)
    dest = publish_target(args, TASK)
    return _publish(ckpt, dest, args, options)


def _publish(
    ckpt: dict[str, Any], dest: Path, args: argparse.Namespace, options: dict[str, Any]
) -> int:
    """Export into a staging folder beside ``dest`` and publish it atomically."""
    from training.anomaly.export import export_model
    from training.common.try_it import try_it_lines

    with publish(args, TASK, dest) as pub:
        card = export_model(ckpt, pub.staging, name=dest.parent.name, version=dest.name, **options)
    print(card["description"])
    print(pub.message())
    body = {"series": [{"id": "s1", "values": [float(v % 7) for v in range(300)]}]}
    print(try_it_lines(pub.path, TASK, [("/anomaly", body)]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from contract.card import upgrade
    from training.anomaly.data import read_nab
    from training.anomaly.evaluate import evaluate_nab, ort_runner
    from training.common.onnx_utils import ort_session

    folder = Path(args.model)
    if not (folder / "card.json").is_file():
        return _fail(f"--model {folder} has no card.json")
    if not (Path(args.nab_dir) / "windows.json").is_file():
        return _fail(f"--nab-dir {args.nab_dir} holds no NAB data (windows.json)")
    card = upgrade(json.loads((folder / "card.json").read_text()))
    sess = ort_session(folder / card["onnx"]["file"], threads=1)
    nab = read_nab(args.nab_dir)
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate_nab(ort_runner(sess, card), card, nab, args.results_dir or tmp)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        n = res["nab"]
        print(
            f"NAB standard {n['standard']:.2f}  reward_low_FP_rate {n['reward_low_FP_rate']:.2f}"
            f"  reward_low_FN_rate {n['reward_low_FN_rate']:.2f}  "
            f"({res['timing']['points_per_ms']:.0f} points/ms)"
        )
    return 0
