"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.cli import main

TINY_LM = ("--emb-size", "16", "--hidden-size", "24", "--cutoffs", "10", "30")


def train_and_export_lm(
    train: Path,
    valid: Path,
    run_dir: Path,
    model_dir: Path,
    train_args: Sequence[str] = TINY_LM,
    export_args: Sequence[str] = ("--quantize", "no"),
) -> None:
    """Dry-run ``lm train`` on the given files, then ``lm export`` its best checkpoint to
    ``model_dir`` (``<models_dir>/next-word/<name>/<version>``, which must not exist yet)."""
    common = ["--train", str(train), "--dev", str(valid), "--threads", "1"]
    train = ["lm", "train", *common, "--dry-run", "--no-export", "--run-dir", str(run_dir)]
    assert main([*train, *train_args]) == 0
    checkpoint = str(run_dir / "best.pt")
    export = ["lm", "export", *common, "--checkpoint", checkpoint, "--out", str(model_dir)]
    assert main([*export, *export_args]) == 0
