"""``seqserve-train anomaly {train,export,evaluate}``: the NAB-validated stream anomaly detector.

    seqserve-train anomaly train --dry-run   # seconds; under runs/anomaly/nab-gru-dry-run/
    seqserve-train anomaly train             # next free version of nab-gru in models/ (~1-2 min)
    seqserve-train anomaly export --checkpoint runs/anomaly/nab-gru/ckpt.pt   # next free version
    seqserve-train anomaly evaluate --model models/anomaly/nab-gru/1   # NAB scores of a folder
    seqserve-train anomaly crossval --model models/anomaly/nab-gru/1 --grid v1   # CV figures
    seqserve-train anomaly retune --model models/anomaly/nab-gru/1 --grid v3     # new version

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

    v = commands.add_parser(
        "crossval",
        help="cross-validated NAB scores of a knob grid (chosen on some series, scored on others)",
        description="Choose the scoring knobs of a published folder's detector on part of the "
        "NAB series (a grid, fast in-process NAB scorer), score the held-out part with them, "
        "pool the held-out folds and score them with NAB's official scorer; repeated over "
        "--splits random splits stratified by category (training.anomaly.crossval).",
        formatter_class=HelpFormatter,
    )
    v.add_argument(
        "--model", type=Path, required=True, help="published folder with model.onnx and card.json"
    )
    v.add_argument(
        "--grid",
        default="v1",
        help="a named grid (v1: nab-gru:1's knobs; v2: + slower likelihood and change "
        "detectors) or JSON (inline or a file): a list of {knob: [values]} blocks",
    )
    v.add_argument("--folds", type=int, default=2, help="folds per split")
    v.add_argument(
        "--splits", type=int, default=10, help="random splits (seeds 0..N-1; seed 0 = headline)"
    )
    v.add_argument(
        "--official",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score the pooled held-out results with NAB's official scorer (off: fast scorer)",
    )
    v.add_argument(
        "--in-sample",
        action="store_true",
        help="also score the setting that is best on ALL the series (in-sample) officially",
    )
    v.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB data folder")
    v.add_argument("--out", type=Path, default=None, help="write the full report here (JSON)")
    v.set_defaults(func=cmd_crossval)

    r = commands.add_parser(
        "retune",
        help="publish a published detector with cross-validated, re-chosen scoring knobs",
        description="Cross-validate --grid and --baseline-grid on the same splits (official "
        "scorer), and only if --grid wins choose its knobs on all NAB series and publish the "
        "same graph with them as the next free version (training.anomaly.retune).",
        formatter_class=HelpFormatter,
    )
    r.add_argument(
        "--model", type=Path, required=True, help="published folder with model.onnx and card.json"
    )
    r.add_argument("--grid", default="v3", help="named grid or JSON list of blocks")
    r.add_argument("--baseline-grid", default="v1", help="the grid to beat on the same splits")
    r.add_argument(
        "--beat",
        type=float,
        default=None,
        help="pooled held-out standard score to beat (default: the source card's "
        "metrics.nab_cross_validated.pooled_held_out.standard)",
    )
    r.add_argument("--folds", type=int, default=2, help="folds per split")
    r.add_argument("--splits", type=int, default=10, help="random splits (seeds 0..N-1)")
    r.add_argument("--nab-dir", type=Path, default=NAB_DIR, help="NAB data folder")
    r.add_argument("--report", type=Path, default=None, help="write the CV reports here (JSON)")
    r.add_argument(
        "--experiments",
        default=None,
        help="JSON file: other variants tried (e.g. other grids' CV figures) for the card",
    )
    add_publish_flags(r, name=DEFAULT_NAME)
    r.set_defaults(func=cmd_retune)


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


def cmd_crossval(args: argparse.Namespace) -> int:
    from contract.card import upgrade
    from training.anomaly import crossval
    from training.anomaly.data import nab_windows, read_nab
    from training.anomaly.evaluate import ort_runner
    from training.common.onnx_utils import ort_session

    folder = Path(args.model)
    if not (folder / "card.json").is_file():
        return _fail(f"--model {folder} has no card.json")
    if not (Path(args.nab_dir) / "windows.json").is_file():
        return _fail(f"--nab-dir {args.nab_dir} holds no NAB data (windows.json)")
    grid = crossval.GRIDS.get(args.grid) or _json_arg(args.grid)
    if not isinstance(grid, list) or not grid:
        return _fail(f"--grid {args.grid!r}: not a named grid nor a JSON list of blocks")
    settings = crossval.expand(grid)
    card = upgrade(json.loads((folder / "card.json").read_text()))
    sess = ort_session(folder / card["onnx"]["file"], threads=1)
    nab = read_nab(args.nab_dir)
    windows = nab_windows(args.nab_dir)
    outputs = crossval.graph_outputs(ort_runner(sess, card), nab, card)
    print(f"{len(settings)} settings, {args.splits} split(s) of {args.folds} folds")
    official = crossval.official_scorer(nab) if args.official else None
    report = crossval.crossvalidate(
        nab, outputs, card, settings, windows, range(args.splits), args.folds, official
    )
    report = {"model": str(folder), "grid": grid, **report}
    if args.in_sample:
        res = report["in_sample"]
        knobs = res["knobs"]
        if official is not None:
            res["official"] = official(crossval.setting_scores(nab, outputs, card, knobs))
        report["in_sample"] = res
        print(f"in-sample best (NOT cross-validated): {res}")
    head = report["splits"][0]
    key = "pooled_official" if args.official else "pooled_fast"
    print(f"seed {head['seed']} pooled held-out ({key}): {head[key]}")
    print(f"spread over {args.splits} split(s), standard: {report['spread']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"report: {args.out}")
    return 0


def cmd_retune(args: argparse.Namespace) -> int:
    from contract.card import upgrade
    from training.anomaly import crossval, retune
    from training.anomaly.data import nab_windows, read_nab
    from training.anomaly.evaluate import ort_runner
    from training.anomaly.export import example_scores
    from training.common.artifacts import write_card
    from training.common.onnx_utils import ort_session

    folder = Path(args.model)
    if not (folder / "card.json").is_file():
        return _fail(f"--model {folder} has no card.json")
    if not (Path(args.nab_dir) / "windows.json").is_file():
        return _fail(f"--nab-dir {args.nab_dir} holds no NAB data (windows.json)")
    grids = []
    for g in (args.grid, args.baseline_grid):
        grid = crossval.GRIDS.get(g) or _json_arg(g)
        if not isinstance(grid, list) or not grid:
            return _fail(f"grid {g!r}: not a named grid nor a JSON list of blocks")
        grids.append(grid)
    tried = _json_arg(args.experiments)
    if tried is not None and not isinstance(tried, list):
        return _fail("--experiments must be a JSON list")
    dest = publish_target(args, TASK)
    source = upgrade(json.loads((folder / "card.json").read_text()))
    beat = args.beat
    if beat is None:
        beat = source["metrics"]["nab_cross_validated"]["pooled_held_out"]["standard"]
    sess = ort_session(folder / source["onnx"]["file"], threads=1)
    run = ort_runner(sess, source)
    nab = read_nab(args.nab_dir)
    windows = nab_windows(args.nab_dir)
    outputs = crossval.graph_outputs(run, nab, source)
    official = crossval.official_scorer(nab)
    seeds = range(args.splits)
    reports = []
    for label, grid in zip(("grid", "baseline"), grids, strict=True):
        settings = crossval.expand(grid)
        print(f"{label}: {len(settings)} settings, {args.splits} split(s) of {args.folds} folds")
        rep = crossval.crossvalidate(
            nab, outputs, source, settings, windows, seeds, args.folds, official
        )
        reports.append({"grid": grid, **rep})
    report, baseline = reports
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"grid": report, "baseline": baseline}, indent=1))
    ok, why = retune.gate(report, baseline, beat)
    print(("publishing: " if ok else "not publishing: ") + why)
    if not ok:
        return 1
    knobs = report["in_sample"]["knobs"]
    nab_in = official(crossval.setting_scores(nab, outputs, source, knobs))
    print(f"in-sample (knobs chosen on all series): {nab_in}")
    method = (
        f"{args.folds}-fold cross-validation stratified by NAB category "
        "(training.anomaly.crossval: each category shuffled with the split's seed and dealt "
        "round-robin): for each fold the grid setting with the best NAB standard score on the "
        "other folds (fast in-process scorer, equal to the official one) is chosen and the "
        "fold scored with it; the held-out folds are pooled and scored once by NAB's official "
        "scorer. Headline: split seed 0; spread: seeds "
        f"0..{args.splits - 1}. Same network (graph outputs do not depend on the knobs)"
    )
    cv = retune.cv_summary(report, method)
    base_cv = retune.cv_summary(baseline, f"the same protocol and splits with grid {grids[1]}")
    stub = {**source, "scoring": {**source["scoring"], **knobs}}
    stub["threshold"] = stub["scoring"]["threshold"]
    example = example_scores(sess, stub)
    timing = retune.throughput(run, [s.values for s in nab], stub)
    with publish(args, TASK, dest) as pub:
        card = retune.new_card(
            source,
            knobs,
            nab_in_sample=nab_in,
            cv=cv,
            baseline_cv=base_cv,
            example=example,
            timing=timing,
            grid=grids[0],
            name=dest.parent.name,
            version=dest.name,
            tried=_json_arg(args.experiments),
        )
        retune.copy_graph(folder, pub.staging, card)
        write_card(pub.staging, card)
    print(card["description"])
    print(pub.message())
    return 0
