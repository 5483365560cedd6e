"""The language model's commands never write into a published model folder.

``lm train`` and ``lm export`` run in a throw-away copy of the repository with their default
flags: a dry run (and the export of its checkpoint) publishes under its run folder, a real run
and its export publish the next free version of the name (``wikitext2-lstm:4`` beside the
shipped ``:2`` and ``:3`` on the default data), a taken version such as the old ``--model-dir
models/next-word/wikitext2-lstm/2`` is refused before any work (exit 2, naming the folder), and
``--force`` moves the old folder aside instead of deleting it. The shipped models' bytes are
the same at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.store_guard import (
    SHARED,
    assert_shipped_untouched,
    repo_copy,
    shipped_hashes,
    train_cli,
)

TINY = [
    *("--emb-size", "16", "--hidden-size", "16", "--layers", "1", "--epochs", "1"),
    *("--max-train-lines", "200", "--max-dev-lines", "40", "--cutoffs", "50", "200"),
    *("--threads", "1", "--quantize", "no"),  # int8 is measured by test_lm_training
]


def _published(result: subprocess.CompletedProcess[str], repo: Path) -> Path:
    """The folder an export says it published to (it must have succeeded)."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r"^Published (\S+):(\S+) to (\S+)", result.stdout, re.M)
    assert found, result.stdout[-2000:]
    folder = Path(found.group(3))
    card = json.loads((folder / "card.json").read_text())
    assert (card["task"], card["name"], card["version"]) == ("next-word", *found.groups()[:2])
    assert card["schema_version"] == 2 and folder.is_relative_to(repo)
    return folder


def _trained(result: subprocess.CompletedProcess[str], repo: Path) -> Path:
    """The checkpoint a training run says it wrote (relative to the repository copy)."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r"^Trained (\S+) ", result.stdout, re.M)
    assert found, result.stdout[-2000:]
    return repo / found.group(1)


def _data_flags(repo: Path) -> list[str]:
    """The default data (WikiText-2) when ../shared is there; else the example text."""
    if (SHARED / "data" / "wikitext2" / "train.txt").is_file():
        return []
    examples = repo / "examples" / "data"
    return ["--train", str(examples / "lighthouse_train.txt")] + [
        "--dev",
        str(examples / "lighthouse_valid.txt"),
    ]


def _model_folders(repo: Path) -> set[Path]:
    return {p for p in (repo / "models").glob("*/*/*") if p.is_dir()}


@pytest.mark.slow
def test_train_and_export_never_touch_published_folders(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    before, folders = shipped_hashes(repo), _model_folders(repo)
    data = _data_flags(repo)

    # (a) a dry run with default flags publishes under its run folder, never models/ ...
    result = train_cli(repo, "lm", "train", "--dry-run", *data)
    dry_ckpt = _trained(result, repo)
    name = dry_ckpt.parent.name.removesuffix("-dry-run")
    assert dry_ckpt.parent == repo / "runs" / "next-word" / f"{name}-dry-run"
    dry_models = dry_ckpt.parent / "models" / "next-word" / name
    assert _published(result, repo) == dry_models / "1"
    # ... and so does exporting its checkpoint with default flags
    dry = _published(train_cli(repo, "lm", "export", "--checkpoint", str(dry_ckpt)), repo)
    assert dry == dry_models / "2"
    assert _model_folders(repo) == folders

    # (b) a real run with tiny settings, default destination: the next free version of its
    # name under models/ (beside the shipped wikitext2-lstm versions on the default data)
    result = train_cli(repo, "lm", "train", *data, *TINY)
    ckpt = _trained(result, repo)
    assert ckpt.parent == repo / "runs" / "next-word" / name
    real = _published(result, repo)
    assert real.parent == repo / "models" / "next-word" / name and real not in folders
    if name == "wikitext2-lstm":  # the next free version after the shipped ones
        shipped = [
            int(p.name)
            for p in (repo / "models" / "next-word" / name).iterdir()
            if p.name.isdigit() and p != real
        ]
        assert real.name == str(max(shipped) + 1)
    # (c) exporting the checkpoint with default flags publishes one more version
    again = _published(train_cli(repo, "lm", "export", "--checkpoint", str(ckpt)), repo)
    assert again == real.parent / str(int(real.name) + 1)
    assert _model_folders(repo) == folders | {real, again}

    # a taken version is refused at once, naming the folder: by train (before training) and
    # by export (the old `--model-dir models/next-word/wikitext2-lstm/2`)
    shipped = "models/next-word/wikitext2-lstm/2"
    taken = train_cli(repo, "lm", "train", *data, "--name", "wikitext2-lstm", "--version", "2")
    assert taken.returncode == 2 and f"{shipped} already exists" in taken.stderr
    assert "vocab" not in taken.stdout  # refused before reading the data
    refused = train_cli(repo, "lm", "export", "--checkpoint", str(ckpt), "--out", shipped)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"{shipped} already exists" in refused.stderr and "Traceback" not in refused.stderr

    # --force publishes and keeps the old folder under models/.replaced/
    old_card = (real / "card.json").read_text()
    export = ["lm", "export", "--checkpoint", str(ckpt), "--version", real.name]
    export += ["--threads", "1", "--quantize", "no"]
    forced = train_cli(repo, *export, "--force")
    assert _published(forced, repo) == real and "was moved to" in forced.stdout
    [kept] = (repo / "models" / ".replaced" / "next-word" / name).glob(f"{real.name}-*")
    assert (kept / "card.json").read_text() == old_card

    assert_shipped_untouched(before, repo)


def test_flag_defaults_are_the_dataclass_defaults() -> None:
    from training.cli import build_parser
    from training.lm.model import LMConfig
    from training.lm.train import TrainConfig

    [tasks] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    [commands] = [
        a for a in tasks.choices["lm"]._actions if isinstance(a, argparse._SubParsersAction)
    ]
    defaults = {a.dest: a.default for a in commands.choices["train"]._actions}
    for config in (TrainConfig, LMConfig):
        for field in dataclasses.fields(config):
            if "help" in field.metadata:  # the fields that are flags
                assert defaults[field.name] == getattr(config(), field.name), field.name


def test_default_names_never_reuse_another_data_sets_name() -> None:
    from training.lm.data import DEFAULT_DATA_DIR
    from training.lm.export import checkpoint_name, default_name

    assert default_name(DEFAULT_DATA_DIR / "train.txt", "lstm") == "wikitext2-lstm"
    assert default_name("examples/data/lighthouse_train.txt", "gru") == "lighthouse-gru"
    assert default_name("My Notes.txt", "lstm") == "my-notes-lstm"
    old = {"train_config": {"train_file": "x/wikitext2/train.txt"}, "model_config": {"cell": "rnn"}}
    assert checkpoint_name(old) == "wikitext2-rnn"  # checkpoints from before names were saved
    assert checkpoint_name({**old, "train_config": {"name": "mine"}}) == "mine"
