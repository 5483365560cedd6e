"""Shared fixtures: an app on the shipped models, and tiny models trained on fixture data."""

from __future__ import annotations

import os

# The tests set every setting they rely on: none comes from the developer's shell (SEQSERVE_*)
# or from a .env in the folder pytest runs in. Cleared before anything imports the app, and
# inherited by the servers and commands the tests start.
for _key in [k for k in os.environ if k.startswith("SEQSERVE_")]:
    del os.environ[_key]

import random  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

Settings.model_config["env_file"] = None

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
# Requests that do real work on the shipped models (all M4 series, whole IMDb reviews, NAB
# files) take seconds; on a loaded machine the 10 s default deadline would turn them into 503s.
TEST_DEADLINE_MS = 300_000


POS_WORDS = ["good", "great", "wonderful", "moving", "witty", "brilliant", "charming", "fine"]
NEG_WORDS = ["bad", "awful", "dull", "boring", "tedious", "weak", "clumsy", "flat"]
FILLER = ["the", "film", "is", "a", "story", "with", "plot", "and", "cast", "very", "quite"]


def write_sentiment_tsv(path: Path, n: int, seed: int) -> Path:
    """A separable toy dataset in SST-2's format: label words mixed into filler words."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 12))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(POS_WORDS if label else NEG_WORDS))
        lines.append(" ".join(words) + f"\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def sentiment_fixture_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sst_fixture")
    return write_sentiment_tsv(d / "train.tsv", 600, 1), write_sentiment_tsv(d / "dev.tsv", 100, 2)


@pytest.fixture(scope="session")
def tiny_sentiment_models(
    tmp_path_factory: pytest.TempPathFactory, sentiment_fixture_data: tuple[Path, Path]
) -> Path:
    """A models dir holding one tiny sentiment model trained from the fixture data."""
    from training.cli import main

    train, dev = sentiment_fixture_data
    root = tmp_path_factory.mktemp("models")
    run = tmp_path_factory.mktemp("run")
    rc = main(
        [
            "sentiment",
            "train",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--run-dir",
            str(run),
            "--out",
            str(root / "sentiment" / "toy" / "1"),
            "--name",
            "toy",
            "--label-names",
            "0=negative,1=positive",
            "--epochs",
            "8",
            "--patience",
            "8",
            "--lr",
            "0.01",
            "--dropout",
            "0.1",
            "--emb-dim",
            "16",
            "--hidden",
            "16",
            "--seeds",
            "1",
            "2",
            "--threads",
            "1",
            "--batch-size",
            "32",
        ]
    )
    assert rc == 0
    return root


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The real app on the shipped models (lifespan runs: models load as in production)."""
    settings = Settings(models_dir=MODELS, request_deadline_ms=TEST_DEADLINE_MS)
    with TestClient(create_app(settings)) as c:
        yield c


LM_LINES = [
    " = Happy birthday = ",
    " Happy birthday , my friend ! The well @-@ known band played for 1 @,@ 000 people . ",
    " I don 't think John 's car cost 3 @.@ 5 million dollars in the U.S. , Mr. Smith said . ",
    " The players ' fees rose ; the team 's <unk> ( a new stadium ) was \" great \" ... ",
    ' My friend said : " Happy birthday ! " and the band played again . ',
    " In 1998 the band was well @-@ known for a 2 @,@ 500 @-@ seat show . ",
]


@pytest.fixture(scope="session")
def tiny_lm_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with one tiny word-level LSTM LM trained on a WikiText-style fixture."""
    from tests.helpers import train_and_export_lm

    root = tmp_path_factory.mktemp("lm")
    train, valid = root / "train.txt", root / "valid.txt"
    train.write_text("\n".join(LM_LINES * 10) + "\n", encoding="utf-8")
    valid.write_text("\n".join(LM_LINES[1:] * 3) + "\n", encoding="utf-8")
    models = root / "models"
    train_and_export_lm(train, valid, root / "run", models / "next-word" / "tiny-lm" / "1")
    return models


@pytest.fixture(scope="session")
def tiny_forecast_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with one tiny forecaster (window 48, horizon 24) trained on fixture series."""
    import csv

    import numpy as np

    from training.cli import main

    root = tmp_path_factory.mktemp("fc")
    rows = []
    for i, n in enumerate([200, 260, 230, 300]):
        t = np.arange(n)
        v = 50 + 10 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(i).normal(0, 1, n)
        rows.append([f"H{i + 1}"] + [f"{x:.3f}" for x in v])
    width = max(len(r) for r in rows)
    with open(root / "wide.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"V{i + 1}" for i in range(width)])
        for r in rows:
            w.writerow(r + [""] * (width - len(r)))
    assert (
        main(
            [
                "forecast",
                "train",
                "--data",
                str(root / "wide.csv"),
                "--dry-run",
                "--window",
                "48",
                "--horizon",
                "24",
                "--holdout",
                "24",
                "--name",
                "tiny-fc",  # a dry run publishes tiny-fc:1 under the run folder's models/
                "--run-dir",
                str(root / "run"),
            ]
        )
        == 0
    )
    return root / "run" / "models"


@pytest.fixture(scope="session")
def tiny_anomaly_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir with one tiny anomaly detector (GRU, hidden 8) trained on fixture series."""
    import csv

    import numpy as np

    from training.cli import main

    root = tmp_path_factory.mktemp("an")
    rng = np.random.default_rng(0)
    with open(root / "m4.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["V1"] + [f"V{i}" for i in range(2, 402)])
        for k in range(6):
            v = 50 + 10 * np.sin(np.arange(400) * 2 * np.pi / 24 + k) + rng.normal(0, 1, 400)
            w.writerow([f"H{k}"] + [f"{x:.3f}" for x in v])
    rc = main(
        [
            "anomaly",
            "train",
            "--data",
            str(root / "m4.csv"),
            "--dry-run",  # publishes tiny-an:1 under the run folder's models/
            "--name",
            "tiny-an",
            "--run-dir",
            str(root / "run"),
            "--scoring",
            '{"warmup": 60, "long": 200, "min_history": 20}',
        ]
    )
    assert rc == 0
    return root / "run" / "models"
