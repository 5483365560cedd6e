"""Temperature scaling (training/common/calibration.py) and the labels a binary model is
trained on from three-class data (``--label-names neutral=-``), through the real CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FILLER, NEG_WORDS, POS_WORDS
from training.cli import main
from training.common import calibration as cal
from training.common.onnx_utils import ort_session
from training.sentiment import tokenizer as toks


def _three_class(path: Path, n: int, seed: int) -> Path:
    """negative / neutral / positive rows (neutral: filler only), with standard quoting."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(n):
        label = ("negative", "neutral", "positive")[i % 3]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
        if label != "neutral":
            words.insert(
                rng.randint(0, len(words)),
                rng.choice(POS_WORDS if label == "positive" else NEG_WORDS),
            )
        lines.append(" ".join(words) + f"\t{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_fitted_temperature_undoes_over_confidence() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=(4000, 3))
    true = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in true])
    sharp = cal.scale(true, 1 / 3)  # a model three times too confident
    t = cal.fit_temperature([(sharp, y)])
    assert t == pytest.approx(3.0, rel=0.15)
    assert cal.ece(cal.scale(sharp, t), y) < cal.ece(sharp, y) / 3
    np.testing.assert_array_equal(cal.scale(sharp, t).argmax(1), sharp.argmax(1))  # same labels


def test_ece_of_a_perfectly_calibrated_and_a_certain_wrong_model() -> None:
    y = np.array([0, 1] * 50)
    assert cal.ece(np.tile([0.5, 0.5], (100, 1)), y) == pytest.approx(0.0)
    wrong = np.eye(2)[1 - y]
    assert cal.ece(wrong, y) == pytest.approx(1.0)


def test_binary_model_from_three_classes_and_calibrated_export(tmp_path: Path) -> None:
    """neutral=- drops the neutral rows; --calibrate bakes a temperature into the graph: its
    probabilities are those of the plain export, scaled, with the same labels."""
    train = _three_class(tmp_path / "train.tsv", 300, 1)
    dev = _three_class(tmp_path / "dev.tsv", 90, 2)
    run = tmp_path / "run"
    spec = "negative=negative,positive=positive,neutral=-"
    args = ["--train", str(train), "--dev", str(dev), "--run-dir", str(run), "--threads", "1"]
    args += ["--label-names", spec, "--seeds", "1", "--epochs", "2", "--emb-dim", "8"]
    assert main(["sentiment", "train", *args, "--hidden", "8", "--no-export"]) == 0
    summary = json.loads((run / "run.json").read_text())
    assert summary["label_counts"] == {"negative": 100, "positive": 100}
    outs = {}
    for flag in ("--no-calibrate", "--calibrate"):
        dest = tmp_path / "models" / "sentiment" / "toy" / ("2" if flag == "--calibrate" else "1")
        assert main(["sentiment", "export", "--run-dir", str(run), "--out", str(dest), flag]) == 0
        outs[flag] = dest
    card = json.loads((outs["--calibrate"] / "card.json").read_text())
    t = card["calibration"]["temperature"]
    assert card["labels"] == ["negative", "positive"]
    assert set(card["calibration"]["ece_after_cross_fitted"]) == {"dev"}
    assert "dev_calibration_error" in card["metrics"]
    tok = toks.load(outs["--calibrate"] / "tokenizer.json")
    for row in toks.encode_batch(tok, ["good fine film", "bad plot", "the story"], 64):
        ids = np.asarray([row], dtype=np.int64)
        plain, scaled = (
            ort_session(outs[f] / "model.onnx").run(None, {"input_ids": ids})[0] for f in outs
        )
        np.testing.assert_allclose(scaled, cal.scale(plain, t), atol=1e-5)
