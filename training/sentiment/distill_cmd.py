"""``seqserve-train sentiment {teacher,transfer,word-vectors}``: the distillation recipe's
steps (a transformer teacher, its soft labels on an augmented transfer set, word vectors for
the student). Heavy libraries are imported inside the commands, so ``--help`` stays fast."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from training.common.config_cli import config_from_args
from training.sentiment import tokenizer as toks
from training.sentiment.config import DataConfig
from training.sentiment.data import TextDataset, label_list
from training.sentiment.inputs import concat, label_mapping, read_files, read_texts


def cmd_teacher(args: argparse.Namespace) -> int:
    """Fine-tune the transformer teacher on the labelled texts (it never ships)."""
    from training.sentiment.teacher import TeacherConfig, base_model_dir, fine_tune

    data = config_from_args(DataConfig, args)
    parts = read_files(
        data, [*args.train, *args.dev], label_mapping(args.label_names, args.train[0])
    )
    train, dev = concat(parts[: len(args.train)]), concat(parts[len(args.train) :])
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
    texts = read_texts(config_from_args(DataConfig, args), args.train)
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
    texts = read_texts(config_from_args(DataConfig, args), args.train)
    tok = toks.train_tokenizer(texts, min_frequency=args.min_freq, vocab_size=args.vocab_size)
    words = [w for w, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])][2:]
    folder = args.encoder or base_model_dir()
    encoder = AutoModel.from_pretrained(str(folder))
    vectors = embed_words(encoder, AutoTokenizer.from_pretrained(str(folder)), words)
    write_word2vec(args.out, words, pca(vectors, args.dim))
    print(json.dumps({"words": len(words), "dim": args.dim, "encoder": str(folder)}))
    return 0
