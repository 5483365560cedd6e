"""``seqserve-train forecast {train,evaluate,export}``.

    seqserve-train forecast train              # M4 Hourly -> the next free m4-hourly-gru:N
    seqserve-train forecast train --dry-run    # seconds; published under the run folder only
    seqserve-train forecast evaluate --checkpoint runs/forecast/m4-hourly-gru/ckpt.pt
    seqserve-train forecast export --checkpoint runs/forecast/m4-hourly-gru/ckpt.pt

A user's own hourly CSV (timestamp column + value columns):

    seqserve-train forecast train --data my.csv --time-col date --targets OT --name my-gru

Every model folder is published through the append-only store (``contract.store``): without
``--out``/``--version`` the model becomes the next free version of ``--name`` under
``--models-dir`` (a user's file is named ``<file name>-<cell>`` unless ``--name`` says
otherwise), a published version is never written over (``--force`` moves it aside), and
``--dry-run`` publishes under the run folder. The destination is checked before training starts.
Train and export end by printing the lines that serve and query the model.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

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
    read_json_file,
    run_dir,
    unset_flags,
)
from training.forecast.train import DEFAULT_DATA, DEFAULT_NAME, ForecastConfig

TASK = "forecast"
# the flags that say which data a checkpoint is evaluated or exported on
DATA_FIELDS = ("data", "fmt", "time_col", "targets", "holdout", "val_windows")
TRAIN_ONLY = tuple(f for f in ForecastConfig.__dataclass_fields__ if f not in DATA_FIELDS)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--int8",
        action="store_true",
        help="also measure dynamic int8 quantization and record it in the card",
    )
    p.add_argument(
        "--experiments",
        type=Path,
        default=None,
        help="JSON file with a list of earlier variants (config + validation figures) to "
        "record in the card's 'experiments' section",
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        TASK,
        help="global RNN/LSTM/GRU forecaster (hourly)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train an ensemble, then evaluate and publish it",
        description="Train an ensemble, evaluate it on held-out windows and publish it.",
        formatter_class=HelpFormatter,
    )
    add_config_flags(t, ForecastConfig)
    _add_output_flags(t)
    t.add_argument(
        "--no-export", action="store_true", help="only train and save a checkpoint in --run-dir"
    )
    add_run_flags(t)
    add_publish_flags(t, name=DEFAULT_NAME)
    unset_flags(t, ("name",), f"{DEFAULT_NAME} on the M4 file, else <data file name>-<cell>")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="metrics of a checkpoint on the held-out windows",
        formatter_class=HelpFormatter,
    )
    e.add_argument("--checkpoint", type=Path, required=True, help="ckpt.pt written by train")
    add_config_flags(e, ForecastConfig, exclude=TRAIN_ONLY)
    unset_flags(e, DATA_FIELDS, "the checkpoint's")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser(
        "export",
        help="publish a checkpoint as ONNX + card.json",
        formatter_class=HelpFormatter,
    )
    x.add_argument("--checkpoint", type=Path, required=True, help="ckpt.pt written by train")
    add_config_flags(x, ForecastConfig, exclude=TRAIN_ONLY)
    unset_flags(x, DATA_FIELDS, "the checkpoint's")
    _add_output_flags(x)
    x.add_argument(
        "--dry-run",
        action="store_true",
        help="publish under the checkpoint's folder (<checkpoint folder>/models/...), never "
        "under --models-dir",
    )
    add_publish_flags(x, name=DEFAULT_NAME)
    unset_flags(x, ("name",), "the checkpoint's")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser(
        "coverage",
        help="interval coverage and accuracy of a published folder on M4 validation and ETTh1",
        description="Interval coverage (as served, and with the card's global table only), "
        "sMAPE and MASE of a published forecaster, computed by serving's own code "
        "(contract.forecaster) on M4 validation and on ETTh1 rolling origins.",
        formatter_class=HelpFormatter,
    )
    c.add_argument("--model", type=Path, required=True, help="models/forecast/<name>/<version>")
    c.add_argument("--m4", type=Path, default=None, help="M4 Hourly-train.csv (default: shared)")
    c.add_argument("--etth1", type=Path, default=None, help="ETTh1.csv (default: shared)")
    c.add_argument("--every", type=int, default=168, help="ETTh1: hours between origins")
    c.set_defaults(func=cmd_coverage)


def default_name(data: str | Path, cell: str) -> str:
    """``m4-hourly-gru`` on the default data; a user's file gets its own name."""
    if Path(data).resolve() == DEFAULT_DATA.resolve():
        return DEFAULT_NAME if cell == "gru" else f"m4-hourly-{cell}"
    stem = re.sub(r"[^a-z0-9]+", "-", Path(data).stem.lower()).strip("-") or "forecast"
    return f"{stem}-{cell}"


