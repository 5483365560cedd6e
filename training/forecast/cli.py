"""``seqserve-train forecast {train,evaluate,export}``.

    python -m training.cli forecast train                       # M4 Hourly, ships the model
    python -m training.cli forecast train --dry-run --out /tmp/f # seconds, for CI
    python -m training.cli forecast evaluate --checkpoint runs/forecast/m4-hourly-gru/ckpt.pt
    python -m training.cli forecast export --checkpoint runs/forecast/m4-hourly-gru/ckpt.pt

A user's own hourly CSV (timestamp column + value columns):

    python -m training.cli forecast train --data my.csv --time-col date --targets OT \
        --out models/forecast/my-gru/1

The served name and version are the folder's (``models/forecast/<name>/<version>/``); without
``--out`` a user's file goes to ``models/forecast/<file name>-<cell>/1``, never over the
shipped M4 model. Train and export end by printing the lines that serve and query the model.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from training.forecast.train import REPO_ROOT, ForecastConfig

DEFAULTS = ForecastConfig()


def _default_out(name: str, version: str) -> Path:
    return REPO_ROOT / "models" / "forecast" / name / version


def _default_run_dir(name: str) -> Path:
    return REPO_ROOT / "runs" / "forecast" / name


def _add_data_args(p: argparse.ArgumentParser, required_defaults: bool = True) -> None:
    d = DEFAULTS if required_defaults else None
    p.add_argument(
        "--data",
        default=d.data if d else None,
        help="CSV: M4 wide format (V1=id, then values) or a long CSV with a "
        "timestamp column and value columns (default: M4 Hourly-train.csv in "
        "../shared/data)",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        default=d.fmt if d else None,
        choices=["auto", "m4", "long"],
        help="input layout; auto = m4 when the first header cell is V1",
    )
    p.add_argument(
        "--time-col", default=None, help="long CSV: timestamp column (default: first column)"
    )
    p.add_argument(
        "--targets",
        nargs="+",
        default=None,
        help="long CSV: value column(s), each one series (default: all but time)",
    )
    p.add_argument(
        "--holdout",
        type=int,
        default=d.holdout if d else None,
        help="last points of every series held out for validation",
    )
    p.add_argument(
        "--val-windows",
        type=int,
        default=d.val_windows if d else None,
        help="hold out this many consecutive --holdout stretches per series and "
        "score each (useful for single-series data; default 1)",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forecast",
        help="global RNN/LSTM/GRU forecaster (hourly)",
        description=__doc__.split("\n\n")[0],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train an ensemble, then evaluate and export it")
    _add_data_args(t)
    t.add_argument("--freq", default=DEFAULTS.freq, help="frequency tag written to the card")
    t.add_argument(
        "--period",
        type=int,
        default=DEFAULTS.period,
        help="seasonal period in steps (24 for hourly data); the net reads one period per RNN step",
    )
    t.add_argument(
        "--cell", default=DEFAULTS.cell, choices=["rnn", "lstm", "gru"], help="recurrent cell"
    )
    t.add_argument(
        "--window",
        type=int,
        default=DEFAULTS.window,
        help="input length in steps (multiple of --period)",
    )
    t.add_argument(
        "--horizon",
        type=int,
        default=DEFAULTS.horizon,
        help="max forecast horizon output by the graph (>= --holdout)",
    )
    t.add_argument("--hidden", type=int, default=DEFAULTS.hidden, help="hidden units")
    t.add_argument("--layers", type=int, default=DEFAULTS.layers, help="recurrent layers")
    t.add_argument(
        "--dropout", type=float, default=DEFAULTS.dropout, help="dropout between recurrent layers"
    )
    t.add_argument(
        "--linear-skip",
        action="store_true",
        help="add a direct linear window -> median correction path",
    )
    t.add_argument(
        "--recent",
        type=int,
        default=DEFAULTS.recent,
        help="if > 0, draw training targets only from the last RECENT points of "
        "each series (0 = anywhere in the training part)",
    )
    t.add_argument(
        "--align",
        type=int,
        default=DEFAULTS.align,
        help="if > 1, training windows only end a multiple of ALIGN steps before the end of a "
        "series (24 = the same position in the day as the forecast origin; 0 = any)",
    )
    t.add_argument(
        "--members",
        type=int,
        default=DEFAULTS.members,
        help="ensemble size (seeds seed, seed+1, ...)",
    )
    t.add_argument("--seed", type=int, default=DEFAULTS.seed, help="first seed")
    t.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help="epochs per member")
    t.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="batch size")
    t.add_argument("--lr", type=float, default=DEFAULTS.lr, help="initial learning rate (Adam)")
    t.add_argument(
        "--lr-final",
        type=float,
        default=DEFAULTS.lr_final,
        help="learning rate at the end of the cosine decay",
    )
    t.add_argument(
        "--windows-per-epoch",
        type=int,
        default=DEFAULTS.windows_per_epoch,
        help="random training windows drawn per epoch",
    )
    t.add_argument("--clip", type=float, default=DEFAULTS.clip, help="gradient-norm clip")
    t.add_argument(
        "--loss-weight",
        default=DEFAULTS.loss_weight,
        choices=["none", "mase"],
        help="none: the log-space pinball loss as is (a relative error, like sMAPE); mase: "
        "weight each window by level / its seasonal-naive MAE, as MASE scores it",
    )
    t.add_argument(
        "--mase-members",
        type=int,
        default=DEFAULTS.mase_members,
        help="with --loss-weight none: train the last N of the --members with the mase "
        "weighting instead (their seeds restart at --seed); mixing both kinds helps MASE",
    )
    t.add_argument(
        "--weight-cap",
        type=float,
        default=DEFAULTS.weight_cap,
        help="--loss-weight mase: cap of a window's weight, in medians of its batch",
    )
    t.add_argument("--threads", type=int, default=DEFAULTS.threads, help="torch CPU threads")
    t.add_argument(
        "--calib-windows",
        type=int,
        default=DEFAULTS.calib_windows,
        help="conformal calibration windows (of --holdout points) per series, just before "
        "validation; raised on few-series data to reach ~400 windows in all",
    )
    t.add_argument(
        "--calibration",
        default=DEFAULTS.calibration,
        choices=["held-out", "in-sample"],
        help="held-out (default): the calibration windows are cut out of member training, so "
        "the intervals are calibrated on residuals the members never fitted; in-sample: the "
        "members also train on them (version 1's scheme; intervals come out too narrow)",
    )
    t.add_argument(
        "--experiments",
        default=None,
        help="JSON file with a list of earlier variants (config + validation figures) to "
        "record in the card's 'experiments' section",
    )
    t.add_argument(
        "--name",
        default=None,
        help=f"model name for the default --out folder (default: {DEFAULTS.name} on the M4 "
        "default data, else the data file's name and the cell, e.g. my-data-gru)",
    )
    t.add_argument("--version", default=DEFAULTS.version, help="model version (folder)")
    t.add_argument(
        "--out", default=None, help="model folder (default: models/forecast/<name>/<version>)"
    )
    t.add_argument(
        "--run-dir",
        default=None,
        help="where the checkpoint and log go (default: runs/forecast/<name>)",
    )
    t.add_argument("--no-export", action="store_true", help="only train and save a checkpoint")
    t.add_argument(
        "--int8",
        action="store_true",
        help="also try dynamic int8 quantization and record it in the card",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny settings (1 epoch, 2 members, few windows) to smoke-test the "
        "whole pipeline in seconds",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics of a checkpoint on the held-out windows")
    e.add_argument("--checkpoint", required=True, help="ckpt.pt written by train")
    _add_data_args(e, required_defaults=False)
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="export a checkpoint to ONNX + card.json")
    x.add_argument("--checkpoint", required=True, help="ckpt.pt written by train")
    _add_data_args(x, required_defaults=False)
    x.add_argument(
        "--out", default=None, help="model folder (default: models/forecast/<name>/<version>)"
    )
    x.add_argument(
        "--int8",
        action="store_true",
        help="also try dynamic int8 quantization and record it in the card",
    )
    x.add_argument(
        "--experiments",
        default=None,
        help="JSON list of earlier variants to record in the card's 'experiments' section",
    )
    x.set_defaults(func=cmd_export)


def default_name(data: str, cell: str) -> str:
    """``m4-hourly-gru`` on the default data; a user's file gets its own name."""
    if Path(data).resolve() == Path(DEFAULTS.data).resolve():
        return DEFAULTS.name if cell == DEFAULTS.cell else f"m4-hourly-{cell}"
    stem = re.sub(r"[^a-z0-9]+", "-", Path(data).stem.lower()).strip("-") or "forecast"
    return f"{stem}-{cell}"


