"""Sentiment training and export never write into a published model folder.

Every command that writes a model folder (``sentiment train``, ``sentiment export``) runs in a
throw-away copy of the repository, with its default flags: a dry run publishes under its run
folder, a real run publishes the next free version, a taken version is refused before any work
(exit 2, naming the folder), and ``--force`` moves the old folder aside instead of deleting it.
The shipped models' bytes are the same at the end.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_sentiment_tsv
from tests.store_guard import assert_shipped_untouched, repo_copy, shipped_hashes, train_cli

TINY = ["--seeds", "1", "--epochs", "1", "--hidden", "8", "--emb-dim", "8", "--limit", "200"]


def _published(result: subprocess.CompletedProcess[str], repo: Path) -> Path:
    """The folder a command says it published to (it must have succeeded)."""
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(r"^Published (\S+):(\S+) to (\S+)", result.stdout, re.M)
    assert found, result.stdout[-2000:]
    folder = Path(found.group(3))
    card = json.loads((folder / "card.json").read_text())
    assert (card["name"], card["version"]) == (found.group(1), found.group(2))
    assert card["schema_version"] == 2 and folder.is_relative_to(repo)
    return folder


def _data_flags(repo: Path) -> list[str]:
    """The default data when ../shared is there; else a small fixture given explicitly."""
    if (repo.parent / "shared" / "data" / "sst2" / "train.tsv").is_file():
        return []
    d = repo / "fixture"
    d.mkdir(exist_ok=True)
    train = write_sentiment_tsv(d / "train.tsv", 300, 1)
    dev = write_sentiment_tsv(d / "dev.tsv", 60, 2)
    return ["--train", str(train), "--dev", str(dev)]


@pytest.mark.slow
def test_train_and_export_never_touch_published_folders(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    before = shipped_hashes(repo)
    data = _data_flags(repo)
    models = repo / "models" / "sentiment"

    # (a) a dry run with default flags publishes under its run folder only
    dry = _published(train_cli(repo, "sentiment", "train", "--dry-run", *data), repo)
    assert dry.is_relative_to(repo / "runs" / "sentiment")
    dry_run_dir = dry.parents[3]
    assert (dry_run_dir / "run.json").is_file()

    # (b) a real run, default destination: the next free version of its name under models/
    real = _published(train_cli(repo, "sentiment", "train", *data, *TINY), repo)
    name = real.parent.name
    assert real.parent.parent == models and real.name not in {
        k.split("/")[2] for k in before if k.startswith(f"sentiment/{name}/")
    }
    real_run_dir = repo / "runs" / "sentiment" / name

    # (c) export with its defaults: the run's name, the next free version; a dry run's
    # members stay under their run folder
    dry_again = _published(
        train_cli(repo, "sentiment", "export", "--run-dir", str(dry_run_dir)), repo
    )
    assert dry_again.parent == dry.parent and dry_again.name == "2"
    again = _published(train_cli(repo, "sentiment", "export", "--run-dir", str(real_run_dir)), repo)
    assert again.parent == real.parent and int(again.name) == int(real.name) + 1

    # a taken version is refused at once, by train (before training) and by export
    taken = train_cli(repo, "sentiment", "train", "--name", "sst2-bilstm", "--version", "1", *data)
    assert taken.returncode == 2 and "models/sentiment/sst2-bilstm/1 already exists" in taken.stderr
    export = ["sentiment", "export", "--run-dir", str(real_run_dir), "--version", real.name]
    refused = train_cli(repo, *export)
    assert refused.returncode == 2
    assert f"{real.relative_to(repo)} already exists" in refused.stderr

    # --force publishes and keeps the old folder under models/.replaced/
    old_card = (real / "card.json").read_text()
    forced = train_cli(repo, *export, "--force")
    assert _published(forced, repo) == real and "was moved to" in forced.stdout
    [kept] = (repo / "models" / ".replaced" / "sentiment" / name).glob(f"{real.name}-*")
    assert (kept / "card.json").read_text() == old_card

    assert_shipped_untouched(before, repo)
