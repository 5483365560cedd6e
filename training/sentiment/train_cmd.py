"""``seqserve-train sentiment train``: read and check the data, train one member per seed
into the run folder (``run.json`` is what export reads), then publish unless ``--no-export``."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.common.config_cli import config_from_args, prepare_training, run_dir
from training.sentiment import tokenizer as toks
from training.sentiment.config import (
    DEFAULT_NAME,
    DEFAULT_TRAIN,
    TASK,
    ExportOptions,
    SentimentConfig,
    jsonable,
)
from training.sentiment.data import KNOWN_BINARY_SETS, TextDataset, label_list
from training.sentiment.export_cmd import publish, read_experiments, resolve_name
from training.sentiment.inputs import (
    check_labels,
    concat,
    file_groups,
    holdout,
    label_mapping,
    read_files,
    upweight,
)
from training.sentiment.model import ClassifierConfig
from training.sentiment.train import TrainConfig, train_member


@dataclass
class TrainingData:
    """The labelled rows a run trains and selects on, as read and checked before training."""

    trains: list[TextDataset]  # per training file (the first one after --upweight-sentences)
    train: TextDataset
    dev: TextDataset
    devs: list[TextDataset]  # per dev file, as published models are scored on them
    dev_groups: dict[str, np.ndarray] | None
    labels: list[str]
    label_counts: dict[str, int]
    mapping: dict[str, str] | None


def _slug(text: str) -> str:
    """Lower-case letters and digits joined by dashes: safe in a model name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_name(cfg: SentimentConfig) -> str:
    """``sst2-bilstm`` on the default data; other files name the model after themselves."""
    cell = ("bi" if cfg.bidirectional else "") + cfg.cell
    if cfg.train[0].resolve() == DEFAULT_TRAIN.resolve():
        return DEFAULT_NAME if cell == "bilstm" else f"sst2-{cell}"
    sets = [p.parent.name for p in cfg.train]
    if all(s in KNOWN_BINARY_SETS for s in sets):
        stem = "-".join(dict.fromkeys(sets))
    else:
        first = cfg.train[0].resolve()
        stem = re.sub(r"(^|-)train($|-)", "-", _slug(first.stem)).strip("-")
        stem = stem or _slug(first.parent.name) or "sentiment"
    return f"{stem}-{cell}"[:64]


def train_config(args: argparse.Namespace) -> SentimentConfig:
    """The run's configuration from the flags; a dry run shrinks it to seconds."""
    cfg = config_from_args(SentimentConfig, args)
    if not cfg.train or not cfg.dev:
        raise SystemExit("--train and --dev each need at least one file")
    if not cfg.seeds:
        raise SystemExit("--seeds needs at least one seed")
    if args.dry_run:
        cfg.shrink_for_dry_run()
    return cfg


def load_training_data(cfg: SentimentConfig) -> TrainingData:
    """Read, map and check the files; every data problem stops here, before training."""
    mapping = label_mapping(cfg.label_names, cfg.train[0])
    parts = read_files(cfg, [*cfg.train, *cfg.dev], mapping)
    trains, devs = parts[: len(cfg.train)], parts[len(cfg.train) :]
    if cfg.upweight_sentences > 0:
        trains[0] = upweight(trains[0], cfg.upweight_sentences)
    train, dev = concat(trains), concat(devs)
    label_counts = check_labels(train)
    unseen = sorted(set(dev.labels) - set(label_counts))
    if unseen:
        raise SystemExit(f"dev labels {unseen} never occur in the training data")
    print(json.dumps({"train_label_counts": label_counts}))
    dev_groups = file_groups(cfg.dev, devs)
    if cfg.val_split:  # hold out part of the training rows for selection (as Keras does)
        train, dev = holdout(train, cfg.val_split)
        dev_groups = None
        print(json.dumps({"train_rows": len(train), "validation_rows": len(dev)}))
    order = cfg.label_order.split(",") if cfg.label_order else None
    try:
        labels = label_list(train, dev, order=order)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return TrainingData(trains, train, dev, devs, dev_groups, labels, label_counts, mapping)


