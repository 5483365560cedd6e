"""Run training commands in a throw-away copy of the repository and prove the shipped models
are untouched: the sha256 of every file under ``models/`` (and ``models/defaults.json``) is the
same after as before. Used by ``tests/training/test_store_guard_<task>.py``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def repo_copy(tmp: Path) -> Path:
    """A copy of the working tree (no .git, no runs) with ``../shared`` beside it when the real
    one exists, so commands with default data paths find the data as in the real checkout."""
    dest = tmp / "repo"
    shutil.copytree(
        REPO,
        dest,
        ignore=shutil.ignore_patterns(".git", "runs", "__pycache__", "*.egg-info", ".mypy_cache"),
    )
    if SHARED.is_dir():
        (tmp / "shared").symlink_to(SHARED)
    return dest


def shipped_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file of the shipped model folders and of defaults.json."""
    models = repo / "models"
    out = {}
    for p in sorted(models.rglob("*")):
        rel = p.relative_to(models)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def train_cli(repo: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m training.cli ARGV`` run from ``repo`` (so relative paths resolve there), with
    no SEQSERVE_* variables of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    env["PYTHONPATH"] = str(repo)
    return subprocess.run(
        [sys.executable, "-m", "training.cli", *argv],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_shipped_untouched(before: dict[str, str], repo: Path) -> None:
    """Every shipped file is byte-for-byte the same, and no file appeared inside a shipped
    version folder (new versions and names beside them are fine)."""
    after = shipped_hashes(repo)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"shipped model files changed or removed: {changed}"
    shipped_folders = {str(Path(k).parent) for k in before if len(Path(k).parts) == 4}
    added = [k for k in after if k not in before and str(Path(k).parent) in shipped_folders]
    assert not added, f"files added inside shipped model folders: {added}"
