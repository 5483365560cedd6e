"""Whole reviews and hostile text through /sentiment: limits, truncation flag, normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.services.common import normalize_text
from app.services.sentiment import length_buckets
from app.settings import Settings

REVIEW = (
    "I went in expecting little and came out moved.<br /><br />The cast is superb, the "
    "writing is sharp and the last act is one of the most affecting things I have seen in "
    "years. "
)


def test_a_whole_review_at_the_limit_is_read_whole(client: TestClient) -> None:
    limit = Settings().max_text_chars
    assert limit >= 20_000
    text = (REVIEW * (limit // len(REVIEW) + 1))[:limit]
    r = client.post("/sentiment", json={"text": text})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["truncated"] is False and body["tokens"] > 3000
    assert body["label"] == "positive"
    r = client.post("/sentiment", json={"text": text + "!"})
    assert r.status_code == 413
    assert f"{limit + 1} characters; the limit is {limit}" in r.json()["error"]["message"]


def test_long_review_in_a_batch_changes_nothing_for_short_texts(client: TestClient) -> None:
    texts = ["a gorgeous, witty, moving film", REVIEW * 40, "dull and tedious", "fine"]
    batch = client.post("/sentiment", json={"texts": texts}).json()["results"]
    for text, got in zip(texts, batch, strict=True):
        alone = client.post("/sentiment", json={"text": text}).json()
        assert got["probabilities"]["positive"] == pytest.approx(
            alone["probabilities"]["positive"], abs=1e-5
        )


@pytest.mark.parametrize(
    ("hostile", "equivalent"),
    [
        ("good \ud800 film", "good \ufffd film"),  # lone surrogate (valid JSON, not UTF-8)
        ("good\x00film", "good film"),  # NUL
        ("good\x1b[31m film", "good [31m film"),  # terminal escape
        ("good [PAD] film", "good [UNK] film"),  # the pad token typed as text
    ],
)
def test_hostile_text_has_a_defined_answer(
    client: TestClient, hostile: str, equivalent: str
) -> None:
    raw = json.dumps({"text": hostile})  # json.dumps escapes the surrogate as \ud800
    r = client.post("/sentiment", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    same = client.post("/sentiment", json={"text": equivalent}).json()
    assert r.json()["probabilities"] == pytest.approx(same["probabilities"], abs=1e-6)


def test_text_of_only_control_characters_is_empty(client: TestClient) -> None:
    r = client.post("/sentiment", json={"text": "\x00\x01\x02"})
    assert r.status_code == 422 and "text is empty" in r.json()["error"]["message"]


def test_truncated_only_when_tokens_are_really_dropped(tiny_sentiment_models: Path) -> None:
    card = json.loads((tiny_sentiment_models / "sentiment/toy/1/card.json").read_text())
    max_len = card["tokenizer"]["max_length"]
    with TestClient(create_app(Settings(models_dir=tiny_sentiment_models))) as c:
        exact = c.post("/sentiment", json={"text": "good " * max_len}).json()
        assert exact["truncated"] is False and exact["tokens"] == max_len
        over = c.post("/sentiment", json={"text": "good " * (max_len + 5)}).json()
        assert over["truncated"] is True and over["tokens"] == max_len + 5


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_normalized_text_is_always_encodable_and_tokenizable(text: str) -> None:
    from tokenizers import Tokenizer

    clean = normalize_text(text)
    assert len(clean) == len(text)  # one character for one: positions and limits stay meaningful
    clean.encode("utf-8")  # no lone surrogates left
    assert not any(ord(ch) < 32 and ch not in "\t\n\r" for ch in clean)
    if text.isprintable() and text.isascii():
        assert clean == text
    Tokenizer.from_file(str(_TOKENIZER)).encode(clean)


_TOKENIZER = next(Path(__file__).resolve().parents[2].glob("models/sentiment/*/*/tokenizer.json"))


@given(st.lists(st.integers(1, 3000), min_size=1, max_size=64))
@settings(max_examples=200, deadline=None)
def test_length_buckets_cover_every_item_once_with_bounded_padding(lengths: list[int]) -> None:
    runs = length_buckets(lengths)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))
    for run in runs:
        longest = max(lengths[i] for i in run)
        real = sum(lengths[i] for i in run)
        assert len(run) == 1 or longest * len(run) <= 1.25 * real + 8 or longest * len(run) <= 64


def test_length_buckets_keep_short_texts_apart_from_a_long_one() -> None:
    runs = length_buckets([20, 22, 2000, 19, 21])
    assert [2] in runs
    assert np.array_equal(sorted(next(r for r in runs if 0 in r)), [0, 1, 3, 4])


IMDB_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "imdb" / "dev.tsv"


@pytest.mark.skipif(not IMDB_DEV.exists(), reason="needs ../shared/data/imdb/dev.tsv")
def test_every_imdb_dev_review_is_accepted_and_read_whole(client: TestClient) -> None:
    """The user's first hour: real movie reviews, sent as they are, through the API."""
    import csv

    with open(IMDB_DEV, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    right, batch = 0, Settings().max_texts  # the ``client`` fixture's limit
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        r = client.post("/sentiment", json={"texts": [row["sentence"] for row in chunk]})
        assert r.status_code == 200, r.text
        for row, res in zip(chunk, r.json()["results"], strict=True):
            assert res["truncated"] is False
            right += res["label"] == ("positive" if row["label"] == "1" else "negative")
    assert len(rows) == 2000 and right / len(rows) >= 0.90