def config_from_args(args: argparse.Namespace) -> ForecastConfig:
    names = {f.name for f in fields(ForecastConfig)}
    cfg = ForecastConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    if getattr(args, "name", None) is None:
        cfg.name = default_name(cfg.data, cfg.cell)
    if args.dry_run:
        cfg.epochs, cfg.members = 1, min(cfg.members, 2)
        cfg.windows_per_epoch = cfg.batch_size = 32
        cfg.hidden, cfg.calib_windows = min(cfg.hidden, 8), 1
    return cfg


def _override_data(ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    for key in ("data", "fmt", "time_col", "targets", "holdout", "val_windows"):
        if getattr(args, key, None) is not None:
            ckpt["config"][key] = getattr(args, key)


def cmd_train(args: argparse.Namespace) -> int:
    from training.forecast.export import export_model
    from training.forecast.train import (
        format_metrics,
        prepare,
        run_training,
        save_checkpoint,
    )

    cfg = config_from_args(args)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(cfg.name)
    ckpt = run_training(cfg)
    path = save_checkpoint(ckpt, run_dir / "ckpt.pt")
    print(f"checkpoint: {path}")
    if args.no_export:
        print(
            "Next, export it for serving:\n"
            f"  seqserve-train forecast export --checkpoint {path} "
            f"--out models/forecast/{cfg.name}/{cfg.version}"
        )
        return 0
    data = prepare(cfg)
    out = Path(args.out) if args.out else _default_out(cfg.name, cfg.version)
    card = export_model(ckpt, data, out, int8=args.int8, experiments=_experiments(args))
    m = card["metrics"]
    print(
        format_metrics(
            {
                **m,
                "interval_coverage": m["coverage"],
                "quantile_coverage_10_90": m["coverage"]["raw_quantiles_10_90"],
            }
        )
    )
    _print_try_it(card, out, cfg, data)
    return 0


def _print_try_it(card: dict[str, Any], out: Path, cfg: ForecastConfig, data: Any) -> None:
    from training.common.try_it import try_it_lines
    from training.forecast.export import try_it_request

    print(f"\n{card['description']}")
    about = f"window {cfg.window}, horizon {cfg.horizon}"
    request = ("/forecast", try_it_request(cfg, data["series"]))
    print(try_it_lines(out, "forecast", [request], about))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.forecast.train import evaluate_all, format_metrics, load_checkpoint, prepare

    ckpt = load_checkpoint(args.checkpoint)
    _override_data(ckpt, args)
    res = evaluate_all(ckpt, prepare(ForecastConfig(**ckpt["config"])))
    if args.json:
        print(json.dumps(res["metrics"], indent=2))
    else:
        print(format_metrics(res["metrics"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from training.forecast.export import export_model
    from training.forecast.train import load_checkpoint, prepare

    ckpt = load_checkpoint(args.checkpoint)
    _override_data(ckpt, args)
    cfg = ForecastConfig(**ckpt["config"])
    data = prepare(cfg)
    out = Path(args.out) if args.out else _default_out(cfg.name, cfg.version)
    card = export_model(ckpt, data, out, int8=args.int8, experiments=_experiments(args))
    _print_try_it(card, out, cfg, data)
    return 0


def _experiments(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    path = getattr(args, "experiments", None)
    if not path:
        return None
    runs = json.loads(Path(path).read_text())
    if not isinstance(runs, list):
        raise SystemExit(f"{path}: expected a JSON list of variants")
    return runs
