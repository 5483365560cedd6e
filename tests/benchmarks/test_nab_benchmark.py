"""benchmarks/nab.py: NAB's results layout and table on fixtures; with ../shared present, the
shipped detector through the API scored by NAB's own scorer gives the card's figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from benchmarks import nab
from tests.conftest import MODELS, REPO, TEST_DEADLINE_MS
from training.anomaly.data import NabSeries, read_nab
from training.anomaly.evaluate import SCORER, run_scorer, write_results

SHARED = REPO.parent / "shared"


def test_results_layout_and_table(tmp_path: Path) -> None:
    series = NabSeries(
        "catA/one.csv", ["2020-01-01 00:00:00", "2020-01-01 00:05:00"], np.asarray([1.0, 2.5])
    )
    root = write_results(tmp_path, "mine", [series], [np.asarray([0.0, 0.75])])
    with open(root / "catA" / "mine_one.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [
        {"timestamp": "2020-01-01 00:00:00", "value": "1.0", "anomaly_score": "0.000000"},
        {"timestamp": "2020-01-01 00:05:00", "value": "2.5", "anomaly_score": "0.750000"},
    ]
    text = nab.table(
        {"standard": 70.0, "reward_low_FP_rate": 60.0, "reward_low_FN_rate": 75.0}, "m:1"
    )
    lines = text.splitlines()
    assert lines[2] == "| ARTime | 73.6 |" and lines[3] == "| **seqserve m:1** | 70.0 |"
    assert "reward_low_FN_rate 75.0" in text


@pytest.mark.skipif(not (SHARED / "data" / "nab").is_dir(), reason="needs ../shared/data/nab")
def test_shipped_detector_through_the_api_matches_its_card(tmp_path: Path) -> None:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        models_dir=MODELS,
        max_body_bytes=64 << 20,
        state_secret="t" * 32,
        request_deadline_ms=TEST_DEADLINE_MS,  # long NAB files on a loaded machine
    )
    with TestClient(create_app(settings)) as c:
        nab_series = read_nab(SHARED / "data" / "nab")
        scores_per = []
        for s in nab_series:
            r = c.post(
                "/anomaly",
                json={
                    "series": [
                        {
                            "values": s.values.tolist(),
                            "timestamps": [t.replace(" ", "T") for t in s.timestamps],
                        }
                    ]
                },
            )
            assert r.status_code == 200, (s.key, r.text)
            scores_per.append(np.asarray(r.json()["results"][0]["scores"]))
    assert len(nab_series) == 31
    scores = run_scorer(
        write_results(tmp_path / "res", nab.NAME, nab_series, scores_per), nab.NAME, SCORER
    )
    # the default anomaly model (what a request without "model" gets), as pinned in defaults.json
    name, version = json.loads((MODELS / "defaults.json").read_text())["anomaly"].split(":")
    card = json.loads((MODELS / "anomaly" / name / version / "card.json").read_text())
    for profile, value in card["metrics"]["nab"].items():
        assert scores[profile] == pytest.approx(value, abs=0.02), profile
