"""Distillation from a transformer teacher, end to end on fixture data with a tiny transformer.

The teacher here is a 2-layer BERT built from a config in the test (no weights downloaded):
``sentiment teacher`` fine-tunes it, ``sentiment transfer`` writes its probabilities for the
training texts and augmented copies, ``sentiment train --soft-labels`` trains the recurrent
student on both, and the exported student is served through the API.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FILLER, NEG_WORDS, POS_WORDS, write_sentiment_tsv
from training.cli import main
from training.sentiment.augment import MASK, Augmenter
from training.sentiment.train import distill_loss


@pytest.fixture(scope="module")
def tiny_transformer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(set(FILLER + NEG_WORDS + POS_WORDS))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(d / "vocab.txt")).save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(str(d))
    return d


def test_distill_loss_mixes_hard_and_soft_rows() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, -1, 1])  # row 1: augmented text, soft label only
    soft = torch.tensor([[0.9, 0.1], [0.2, 0.8], [float("nan"), float("nan")]])
    logp = torch.log_softmax(logits, -1)
    kd0 = -(soft[0] * logp[0]).sum()
    kd1 = -(soft[1] * logp[1]).sum()
    expected = (0.5 * -logp[0, 0] + 0.5 * kd0 + kd1 + -logp[2, 1]) / 3
    assert torch.allclose(distill_loss(logits, y, soft, 0.5), expected)
    # Without a teacher: plain cross-entropy over the labelled rows only.
    hard_only = distill_loss(logits, y, None, 0.5)
    assert torch.allclose(hard_only, (-logp[0, 0] - logp[2, 1]) / 2)


def test_augmenter_masks_replaces_and_samples_ngrams() -> None:
    corpus = [" ".join(FILLER + POS_WORDS + NEG_WORDS)] * 3
    aug = Augmenter(corpus, p_mask=0.3, p_replace=0.3, p_ngram=0.5, seed=1)
    source = ["the film is a very good story with a charming cast"]
    out = aug.many(source, copies=30)
    assert out and source[0] not in out and len(set(out)) == len(out)
    assert any(MASK in t for t in out)
    assert any(len(t.split()) <= 5 for t in out)  # n-gram samples
    vocab = set(corpus[0].split()) | {MASK}
    assert all(set(t.split()) <= vocab for t in out)


@pytest.mark.slow
def test_teacher_transfer_student_end_to_end(
    tmp_path: Path, tiny_transformer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_sentiment_tsv(tmp_path / "train.tsv", 400, 11)
    dev = write_sentiment_tsv(tmp_path / "dev.tsv", 80, 12)
    teacher = tmp_path / "teacher"
    common = ["--threads", "1"]
    labels = ["--label-names", "0=negative,1=positive"]
    rc = main(
        ["sentiment", "teacher", "--train", str(train), "--dev", str(dev)]
        + ["--run-dir", str(teacher), *labels]
        + ["--teacher-base", str(tiny_transformer), "--epochs", "6", "--lr", "1e-3"]
        + ["--batch-size", "16", "--eval-every", "50", *common]
    )
    assert rc == 0
    teacher_acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["dev_accuracy"]
    assert teacher_acc >= 0.8, teacher_acc  # the fixture task is separable

    transfer = tmp_path / "transfer.jsonl"
    rc = main(
        ["sentiment", "transfer", "--teacher", str(teacher), "--train", str(train)]
        + ["--out", str(transfer), "--copies", "2", "--augment-min-words", "4", *common]
    )
    assert rc == 0
    info = json.loads(transfer.with_suffix(".json").read_text())
    rows = [json.loads(line) for line in transfer.read_text().splitlines()]
    assert info["augmented_texts"] > 0
    assert len(rows) == info["labelled_train_texts"] + info["augmented_texts"]
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-3 for r in rows)

    out = tmp_path / "models" / "sentiment" / "student" / "1"
    rc = main(
        ["sentiment", "train", "--train", str(train), "--dev", str(dev)]
        + ["--run-dir", str(tmp_path / "run"), "--soft-labels", str(transfer)]
        + ["--out", str(out), "--name", "student", "--seeds", "1", "--epochs", "6"]
        + ["--emb-dim", "16", "--hidden", "16", "--lr", "0.01", "--dropout", "0.1", *common]
        + labels
    )
    assert rc == 0
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["dev_accuracy"] >= 0.8
    assert card["parity"]["max_abs_diff_probabilities"] <= 1e-4
    assert "distilled from a transformer teacher" in card["description"]
    ts = card["training"]["train_config"]["transfer_set"]
    assert ts["augmented_texts"] == info["augmented_texts"]
    assert ts["teacher_dev_accuracy"] == pytest.approx(teacher_acc)
    assert card["latency_review"]["words"] == 230

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(models_dir=tmp_path / "models"))) as client:
        r = client.post("/sentiment", json={"texts": ["a wonderful charming film", "dull flat"]})
        assert r.status_code == 200, r.text
        labels = [x["label"] for x in r.json()["results"]]
        assert labels == ["positive", "negative"]
        assert np.isclose(sum(r.json()["results"][0]["probabilities"].values()), 1, atol=1e-5)