def _member_config(cfg: SentimentConfig, seed: int) -> TrainConfig:
    """One ensemble member's training settings (they differ only in the seed)."""
    return config_from_args(TrainConfig, cfg, seed=seed, limit_train=cfg.limit)


def _model_config(cfg: SentimentConfig, vocab_size: int, labels: list[str]) -> ClassifierConfig:
    """The classifier's shape from the run's flags and the trained vocabulary."""
    return config_from_args(
        ClassifierConfig, cfg, vocab_size=vocab_size, num_labels=len(labels), pad_id=toks.PAD_ID
    )


def _soft_labels(
    path: Path, train: TextDataset, labels: list[str]
) -> tuple[TextDataset, np.ndarray, int]:
    """Teacher probabilities for the training texts, plus the transfer set's extra texts.

    Returns the training set with the extra (augmented) texts appended under the label ``""``
    (no hard label), the [rows, labels] soft-target matrix (NaN where the teacher gave none),
    and how many training texts the teacher labelled.
    """
    meta = json.loads(path.with_suffix(".json").read_text())
    order = [meta["labels"].index(lab) for lab in labels]
    probs: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            probs[row["text"]] = [row["probabilities"][i] for i in order]
    known = set(train.texts)
    extra = [t for t in probs if t not in known]
    out = TextDataset(train.texts + extra, train.labels + [""] * len(extra))
    soft = np.full((len(out), len(labels)), np.nan, dtype=np.float32)
    matched = 0
    for i, text in enumerate(out.texts):
        if text in probs:
            soft[i] = probs[text]
            matched += i < len(train)
    return out, soft, matched


def _pretrained_matrix(path: Path, tok: Any, dim: int) -> tuple[np.ndarray, float]:
    """[vocab, dim] matrix from a vectors file, NaN rows where a word has none, rescaled so the
    vectors have unit standard deviation like the random init they replace."""
    from training.sentiment.word2vec import load_vectors

    vectors = load_vectors(path)
    some = next(iter(vectors.values()))
    if len(some) != dim:
        raise ValueError(f"{path} has {len(some)}-d vectors but --emb-dim is {dim}")
    vocab = tok.get_vocab()
    out = np.full((len(vocab), dim), np.nan, dtype=np.float32)
    for word, i in vocab.items():
        if word in vectors and i >= 2:  # never the pad/unk rows
            out[i] = vectors[word]
    have = ~np.isnan(out).any(1)
    out[have] /= out[have].std()
    return out, float(have.sum() / (len(vocab) - 2))


def _teacher_probs(folder: Path, texts: list[str], labels: list[str]) -> np.ndarray:
    """An exported model's probabilities on the training texts, in this run's label order."""
    from contract import card as cards
    from training.sentiment.export import ort_predict

    card = cards.read(folder, TASK)
    assert isinstance(card, cards.SentimentCard)
    if sorted(card.labels) != sorted(labels):
        raise ValueError(f"teacher labels {card.labels} differ from the data's {labels}")
    tok = toks.load(folder / card.tokenizer.file)
    probs = ort_predict(
        folder / card.onnx.file, toks.encode_batch(tok, texts, card.tokenizer.max_length)
    )
    order = [card.labels.index(lab) for lab in labels]
    return probs[:, order].astype(np.float32)


def _train_figures(
    cfg: SentimentConfig,
    coverage: float | None,
    teacher_info: Any,
    distilled: bool,
    train_len: int,
) -> dict[str, Any]:
    """``run.json``'s ``train_config``: the last member's settings plus the run-wide recipe."""
    return {
        **jsonable(_member_config(cfg, cfg.seeds[-1])),
        "seeds": list(cfg.seeds),
        "min_freq": cfg.min_freq,
        "pretrained_embeddings": str(cfg.pretrained_embeddings or ""),
        "pretrained_coverage": coverage,
        "upweight_sentences": cfg.upweight_sentences,
        "teacher": str(cfg.teacher or ""),
        "soft_labels": str(cfg.soft_labels or ""),
        "transfer_set": teacher_info,
        "distill_weight": cfg.distill_weight if distilled else None,
        "train_max_length": train_len,
        "vocab_size_cap": cfg.vocab_size,
        "val_split": cfg.val_split,
    }


