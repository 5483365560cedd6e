"""The sentiment commands' configuration: every flag's default is written once, here.

``seqserve-train sentiment train`` generates its flags from :class:`SentimentConfig` (through
``training.common.config_cli.add_config_flags``) and saves the resolved configuration in the
run's ``run.json`` and the card's ``training`` section, so a card says exactly how its model
was made. :class:`DataConfig` (how a labelled file is read) is shared by every sub-command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.common.config_cli import option
from training.sentiment.data import DEFAULT_DATA_DIR
from training.sentiment.model import CELLS, POOLINGS

TASK = "sentiment"
DEFAULT_NAME = "sst2-bilstm"
DEFAULT_TRAIN = DEFAULT_DATA_DIR / "train.tsv"
DEFAULT_DEV = DEFAULT_DATA_DIR / "dev.tsv"
FORMATS = ["auto", "tsv", "tsv-raw", "csv", "jsonl"]
EMBEDDINGS = ["fp32", "fp16", "int8"]


@dataclass
class DataConfig:
    """How a labelled file is read."""

    text_column: str = option("sentence", "column holding the text")
    label_column: str = option("label", "column holding the label")
    format: str = option(
        "auto",
        "file format; auto uses the file extension (tsv/csv: standard quoting; tsv-raw: no "
        "quoting)",
        choices=FORMATS,
    )
    label_names: str | None = option(
        None,
        "raw=name mapping naming every label in the data, like '1=negative,5=positive' "
        "('neutral=-' drops that label's rows); "
        "'none' serves labels as found (the default, except SST-2/IMDB files: 0/1 -> "
        "negative/positive); 'sst2' forces that",
    )
    limit: int | None = option(None, "use only the first N rows of each file")


@dataclass
class SentimentConfig(DataConfig):
    """Everything ``sentiment train`` decides; saved in run.json and the card."""

    train: list[Path] = option(
        [DEFAULT_TRAIN],
        "training file(s), read with the same columns; several are trained on together",
    )
    dev: list[Path] = option(
        [DEFAULT_DEV], "dev file(s) (early stopping, selection on the mean of their accuracies)"
    )
    label_order: str | None = option(None, "comma-separated label order (not set: sorted)")
    # the network
    cell: str = option("lstm", "recurrent cell", choices=sorted(CELLS))
    bidirectional: bool = option(True, "bidirectional layers")
    layers: int = option(1, "stacked recurrent layers")
    emb_dim: int = option(128, "embedding size")
    hidden: int = option(192, "hidden units per direction")
    dropout: float = option(0.5, "dropout on embeddings and pooled features")
    pooling: str = option("maxmean", "masked pooling over valid tokens", choices=list(POOLINGS))
    word_dropout: float = option(0.1, "fraction of training tokens replaced by [UNK]")
    # the vocabulary and text length
    min_freq: int = option(1, "minimum word count to enter the vocabulary")
    vocab_size: int = option(100_000, "most words in the vocabulary (by count)")
    max_length: int = option(
        128, "most tokens a served text is read to (longer: truncated=true); dev uses it too"
    )
    train_max_length: int | None = option(
        None, "cut training texts to this many tokens for speed (not set: --max-length)"
    )
    val_split: float | None = option(
        None,
        "select on this random fraction of the training rows instead of the dev files (the "
        "dev files are then scored only at export)",
    )
    # what the students learn from besides the labels
    teacher: Path | None = option(
        None, "exported model folder whose probabilities the students also learn (distillation)"
    )
    distill_weight: float = option(
        0.5, "weight of the teacher's soft targets in the loss (the rest: hard labels)"
    )
    soft_labels: Path | None = option(
        None, "transfer set written by 'sentiment transfer' (teacher probabilities, JSONL)"
    )
    pretrained_embeddings: Path | None = option(
        None, "word vectors (word2vec/GloVe text) to start the embeddings from; dim = --emb-dim"
    )
    upweight_sentences: int = option(
        0, "add K extra copies of each whole sentence (texts not inside a longer one)"
    )
    # optimisation
    epochs: int = option(6, "maximum epochs")
    patience: int = option(2, "early-stopping patience in epochs")
    batch_size: int = option(64, "batch size")
    lr: float = option(2e-3, "AdamW learning rate")
    lr_decay: float = option(1.0, "learning-rate factor applied after each epoch")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    clip: float = option(5.0, "gradient-norm clipping threshold")
    seeds: list[int] = option([1, 2, 3], "one ensemble member per seed")
    threads: int = option(2, "torch intra-op threads")

    def shrink_for_dry_run(self) -> None:
        """A seconds-long smoke run: tiny model, few rows, one epoch."""
        self.limit = self.limit or 300
        self.epochs, self.hidden = 1, 16
        if not self.pretrained_embeddings:  # pretrained vectors fix the embedding size
            self.emb_dim = 16
        self.seeds = self.seeds[:2]


@dataclass
class ExportOptions:
    """How the ensemble is stored in the published graph (``train`` and ``export``)."""

    quantize: bool = option(
        False,
        "also try int8 dynamic quantization; shipped only if dev accuracy drops <= 0.5 points",
    )
    embeddings: str = option(
        "fp16",
        "storage of embedding tables: fp16 halves the file, int8 (weight-only) quarters it",
        choices=EMBEDDINGS,
    )
    calibrate: bool = option(
        False,
        "temperature-scale the probabilities on the dev files (each file weighted equally) and "
        "record each file's calibration error in the card",
    )
    dataset_url: str | None = option(
        None,
        "public download address recorded in the card for your files (SST-2 and IMDB files "
        "get their own)",
    )
    experiments: Path | None = option(
        None, "JSON file with the figures of other variants tried, copied into the card"
    )


def jsonable(cfg: Any) -> dict[str, Any]:
    """A configuration dataclass as JSON data (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
