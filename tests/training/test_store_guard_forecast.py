"""Forecast commands never change a published model (issue 18).

Every ``seqserve-train forecast`` command that writes a model folder is run in a copy of the
repository, as a user would type it: a dry run with default flags, a real (tiny) run and an
export with the default destination, then a taken version (refused, exit 2) and ``--force``
(the old folder moved aside, kept). The shipped models must be byte for byte unchanged.
Runs on the M4 file when ../shared has it, and always on examples/data/shop_hourly.csv with
../shared removed from the copy. The whole file takes about a minute.

    pytest tests/training/test_store_guard_forecast.py -q
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from contract import card as cards
from contract import store
from tests.store_guard import (
    SHARED,
    assert_shipped_untouched,
    repo_copy,
    shipped_hashes,
    train_cli,
)

M4 = SHARED / "data" / "m4_hourly" / "Hourly-train.csv"
SHOP = "examples/data/shop_hourly.csv"
TINY = ["--epochs", "1", "--members", "1", "--hidden", "8", "--windows-per-epoch", "32"]
TINY += ["--batch-size", "32"]
SHIPPED = "models/forecast/m4-hourly-gru/1"


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def served(folder: Path) -> cards.ForecastCard:
    card = cards.read(folder)
    assert isinstance(card, cards.ForecastCard)
    assert (card.name, card.version) == (folder.parent.name, folder.name)
    assert card.training["name"] == card.name and card.training["version"] == card.version
    return card


def dry_runs(repo: Path, data: list[str], name: str, export: bool = True) -> None:
    """(a) train and export with --dry-run publish under the run folder, never in models/."""
    models = repo / "models"
    listed = sorted(p.relative_to(models) for p in models.rglob("*") if p.is_dir())
    ok(train_cli(repo, "forecast", "train", "--dry-run", *data))
    dry = repo / "runs" / "forecast" / f"{name}-dry-run"
    served(dry / "models" / "forecast" / name / "1")
    if export:
        ckpt = str(dry / "ckpt.pt")
        out = ok(train_cli(repo, "forecast", "export", "--checkpoint", ckpt, "--dry-run"))
        assert f"Published {name}:2 to {dry / 'models' / 'forecast' / name / '2'}" in out
    assert sorted(p.relative_to(models) for p in models.rglob("*") if p.is_dir()) == listed


def real_runs(repo: Path, data: list[str], name: str) -> None:
    """(b) train and (c) export with the default destination publish the next free versions;
    a taken version is refused before any work; --force moves the old folder aside."""
    models = repo / "models"
    new = store.next_version(models, "forecast", name)
    out = ok(train_cli(repo, "forecast", "train", *data, *TINY))
    dest = models / "forecast" / name / new
    assert f"Published {name}:{new} to {dest}" in out and f'"model": "{name}:{new}"' in out
    served(dest)

    ckpt = str(repo / "runs" / "forecast" / name / "ckpt.pt")
    out = ok(train_cli(repo, "forecast", "export", "--checkpoint", ckpt))
    nxt = str(int(new) + 1)
    assert f"Published {name}:{nxt}" in out  # the checkpoint's name, the next version
    served(models / "forecast" / name / nxt)

    refused = "runs/refused"
    r = train_cli(repo, "forecast", "train", *data, *TINY, "--out", SHIPPED, "--run-dir", refused)
    assert r.returncode == 2 and f"{SHIPPED} already exists" in r.stderr, r.stderr
    assert not (repo / refused).exists() and "Traceback" not in r.stderr
    flags = ["--name", "m4-hourly-gru", "--version", "1"]
    r = train_cli(repo, "forecast", "export", "--checkpoint", ckpt, *flags)
    assert r.returncode == 2 and f"{SHIPPED} already exists" in r.stderr, r.stderr

    old_card = (dest / "card.json").read_bytes()
    r = train_cli(repo, "forecast", "export", "--checkpoint", ckpt, "--version", new, "--force")
    assert "was moved to" in ok(r)
    (aside,) = (models / ".replaced" / "forecast" / name).iterdir()
    assert aside.name.startswith(f"{new}-") and (aside / "card.json").read_bytes() == old_card
    served(dest)


@pytest.mark.slow
@pytest.mark.skipif(not M4.is_file(), reason="needs ../shared/data/m4_hourly/Hourly-train.csv")
def test_forecast_commands_on_the_default_data(tmp_path: Path) -> None:
    repo = repo_copy(tmp_path)
    before = shipped_hashes(repo)
    dry_runs(repo, [], "m4-hourly-gru")
    real_runs(repo, [], "m4-hourly-gru")
    assert_shipped_untouched(before, repo)


@pytest.mark.slow
def test_forecast_commands_on_a_users_file_without_shared(tmp_path: Path) -> None:
    """Without ../shared: a clear error for the missing default data, and the same guarantees
    on the example file."""
    repo = repo_copy(tmp_path)
    (tmp_path / "shared").unlink(missing_ok=True)
    before = shipped_hashes(repo)
    r = train_cli(repo, "forecast", "train", "--dry-run")
    assert r.returncode == 1 and "pass --data" in r.stderr and "Traceback" not in r.stderr
    full = not M4.is_file()  # else the export and the publishing runs are covered above
    dry_runs(repo, ["--data", SHOP], "shop-hourly-gru", export=full)
    if full:
        real_runs(repo, ["--data", SHOP], "shop-hourly-gru")
    assert_shipped_untouched(before, repo)
