"""'Train on your own data': the README's commands, run as written on the shipped example files,
then the new model is queried through the API. Plus the checks that stop bad data early."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import REPO
from training.cli import main as train_main


def readme_block(name: str) -> list[list[str]]:
    """The shell commands of one README section, joined across line continuations."""
    text = (REPO / "README.md").read_text()
    block = text.split(f"<!-- own-data:{name}:begin -->", 1)[1].split(
        f"<!-- own-data:{name}:end -->"
    )[0]
    body = re.search(r"```bash\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]
    return [shlex.split(cmd) for cmd in body.replace("\\\n", " ").splitlines() if cmd.strip()]


def _relocate(argv: list[str]) -> list[str]:
    """The commands run in a temporary folder (runs/ and models/ land there); the example files
    are read from the repository."""
    return [str(REPO / a) if a.startswith("examples/") else a for a in argv]


@pytest.mark.slow
def test_readme_text_classification_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    commands = readme_block("sentiment")
    train = next(c for c in commands if c[0] == "seqserve-train")
    assert train_main(_relocate(train[1:])) == 0
    out = capsys.readouterr().out
    assert "seqserve serve" in out and "curl -s localhost:8000/sentiment" in out
    card = json.loads((tmp_path / "models/sentiment/reviews/1/card.json").read_text())
    assert card["labels"] == ["mixed", "negative", "positive"]
    assert card["label_counts_train"] == {"mixed": 80, "negative": 80, "positive": 80}
    assert (
        "reviews_train.csv (240 rows)" in card["description"] and "SST-2" not in card["description"]
    )
    assert card["name"] == "reviews" and card["version"] == "1"
    assert [d["rows"] for d in card["datasets"] if d["role"] == "train"] == [240]
    assert (tmp_path / "runs/sentiment/reviews/run.json").is_file()
    assert card["metrics"]["dev_accuracy"] >= 0.9
    curl = next(c for c in commands if c[0] == "curl")
    body = json.loads(curl[curl.index("-d") + 1])
    with TestClient(create_app(Settings(models_dir=tmp_path / "models"))) as client:
        listed = client.get("/v1/models").json()["models"]
        assert [m["name"] for m in listed] == ["reviews"]
        r = client.post("/sentiment", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["label"] == "positive"
        assert set(r.json()["probabilities"]) == {"mixed", "negative", "positive"}


@pytest.mark.slow
def test_raw_labels_are_served_as_found(tmp_path: Path) -> None:
    rows = [(t, s) for t, s in _example_rows() if s != "3"]  # a two-class file: 1 and 5
    train = _write(tmp_path / "two.csv", rows)
    args = ["sentiment", "train", "--train", str(train), "--dev", str(train), "--text-column"]
    args += ["review", "--label-column", "stars", "--seeds", "1", "--epochs", "2", "--emb-dim"]
    args += ["16", "--hidden", "16", "--threads", "1", "--run-dir", str(tmp_path / "run")]
    args += ["--out", str(tmp_path / "m/sentiment/stars/1")]
    assert train_main(args) == 0
    card = json.loads((tmp_path / "m/sentiment/stars/1/card.json").read_text())
    assert card["labels"] == ["1", "5"]  # not "positive": no silent SST-2 mapping
    assert card["name"] == "stars" and card["training"]["text_column"] == "review"

    # the same run published under another name: the card says that name and no other
    export = ["sentiment", "export", "--run-dir", str(tmp_path / "run"), "--name", "stars2"]
    assert train_main([*export, "--models-dir", str(tmp_path / "m")]) == 0
    card = json.loads((tmp_path / "m/sentiment/stars2/1/card.json").read_text())
    assert (card["name"], card["version"], card["labels"]) == ("stars2", "1", ["1", "5"])
    assert "stars" not in card["description"] and "name" not in card["training"]


def _example_rows() -> list[tuple[str, str]]:
    import csv

    with open(REPO / "examples/data/reviews_train.csv", newline="") as fh:
        return [(r["review"], r["stars"]) for r in csv.DictReader(fh)]


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["review", "stars"])
        w.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ([("good", "5")] * 20, [], "only one class"),
        ([("good", "5")] * 20 + [("bad", "1")] * 2, [], "fewer than 5 training examples"),
        ([("good", "5")] * 20, ["--text-column", "text"], "no column 'text' (--text-column)"),
        ([("good", "5"), ("", "1")] * 10, [], "empty 'review'"),
        (
            [("good", "5")] * 10 + [("bad", "1")] * 10,
            ["--label-names", "1negative"],
            "--label-names must look like",
        ),
        (
            [("good", "5")] * 10 + [("bad", "1")] * 10,
            ["--label-names", "1=neg,4=pos"],
            "does not match the labels in the data (1, 5): no name for 5; 4 does not occur",
        ),
        (
            [("good", "5")] * 10 + [("bad", "1")] * 10,
            ["--label-names", "1=neg,5=pos,3=mixed"],
            "3 does not occur",
        ),
    ],
)
def test_bad_data_stops_before_training_with_a_clear_message(
    tmp_path: Path, rows: list[tuple[str, str]], flags: list[str], message: str
) -> None:
    path = _write(tmp_path / "d.csv", rows)
    args = [
        "sentiment",
        "train",
        "--train",
        str(path),
        "--dev",
        str(path),
        "--text-column",
        "review",
    ]
    args += ["--label-column", "stars", "--run-dir", str(tmp_path / "run"), "--no-export", *flags]
    with pytest.raises(SystemExit) as exc:
        train_main(args)
    assert message in str(exc.value)
    assert not (tmp_path / "run" / "run.json").exists()