def train_config(args: argparse.Namespace, version: str = "1") -> ForecastConfig:
    """The run's configuration; a dry run shrinks it to seconds. The data path is stored
    absolute so the checkpoint exports from any folder."""
    data = str(Path(args.data).resolve())
    cfg = config_from_args(ForecastConfig, args, name=args.name, version=version, data=data)
    if args.dry_run:
        cfg.epochs, cfg.members = 1, min(cfg.members, 2)
        cfg.windows_per_epoch = cfg.batch_size = 32
        cfg.hidden, cfg.calib_windows = min(cfg.hidden, 8), 1
    return cfg


def _override_data(ckpt: dict[str, Any], args: argparse.Namespace) -> None:
    for key in DATA_FIELDS:
        if getattr(args, key, None) is not None:
            ckpt["config"][key] = getattr(args, key)


def _publish(
    ckpt: dict[str, Any], data: dict[str, Any], dest: Path, args: argparse.Namespace
) -> tuple[dict[str, Any], Path]:
    """Export into a staging folder and publish it as ``dest`` (card named after ``dest``)."""
    from training.forecast.export import export_model

    ckpt["config"].update(name=dest.parent.name, version=dest.name)
    experiments = _experiments(args)
    with publish(args, TASK, dest) as pub:
        card = export_model(ckpt, data, pub.staging, int8=args.int8, experiments=experiments)
    print(pub.message())
    return card, pub.path


def cmd_train(args: argparse.Namespace) -> int:
    from training.forecast.train import format_metrics, prepare, run_training, save_checkpoint

    if not Path(args.data).is_file():
        if Path(args.data).resolve() == DEFAULT_DATA.resolve():
            raise SystemExit(
                f"seqserve-train: the default data, M4 Hourly, is not at {args.data}: "
                "pass --data FILE.csv (e.g. examples/data/shop_hourly.csv)"
            )
        raise SystemExit(f"seqserve-train: no data file at {args.data}")
    args.name = args.name or default_name(args.data, args.cell)
    dest = prepare_training(args, TASK)  # run folder and destination, before training
    cfg = train_config(args, dest.name if dest else "1")
    _experiments(args)  # a bad --experiments file fails now too, not after training
    ckpt = run_training(cfg)
    ckpt["dry_run"] = bool(args.dry_run)
    path = save_checkpoint(ckpt, run_dir(args, TASK) / "ckpt.pt")
    print(f"checkpoint: {path}")
    if dest is None:
        print("Next, publish it for serving:")
        print(f"  seqserve-train forecast export --checkpoint {path}")
        return 0
    data = prepare(cfg)
    card, folder = _publish(ckpt, data, dest, args)
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
    _print_try_it(card, folder, ForecastConfig(**ckpt["config"]), data)
    return 0


def _print_try_it(card: dict[str, Any], out: Path, cfg: ForecastConfig, data: Any) -> None:
    from training.common.try_it import try_it_lines
    from training.forecast.export import try_it_request

    print(f"\n{card['description']}")
    about = f"window {cfg.window}, horizon {cfg.horizon}"
    request = ("/forecast", try_it_request(cfg, data["series"]))
    print(try_it_lines(out, TASK, [request], about))


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
    from training.forecast.train import load_checkpoint, prepare

    ckpt = load_checkpoint(args.checkpoint)
    _override_data(ckpt, args)
    args.name = args.name or ckpt["config"].get("name") or DEFAULT_NAME
    args.run_dir = Path(args.checkpoint).parent  # where --dry-run publishes
    keep_dry_runs_out_of_models(args, bool(ckpt.get("dry_run")), args.run_dir)
    dest = publish_target(args, TASK)
    cfg = ForecastConfig(**ckpt["config"])
    data = prepare(cfg)
    card, folder = _publish(ckpt, data, dest, args)
    _print_try_it(card, folder, ForecastConfig(**ckpt["config"]), data)
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    from contract.card import CardError, ForecastCard, read
    from training.forecast import coverage

    try:
        card = read(args.model, TASK)
    except (CardError, OSError) as exc:
        raise SystemExit(f"seqserve-train: {args.model}: {exc}") from None
    assert isinstance(card, ForecastCard)
    report = coverage.coverage_report(
        args.model, card, args.m4 or coverage.M4_FILE, args.etth1 or coverage.ETTH1_FILE, args.every
    )
    print(json.dumps(report, indent=1))
    return 0


def _experiments(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    return read_json_file(getattr(args, "experiments", None), "--experiments", expect=list)
