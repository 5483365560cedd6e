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
    """Dry-run ``lm train`` on the given files, then ``lm export`` its best checkpoint."""
    common = ["--train-file", str(train), "--valid-file", str(valid), "--threads", "1"]
    assert main(["lm", "train", *common, "--dry-run", "--out-dir", str(run_dir), *train_args]) == 0
    checkpoint = str(run_dir / "best.pt")
    export = ["lm", "export", *common, "--checkpoint", checkpoint, "--model-dir", str(model_dir)]
    assert main([*export, *export_args]) == 0
