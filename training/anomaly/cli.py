"""``seqserve-train anomaly {train,export,evaluate}``: the NAB-validated stream anomaly detector.

    seqserve-train anomaly train --out models/anomaly/nab-gru/1       # train + export + NAB
    seqserve-train anomaly export --checkpoint runs/anomaly/nab-gru/ckpt.pt --out DIR
    seqserve-train anomaly evaluate --model models/anomaly/nab-gru/1  # NAB scores of a folder

Training reads M4 hourly and ETTh1 from ../shared/data (never NAB); export writes the ONNX
graph, curves and card.json and, when ../shared/data/nab is present, scores the detector with
NAB's own scorer through the serving scoring core (``app.services.anomaly_scoring``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from training.anomaly.train import REPO_ROOT, AnomalyConfig

DEFAULTS = AnomalyConfig()


# (flag, type, help) of the training options; defaults come from AnomalyConfig
TRAIN_OPTIONS: tuple[tuple[str, Any, str], ...] = (
    ("--m4", str, "M4 Hourly-train.csv ('' to skip)"),
    ("--etth1", str, "ETTh1.csv ('' to skip)"),
    ("--synthetic-frac", float, "share of training crops drawn from the synthetic generator"),
    ("--hidden", int, "hidden units"),
    ("--layers", int, "recurrent layers"),
    ("--seq-len", int, "crop length"),
    ("--chunk", int, "BPTT chunk length (state carried between chunks)"),
    ("--batch-size", int, "crops per batch"),
    ("--steps", int, "optimiser steps (one per chunk)"),
    ("--eval-every", int, "steps between validations"),
    ("--patience", int, "early-stopping patience (validations)"),
    ("--lr", float, "initial learning rate (cosine decay to lr_final)"),
    ("--clip", float, "gradient-norm clip"),
    ("--seed", int, "seed"),
    ("--threads", int, "torch CPU threads"),
    ("--name", str, "model name"),
    ("--version", str, "model version"),
)


HELP = "GRU next-step forecaster + anomaly likelihood (NAB-scored)"


def register(subparsers: Any) -> None:
    desc = __doc__.split("\n\n")[0]
    task = subparsers.add_parser("anomaly", help=HELP, description=desc)
    commands = task.add_subparsers(dest="command", required=True, metavar="COMMAND")
    t = commands.add_parser("train", help="train the forecaster, then export and score it")
    for flag, kind, text in TRAIN_OPTIONS:
        dest = flag[2:].replace("-", "_")
        t.add_argument(flag, type=kind, default=getattr(DEFAULTS, dest), help=text)
    for flag, text in (
        ("--upsample", "interpolation factors of the finer-rate copies of every series"),
        ("--lags", "extra lagged inputs u[t+1-L] (periods in steps; none by default)"),
    ):
        t.add_argument(flag, type=int, nargs="*", default=getattr(DEFAULTS, flag[2:]), help=text)
    t.add_argument(
        "--synthetic-profile",
        action="store_true",
        help="add the repeated-daily-profile family to the synthetic series",
    )
    t.add_argument("--cell", default=DEFAULTS.cell, choices=["gru", "lstm"], help="cell")
    t.add_argument("--dist", default=DEFAULTS.dist, choices=["gaussian", "laplace"])
    t.add_argument("--out", default=None, help="model folder (default models/anomaly/NAME/V)")
    t.add_argument("--run-dir", default=None, help="checkpoint folder (default runs/anomaly/NAME)")
    _add_scoring_args(t)
    t.add_argument("--no-export", action="store_true", help="only train and save a checkpoint")
    t.add_argument("--dry-run", action="store_true", help="tiny settings to smoke-test in seconds")
    t.set_defaults(func=cmd_train)

    x = commands.add_parser("export", help="export a checkpoint to ONNX + card.json (+ NAB scores)")
    x.add_argument("--checkpoint", required=True, help="ckpt.pt written by train")
    x.add_argument("--out", required=True, help="model folder")
    _add_scoring_args(x)
    x.set_defaults(func=cmd_export)

    e = commands.add_parser("evaluate", help="NAB scores of an exported model folder")
    e.add_argument("--model", required=True, help="folder with model.onnx and card.json")
    e.add_argument("--nab-dir", default=None, help="NAB data folder (default ../shared/data/nab)")
    e.add_argument("--results-dir", default=None, help="keep the NAB results layout here")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=cmd_evaluate)


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scoring",
        default=None,
        help="JSON object (or a JSON file) of scoring parameters over the defaults of "
        "app.services.anomaly_scoring.DEFAULT_SCORING",
    )
    p.add_argument(
        "--experiments", default=None, help="JSON file: list of variants to record in the card"
    )
    p.add_argument("--nab-dir", default=None, help="NAB data folder (default ../shared/data/nab)")
    p.add_argument("--notes", default=None, help="JSON file: list of findings for the card")


def _json_arg(value: str | None) -> Any:
    if not value:
        return None
    path = Path(value)
    return json.loads(path.read_text() if path.exists() else value)


def config_from_args(args: argparse.Namespace) -> AnomalyConfig:
    names = {f.name for f in fields(AnomalyConfig)}
    cfg = AnomalyConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    cfg.m4 = cfg.m4 or None
    cfg.etth1 = cfg.etth1 or None
    if args.dry_run:
        cfg.steps, cfg.eval_every, cfg.hidden = 16, 8, min(cfg.hidden, 8)
        cfg.seq_len, cfg.chunk, cfg.batch_size, cfg.val_batches = 256, 64, 4, 1
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from training.anomaly.train import run_training, save_checkpoint

    cfg = config_from_args(args)
    run_dir = Path(args.run_dir) if args.run_dir else REPO_ROOT / "runs" / "anomaly" / cfg.name
    ckpt = run_training(cfg)
    path = save_checkpoint(ckpt, run_dir / "ckpt.pt")
    print(f"checkpoint: {path}")
    if args.no_export:
        print(f"Next: seqserve-train anomaly export --checkpoint {path} --out DIR")
        return 0
    out = Path(args.out) if args.out else REPO_ROOT / "models" / "anomaly" / cfg.name / cfg.version
    return _export(ckpt, out, args)


def cmd_export(args: argparse.Namespace) -> int:
    from training.anomaly.train import load_checkpoint

    return _export(load_checkpoint(args.checkpoint), Path(args.out), args)


def _export(ckpt: dict[str, Any], out: Path, args: argparse.Namespace) -> int:
    from training.anomaly.export import export_model
    from training.common.try_it import try_it_lines

    card = export_model(
        ckpt,
        out,
        scoring=_json_arg(args.scoring),
        experiments=_json_arg(args.experiments),
        nab_dir=args.nab_dir,
        notes=_json_arg(args.notes),
    )
    print(card["description"])
    body = {"series": [{"id": "s1", "values": [float(v % 7) for v in range(300)]}]}
    print(try_it_lines(out, "anomaly", [("/anomaly", body)]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from training.anomaly.data import NAB_DIR, read_nab
    from training.anomaly.evaluate import evaluate_nab, ort_runner
    from training.common.onnx_utils import ort_session

    folder = Path(args.model)
    card = json.loads((folder / "card.json").read_text())
    sess = ort_session(folder / card["onnx"]["file"], threads=1)
    nab = read_nab(args.nab_dir or NAB_DIR)
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