def train_run(
    cfg: SentimentConfig, data: TrainingData, folder: Path, name: str, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Train one member per seed into ``folder`` and write its ``run.json`` (what export reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = toks.train_tokenizer(
        data.train.texts, min_frequency=cfg.min_freq, vocab_size=cfg.vocab_size
    )
    toks.save(tok, folder / "tokenizer.json")
    labels, train = data.labels, data.train
    soft, teacher_info = None, None
    if cfg.soft_labels:
        train, soft, matched = _soft_labels(cfg.soft_labels, train, labels)
        teacher_info = json.loads(cfg.soft_labels.with_suffix(".json").read_text())
        print(json.dumps({"soft_labelled_train": matched, "transfer_rows": len(train)}))
    train_len = min(cfg.train_max_length or cfg.max_length, cfg.max_length)
    train_ids = toks.encode_batch(tok, train.texts, train_len)
    dev_ids = toks.encode_batch(tok, data.dev.texts, cfg.max_length)
    index = {lab: i for i, lab in enumerate(labels)}
    train_y = np.array([index.get(x, -1) for x in train.labels])
    dev_y = np.array([index[x] for x in data.dev.labels])
    model_cfg = _model_config(cfg, tok.get_vocab_size(), labels)
    init, coverage = None, None
    if cfg.pretrained_embeddings:
        init, coverage = _pretrained_matrix(cfg.pretrained_embeddings, tok, cfg.emb_dim)
        print(json.dumps({"pretrained_coverage": coverage}))
    if cfg.teacher:
        soft = _teacher_probs(cfg.teacher, train.texts, labels)
        agree = float((soft.argmax(1) == train_y).mean())
        print(json.dumps({"teacher": str(cfg.teacher), "teacher_train_agreement": agree}))
    t0 = time.perf_counter()
    members = []
    for seed in cfg.seeds:
        members.append(
            train_member(
                model_cfg,
                _member_config(cfg, seed),
                train_ids,
                train_y,
                dev_ids,
                dev_y,
                folder,
                init,
                soft,
                cfg.distill_weight,
                data.dev_groups,
            )
        )
    train_figures = _train_figures(cfg, coverage, teacher_info, soft is not None, train_len)
    summary = {
        "name": name,
        "config": jsonable(cfg),
        "labels": labels,
        "model_config": jsonable(model_cfg),
        "train_config": train_figures,  # the figures the export and the card's description read
        "members": members,
        "label_counts": data.label_counts,
        "label_map": data.mapping,
        "train_path": [str(p) for p in cfg.train],
        "dev_path": [str(p) for p in cfg.dev],
        "train_rows": {str(p): len(t) for p, t in zip(cfg.train, data.trains, strict=True)},
        "seconds": time.perf_counter() - t0,
        "dry_run": dry_run,
    }
    (folder / "run.json").write_text(json.dumps(summary, indent=1))
    accs = [m["dev_accuracy"] for m in members]
    print(json.dumps({"members_dev_accuracy": accs, "mean": float(np.mean(accs))}))
    return members


def cmd_train(args: argparse.Namespace) -> int:
    """Check the destination and the data, train, then publish (unless ``--no-export``)."""
    cfg = train_config(args)
    resolve_name(args, default_name(cfg))
    dest = prepare_training(args, TASK)  # run folder and destination, before training
    opts = config_from_args(ExportOptions, args)
    experiments = read_experiments(opts.experiments)  # a bad file fails now, not after training
    data = load_training_data(cfg)
    folder = run_dir(args, TASK)
    train_run(cfg, data, folder, args.name, dry_run=args.dry_run)
    if dest is None:
        print(f"run: {folder}\nNext, publish it for serving:")
        print(f"  seqserve-train sentiment export --run-dir {folder}")
        return 0
    publish([folder], dest, cfg.dev, data.devs, opts, experiments, args=args)
    return 0
