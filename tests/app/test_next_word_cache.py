"""The continuous cache through the API, checked against the graphs and contract.lm_cache run
here directly, and /next-word against /next-word/score (one definition behind both)."""

from __future__ import annotations

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

from contract import lm_cache
from contract.card import CardError, parse
from contract.lm_cache import CacheParams, History
from tests.conftest import MODELS

CACHED = "wikitext2-lstm:3"
FOLDER = MODELS / "next-word" / "wikitext2-lstm" / "3"
TEXT = (
    "The European lobster is a species of clawed lobster . The lobster lives on the sea floor "
    "of the eastern Atlantic . Lobsters are caught with pots , and the lobster is eaten boiled . "
) * 4


def _card() -> dict:
    return json.loads((FOLDER / "card.json").read_text())


def _direct(text: str, cache: bool) -> float:
    """The text's log-likelihood from score.onnx and contract.lm_cache, without the server."""
    card = _card()
    tok = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    ids = [card["start_token"]["id"], *tok.encode(text).ids]
    feed = np.asarray(ids, np.int64)[None, :]
    s = ort.InferenceSession(str(FOLDER / card["score_onnx"]["file"]))
    zeros = np.zeros((card["state"]["layers"], 1, card["state"]["hidden_size"]), np.float32)
    lp, hidden = s.run(
        ["token_log_probs", "hidden"],
        {"input_ids": feed[:, :-1], "target_ids": feed[:, 1:], "h0": zeros, "c0": zeros},
    )
    lp = lp[0]
    if cache:
        c = card["cache"]
        p = CacheParams(c["theta"], c["lambda"], c["window"], c["ramp"])
        lp, _ = lm_cache.score(lp, hidden[0], feed[0, 1:], History.empty(hidden.shape[-1]), p)
    return float(np.sum(lp, dtype=np.float64))


def _score(client: TestClient, text: str, **extra: object) -> dict:
    r = client.post("/next-word/score", json={"text": text, "model": CACHED, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_score_with_and_without_the_cache_matches_the_graphs(client: TestClient) -> None:
    """A text longer than one scoring piece, so the cache's history crosses pieces."""
    with_cache, alone = _score(client, TEXT), _score(client, TEXT, cache=False)
    assert with_cache["cache"] is True and alone["cache"] is False
    assert with_cache["tokens"] > 100
    assert with_cache["log_likelihood"] == pytest.approx(_direct(TEXT, True), abs=2e-3)
    assert alone["log_likelihood"] == pytest.approx(_direct(TEXT, False), abs=2e-3)
    # the text repeats itself: the cache must help
    assert with_cache["perplexity"] < 0.8 * alone["perplexity"]


def test_suggestions_carry_the_probabilities_score_gives(client: TestClient) -> None:
    """p(word | text) from /next-word equals exp(LL(text + word) - LL(text)) from /score."""
    text = TEXT[:400].rstrip()
    r = client.post("/next-word", json={"text": text, "model": CACHED, "k": 3})
    assert r.status_code == 200 and r.json()["cache"] is True
    base = _score(client, text)["log_likelihood"]
    for cand in r.json()["candidates"]:
        gained = _score(client, f"{text} {cand['word']}")["log_likelihood"] - base
        assert math.log(cand["probability"]) == pytest.approx(gained, abs=2e-3)


def test_the_cache_changes_suggestions_and_completion_reads_its_own_words(
    client: TestClient,
) -> None:
    text = TEXT + "The European"  # the text said "The European lobster" four times
    on = client.post("/next-word", json={"text": text, "model": CACHED, "complete": 4}).json()
    off = client.post(
        "/next-word", json={"text": text, "model": CACHED, "complete": 4, "cache": False}
    ).json()
    p_on = {c["word"]: c["probability"] for c in on["candidates"]}
    p_off = {c["word"]: c["probability"] for c in off["candidates"]}
    assert on["candidates"][0]["word"] == "lobster"
    assert p_on["lobster"] > 2 * p_off.get("lobster", 0.0)
    assert len(on["completion_tokens"]) == 4
    assert sum(p_on.values()) <= 1.0


def test_a_short_prompt_is_left_almost_as_the_model_reads_it(client: TestClient) -> None:
    """The cache's weight grows with the history (the ramp): a five-word prompt's suggestions
    and probabilities stay within a few percent of the model's alone."""
    body = {"text": "The lobster is a lobster", "model": CACHED, "k": 5}
    on = client.post("/next-word", json=body).json()["candidates"]
    off = client.post("/next-word", json={**body, "cache": False}).json()["candidates"]
    assert [c["word"] for c in on] == [c["word"] for c in off]
    for a, b in zip(on, off, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], rel=0.05)


def test_a_state_token_carries_the_state_not_the_cache(client: TestClient) -> None:
    """With a state token the cache covers only the new words: the first new word has no
    history, so its suggestions are the model's own."""
    first = client.post("/next-word", json={"text": "The lobster", "model": CACHED}).json()
    body = {"text": "is", "state": first["state"], "model": CACHED}
    on = client.post("/next-word", json=body).json()
    off = client.post("/next-word", json={**body, "cache": False}).json()
    assert on["cache"] is True
    assert on["candidates"] == off["candidates"]


def test_a_model_without_a_cache_says_so(client: TestClient) -> None:
    r = client.post("/next-word/score", json={"text": "the game", "model": "wikitext2-lstm:2"})
    assert r.status_code == 200 and r.json()["cache"] is False


def test_cache_must_be_a_boolean(client: TestClient) -> None:
    r = client.post("/next-word", json={"text": "the", "cache": "yes"})
    assert r.status_code == 422 and "cache" in r.text
    v2 = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the"]}],
        "parameters": {"cache": "yes"},
    }
    r = client.post("/v2/models/wikitext2-lstm/infer", json=v2)
    assert r.status_code == 400 and "cache" in r.text
    v2["parameters"] = {"cache": False}
    assert client.post("/v2/models/wikitext2-lstm/infer", json=v2).status_code == 200


@pytest.mark.parametrize("output", ["not-an-output", "hn", "log_probs"])
def test_a_card_whose_cache_output_is_not_the_per_position_output_is_refused(output: str) -> None:
    card = _card()
    card["cache"]["output"] = output
    with pytest.raises(CardError, match="cache"):
        parse(card)


def test_a_null_cache_means_the_default(client: TestClient) -> None:
    r = client.post("/next-word/score", json={"text": "the game", "cache": None, "model": CACHED})
    assert r.status_code == 200 and r.json()["cache"] is True
