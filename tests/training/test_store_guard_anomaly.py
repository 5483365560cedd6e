"""Every anomaly training and export command, run in a copy of the repository, publishes a new
version (or under the run folder for --dry-run) and never changes a shipped model folder.

Runs with or without ../shared: without it the default training files are missing and the
trainer uses synthetic series (a note says so; tests/training/test_anomaly_training.py checks that path).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from contract.store import versions
from tests.store_guard import (
    assert_shipped_untouched,
    repo_copy,
    shipped_hashes,
    train_cli,
)

pytestmark = pytest.mark.slow

# a non-dry run that still takes seconds: the destination rules are what is tested here
TINY = (
    "--steps", "8", "--eval-every", "8", "--seq-len", "256", "--chunk", "64",
    "--batch-size", "4", "--hidden", "4", "--val-batches", "1",
)  # fmt: skip


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_anomaly_commands_publish_new_versions_only(tmp_path):
    repo = repo_copy(tmp_path)
    before = shipped_hashes(repo)
    models = repo / "models"
    shipped = versions(models, "anomaly", "nab-gru")
    assert shipped, "the shipped nab-gru model is missing from the copy"
    nxt = str(int(shipped[-1]) + 1)

    # (a) --dry-run with default flags: checkpoint and model under the run folder only
    out = _ok(train_cli(repo, "anomaly", "train", "--dry-run"))
    dry = repo / "runs" / "anomaly" / "nab-gru-dry-run"
    assert (dry / "ckpt.pt").is_file()
    card = _card(dry / "models" / "anomaly" / "nab-gru" / "1")
    assert (card["schema_version"], card["name"], card["version"]) == (2, "nab-gru", "1")
    assert f"Published nab-gru:1 to {dry.resolve()}" in out
    assert versions(models, "anomaly", "nab-gru") == shipped

    # (b) a real (tiny) run with the default destination: the next free version
    out = _ok(train_cli(repo, "anomaly", "train", *TINY, "--no-nab"))
    new = models / "anomaly" / "nab-gru" / nxt
    card = _card(new)
    assert (card["name"], card["version"]) == ("nab-gru", nxt)
    assert all(d.get("role") for d in card["datasets"])
    assert card["training"]["steps"] == 8
    assert f"Published nab-gru:{nxt} to" in out
    assert (repo / "runs" / "anomaly" / "nab-gru" / "ckpt.pt").is_file()

    # (c) export with its default destination: the dry run's checkpoint stays under its run
    # folder; the real run's becomes the version after nxt (--no-nab: NAB's scorer alone takes
    # 10-40 s and says nothing about where files go)
    dry_ckpt = "runs/anomaly/nab-gru-dry-run/ckpt.pt"
    out = _ok(train_cli(repo, "anomaly", "export", "--checkpoint", dry_ckpt, "--no-nab"))
    assert "holds a dry run" in out
    assert _card(dry / "models" / "anomaly" / "nab-gru" / "2")["version"] == "2"
    ckpt = "runs/anomaly/nab-gru/ckpt.pt"
    after = str(int(nxt) + 1)
    _ok(train_cli(repo, "anomaly", "export", "--checkpoint", ckpt, "--no-nab"))
    assert _card(models / "anomaly" / "nab-gru" / after)["version"] == after
    assert versions(models, "anomaly", "nab-gru") == [*shipped, nxt, after]

    # publishing onto a taken version is refused, naming the folder, before any training
    taken = Path("models") / "anomaly" / "nab-gru" / shipped[0]
    for argv in (
        ("export", "--checkpoint", ckpt, "--version", shipped[0]),
        ("train", *TINY, "--out", str(taken), "--run-dir", "runs/refused"),
    ):
        result = train_cli(repo, "anomaly", *argv)
        assert result.returncode == 2, result.stderr
        assert f"{taken} already exists" in result.stderr
    assert not (repo / "runs" / "refused").exists()

    # --force moves the old folder aside (kept under models/.replaced/), never deletes it
    old_onnx = _sha(new / "model.onnx")
    force = ["--version", nxt, "--force", "--models-dir", "models", "--no-nab"]
    out = _ok(train_cli(repo, "anomaly", "export", "--checkpoint", dry_ckpt, *force))
    kept = list((models / ".replaced" / "anomaly" / "nab-gru").glob(f"{nxt}-*"))
    assert len(kept) == 1 and _sha(kept[0] / "model.onnx") == old_onnx
    assert str(kept[0]) in out
    assert _sha(new / "model.onnx") != old_onnx

    assert_shipped_untouched(before, repo)
