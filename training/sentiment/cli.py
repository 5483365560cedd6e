"""``seqserve-train sentiment {train,export,evaluate}``.

    seqserve-train sentiment train --cell lstm --bidirectional --seeds 1 2 3 \
        --run-dir runs/sentiment/bilstm --export-dir models/sentiment/sst2-bilstm/1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from training.sentiment import tokenizer as toks
from training.sentiment.data import (
    DEFAULT_DATA_DIR,
    SST2_LABEL_NAMES,
    SST2_URL,
    TextDataset,
    label_list,
    load_dataset,
    root_sentences,
)
from training.sentiment.model import CELLS, POOLINGS, ClassifierConfig
from training.sentiment.train import TrainConfig, train_member


def _label_names(spec: str | None) -> dict[str, str] | None:
    """'0=negative,1=positive' -> mapping; 'sst2' -> the SST-2 mapping; 'none' -> raw labels."""
    if spec is None or spec == "sst2":
        return SST2_LABEL_NAMES
    if spec == "none":
        return None
    return dict(pair.split("=", 1) for pair in spec.split(","))


def _load(args: argparse.Namespace, path: Path) -> TextDataset:
    ds = load_dataset(
        path, args.text_column, args.label_column, args.format, _label_names(args.label_names)
    )
    if args.limit:
        ds = TextDataset(ds.texts[: args.limit], ds.labels[: args.limit])
    return ds


def cmd_train(args: argparse.Namespace) -> int:
    if args.dry_run:  # seconds-long smoke run: tiny model, few rows, one epoch
        args.limit = args.limit or 300
        args.epochs, args.hidden = 1, 16
        if not args.pretrained_embeddings:  # pretrained vectors fix the embedding size
            args.emb_dim = 16
        args.seeds = args.seeds[:2]
    train = _load(args, args.train)
    dev = _load(args, args.dev)
    if args.upweight_sentences > 0:  # repeat whole sentences among the phrases
        roots = root_sentences(train)
        extra = roots * args.upweight_sentences
        train = TextDataset(
            train.texts + [train.texts[i] for i in extra],
            train.labels + [train.labels[i] for i in extra],
        )
        print(json.dumps({"root_sentences": len(roots), "train_rows": len(train)}))
    labels = label_list(train, dev, order=args.label_order.split(",") if args.label_order else None)
    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    tok = toks.train_tokenizer(train.texts, min_frequency=args.min_freq)
    toks.save(tok, run_dir / "tokenizer.json")
    index = {lab: i for i, lab in enumerate(labels)}
    train_ids = toks.encode_batch(tok, train.texts, args.max_length)
    dev_ids = toks.encode_batch(tok, dev.texts, args.max_length)
    train_y = np.array([index[x] for x in train.labels])
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
    soft = None
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
            "distill_weight": args.distill_weight if args.teacher else None,
        },
        "members": members,
        "train_path": str(args.train),
        "dev_path": str(args.dev),
        "seconds": time.perf_counter() - t0,
    }
    (run_dir / "run.json").write_text(json.dumps(summary, indent=1))
    accs = [m["dev_accuracy"] for m in members]
    print(json.dumps({"members_dev_accuracy": accs, "mean": float(np.mean(accs))}))
    if args.export_dir:
        _export(args, [run_dir], args.export_dir, dev)
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


def _export(args: argparse.Namespace, run_dirs: list[Path], out: Path, dev: TextDataset) -> None:
    from training.sentiment.export import dataset_records, export_model

    summary = json.loads((run_dirs[0] / "run.json").read_text())
    card = export_model(
        run_dirs,
        out,
        dev.texts,
        dev.labels,
        name=args.name,
        version=args.version,
        datasets=dataset_records(
            Path(summary["train_path"]), Path(summary["dev_path"]), args.dataset_url
        ),
        embeddings=args.embeddings,
        quantize=args.quantize,
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


def cmd_export(args: argparse.Namespace) -> int:
    summary = json.loads((args.run_dir[0] / "run.json").read_text())
    dev = _load(args, args.dev or Path(summary["dev_path"]))
    _export(args, args.run_dir, args.export_dir, dev)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.sentiment.export import ort_predict

    card = json.loads((args.model_dir / "card.json").read_text())
    tok = toks.load(args.model_dir / card["tokenizer"]["file"])
    ds = _load(args, args.data)
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
        choices=["auto", "tsv", "csv", "jsonl"],
        help="file format; auto uses the file extension",
    )
    p.add_argument(
        "--label-names",
        default=None,
        help="raw->name mapping like '0=negative,1=positive'; 'sst2' (default) or 'none'",
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
        "--dataset-url", default=SST2_URL, help="public download address recorded in the card"
    )


def register(sub: Any) -> None:
    p = sub.add_parser("sentiment", help="text classification (SST-2 by default)")
    s = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = s.add_parser("train", help="train ensemble members (one per seed), optionally export")
    t.add_argument(
        "--train", type=Path, default=DEFAULT_DATA_DIR / "train.tsv", help="training file"
    )
    t.add_argument(
        "--dev",
        type=Path,
        default=DEFAULT_DATA_DIR / "dev.tsv",
        help="dev file (early stopping, selection)",
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
    t.add_argument("--max-length", type=int, default=128, help="maximum tokens per text")
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
        "--dev", type=Path, default=None, help="dev file (default: the one used in training)"
    )
    _data_flags(e)
    _export_flags(e)
    e.set_defaults(func=cmd_export)

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
