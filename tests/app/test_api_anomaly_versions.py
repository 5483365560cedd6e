"""Every published nab-gru version through the API equals the scoring contract run directly
(onnxruntime + contract.anomaly), and nab-gru:1 still serves its own card's behaviour."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract import anomaly as sc

ROOT = Path(__file__).resolve().parents[2]
CARDS = sorted((ROOT / "models" / "anomaly" / "nab-gru").glob("*/card.json"))


def series(n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    v = 40 + 4 * np.sin(2 * np.pi * t / 96) + rng.normal(0, 0.4, n)
    v[1500:] += 3.0  # a level shift
    v[1800] += 15  # a spike
    return v.tolist()


def direct(card_path: Path, values: list[float]) -> np.ndarray:
    import onnxruntime as ort

    card = json.loads(card_path.read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(card_path.parent / card["onnx"]["file"]), opts)
    names = [o["name"] for o in card["onnx"]["outputs"]]
    in_name = card["onnx"]["inputs"][0]["name"]

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, log_scale = sess.run(names, {in_name: x.astype(np.float32)})
        return mean, log_scale

    return sc.score_series(np.asarray(values), run, card)


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: "nab-gru:" + p.parent.name)
def test_served_scores_equal_the_contract(client: TestClient, card_path: Path) -> None:
    v = series()
    ref = f"nab-gru:{card_path.parent.name}"
    r = client.post("/anomaly", json={"series": [{"values": v}], "model": ref})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    want = direct(card_path, v)
    np.testing.assert_allclose(res["scores"], want, atol=1e-6)
    card = json.loads(card_path.read_text())
    assert res["threshold"] == card["threshold"]
    assert res["anomalies"] == np.flatnonzero(want >= card["threshold"]).tolist()
    # causal through the API too: a prefix gets the prefix of the scores
    part = client.post("/anomaly", json={"series": [{"values": v[:1600]}], "model": ref})
    np.testing.assert_allclose(part.json()["results"][0]["scores"], res["scores"][:1600], atol=1e-6)


def test_the_readme_jump_is_one_alarm_on_every_version(client: TestClient) -> None:
    v = [round(70 + 3 * math.sin(i / 12) + 0.1 * (i % 5), 2) for i in range(800)]
    v[700] = 95
    for card_path in CARDS:
        ref = f"nab-gru:{card_path.parent.name}"
        r = client.post("/anomaly", json={"series": [{"values": v}], "model": ref})
        assert r.json()["results"][0]["anomalies"] == [700], ref
