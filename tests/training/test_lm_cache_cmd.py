"""``seqserve-train lm cache`` on tiny LSTM and GRU models: a new version with the cache,
served, and its /next-word/score equal to the graphs plus contract.lm_cache run here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from app.main import create_app
from app.settings import Settings
from contract import lm_cache
from contract.lm_cache import CacheParams, History
from tests.conftest import LM_LINES
from tests.helpers import TINY_LM, train_and_export_lm
from training.cli import main


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_cache_command_publishes_a_served_version(tmp_path: Path, cell: str) -> None:
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(LM_LINES * 10) + "\n", encoding="utf-8")
    valid.write_text("\n".join(LM_LINES[1:] * 6) + "\n", encoding="utf-8")
    models = tmp_path / "models"
    first = models / "next-word" / "tiny" / "1"
    train_and_export_lm(train, valid, tmp_path / "run", first, (*TINY_LM, "--cell", cell))
    args = ["lm", "cache", "--model", str(first), "--dev", str(valid), "--text-tokens", "60"]
    assert main([*args, "--models-dir", str(models), "--name", "tiny"]) == 0
    second = models / "next-word" / "tiny" / "2"
    card = json.loads((second / "card.json").read_text())
    c = card["cache"]
    assert c["output"] == "hidden" and c["window"] >= 1 and 0 < c["lambda"] < 1
    assert card["metrics"]["cache"]["held_out"]["top_k"]["positions"] > 0
    assert card["derived_from"] == "tiny:1"
    assert not (first / "cache_grid.json").exists()  # the source version is untouched

    text = " ".join(LM_LINES[1:3] * 3)
    with TestClient(create_app(Settings(models_dir=models))) as client:
        r = client.post("/next-word/score", json={"text": text, "model": "tiny:2"})
        assert r.status_code == 200 and r.json()["cache"] is True
        served = r.json()["log_likelihood"]
        r = client.post("/next-word", json={"text": text, "model": "tiny:2", "complete": 3})
        assert r.status_code == 200 and len(r.json()["completion_tokens"]) == 3

    # the same number from the graph and the contract, without the server
    tok = Tokenizer.from_file(str(second / "tokenizer.json"))
    feed = np.asarray([card["start_token"]["id"], *tok.encode(text).ids], np.int64)[None, :]
    s = ort.InferenceSession(str(second / card["score_onnx"]["file"]))
    state = {
        n: np.zeros((card["state"]["layers"], 1, card["state"]["hidden_size"]), np.float32)
        for n in card["state"]["inputs"]
    }
    names = [t if isinstance(t, str) else t["name"] for t in card["score_onnx"]["inputs"]]
    out = card["score_onnx"]["outputs"][0]
    out = out if isinstance(out, str) else out["name"]
    lp, hidden = s.run([out, "hidden"], {names[0]: feed[:, :-1], names[1]: feed[:, 1:], **state})
    p = CacheParams(c["theta"], c["lambda"], c["window"], c["ramp"])
    mixed, _ = lm_cache.score(lp[0], hidden[0], feed[0, 1:], History.empty(hidden.shape[-1]), p)
    assert served == pytest.approx(float(mixed.sum(dtype=np.float64)), abs=1e-3)
