"""``seqserve-train sentiment export`` and ``evaluate``: publish finished runs as one ONNX
ensemble through the append-only store, and score a published folder on a labelled file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from training.common.config_cli import (
    config_from_args,
    keep_dry_runs_out_of_models,
    publish_target,
    read_json_file,
)
from training.common.try_it import try_it_lines
from training.sentiment import tokenizer as toks
from training.sentiment.config import DEFAULT_NAME, TASK, DataConfig, ExportOptions, jsonable
from training.sentiment.data import TextDataset
from training.sentiment.inputs import DATA_FIELDS, concat, file_groups, label_mapping, read_files


def resolve_name(args: argparse.Namespace, default: str) -> None:
    """``--name``, else the name in ``--out``, else ``default``; a --name that disagrees with
    --out is refused (the card could only say one of them)."""
    from contract.store import StoreError

    out_name = Path(args.out).parent.name if args.out is not None else None
    if args.name and out_name and args.name != out_name:
        raise StoreError(f"--name {args.name} disagrees with --out {args.out}")
    args.name = args.name or out_name or default


def run_paths(value: str | list[str]) -> list[Path]:
    """run.json paths: a list, or one string in runs written before multi-file training."""
    return [Path(p) for p in ([value] if isinstance(value, str) else value)]


def read_experiments(path: Path | None) -> Any:
    """``--experiments`` read before any work, so a bad file fails now, not after training."""
    return read_json_file(path, "--experiments")


def publish(
    run_dirs: list[Path],
    dest: Path,
    dev_paths: list[Path],
    devs: list[TextDataset],
    opts: ExportOptions,
    experiments: Any,
    *,
    args: argparse.Namespace,
) -> Path:
    """Export the runs' members as one ensemble into a staging folder and publish it as
    ``dest``; the card is written with the published name and version."""
    from training.common.config_cli import publish as publishing
    from training.sentiment.export import dataset_records, export_model

    summary = json.loads((run_dirs[0] / "run.json").read_text())
    dev = concat(devs)
    with publishing(args, TASK, dest) as pub:
        card = export_model(
            run_dirs,
            pub.staging,
            dev.texts,
            dev.labels,
            name=dest.parent.name,
            version=dest.name,
            datasets=dataset_records(run_paths(summary["train_path"]), dev_paths, opts.dataset_url),
            embeddings=opts.embeddings,
            quantize=opts.quantize,
            calibrate=opts.calibrate,
            dev_groups=file_groups(dev_paths, devs),
            experiments=experiments,
            export=jsonable(opts),
        )
    figures = {
        "metrics": card["metrics"],
        "parity": card["parity"],
        "latency": card["latency_single_request"],
    }
    print(json.dumps(figures, indent=1))
    print(pub.message())
    print(
        try_it_lines(
            pub.path,
            TASK,
            [("/sentiment", {"text": "your text here"})],
            about=f"labels: {', '.join(card['labels'])}",
        )
    )
    return pub.path


def saved_data(args: argparse.Namespace, saved: dict[str, Any]) -> DataConfig:
    """The data flags given, else the values a run (or card) was trained with."""
    values = {k: getattr(args, k) for k in DATA_FIELDS}
    for k, v in values.items():
        if v is None and k != "label_names":
            values[k] = saved.get(k, DataConfig.__dataclass_fields__[k].default)
    return DataConfig(**values)


def cmd_export(args: argparse.Namespace) -> int:
    """Publish finished run folders as one ensemble, scored on the run's dev files."""
    run_dirs: list[Path] = args.run_dir
    summary_path = run_dirs[0] / "run.json"
    if not summary_path.is_file():
        raise SystemExit(f"{run_dirs[0]} is not a finished run folder (no run.json)")
    summary = json.loads(summary_path.read_text())
    resolve_name(args, summary.get("name") or DEFAULT_NAME)
    target = argparse.Namespace(**{**vars(args), "run_dir": run_dirs[0]})
    keep_dry_runs_out_of_models(target, bool(summary.get("dry_run")), run_dirs[0])
    dest = publish_target(target, TASK)
    opts = config_from_args(ExportOptions, args)
    experiments = read_experiments(opts.experiments)
    data = saved_data(args, summary.get("config", {}))
    dev_paths = args.dev or run_paths(summary["dev_path"])
    if args.label_names is None:  # the mapping the run was trained with
        devs = read_files(data, dev_paths, summary.get("label_map"), exact=False)
    else:
        devs = read_files(data, dev_paths, label_mapping(args.label_names, dev_paths[0]))
    publish(run_dirs, dest, dev_paths, devs, opts, experiments, args=args)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Accuracy of a published folder on a labelled file, with its trained label mapping."""
    from contract import card as cards
    from training.sentiment.export import ort_predict

    try:
        card = cards.read(args.model, TASK)
    except cards.CardError as exc:
        raise SystemExit(f"{args.model}: {exc}") from None
    assert isinstance(card, cards.SentimentCard)
    data = saved_data(args, {k: v for k, v in card.training.items() if k != "limit"})
    trained_map = getattr(card, "label_map", None)
    if args.label_names is None and trained_map:  # the mapping used in training
        [ds] = read_files(data, [args.data], trained_map, exact=False)
    else:
        [ds] = read_files(data, [args.data], label_mapping(args.label_names, args.data))
    unknown = sorted(set(ds.labels) - set(card.labels))
    if unknown:
        raise SystemExit(
            f"{args.data} has labels {unknown} the model does not know ({card.labels}); "
            "map them with --label-names"
        )
    tok = toks.load(Path(args.model) / card.tokenizer.file)
    ids = toks.encode_batch(tok, ds.texts, card.tokenizer.max_length)
    probs = ort_predict(Path(args.model) / card.onnx.file, ids)
    index = {lab: i for i, lab in enumerate(card.labels)}
    y = np.array([index[x] for x in ds.labels])
    acc = float((probs.argmax(1) == y).mean())
    result = {
        "model": f"{card.name}:{card.version}",
        "data": str(args.data),
        "examples": len(y),
        "accuracy": acc,
    }
    print(json.dumps(result))
    return 0
