"""POST /next-word and /next-word/score on a tiny LM trained from a fixture corpus."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.next_word import detokenize
from app.settings import Settings
from tests.helpers import measured_perplexity, text_chunks

MAX_TOKENS = 200  # a small context limit, so a test can go past it


@pytest.fixture(scope="module")
def lm_client(tiny_lm_models: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=tiny_lm_models,
        state_secret="test-secret-0123456789abcdef0123456789",
        max_context_tokens=MAX_TOKENS,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _probs(body: dict) -> dict[str, float]:
    return {c["word"]: c["probability"] for c in body["candidates"]}


def test_candidates_are_sorted_and_exclude_unk_and_eos(lm_client: TestClient) -> None:
    r = lm_client.post("/next-word", json={"text": "Happy", "k": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    words = [c["word"] for c in body["candidates"]]
    assert len(words) == 20 and "<unk>" not in words and "<eos>" not in words
    probs = [c["probability"] for c in body["candidates"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert body["model"] == {"name": "tiny-lm", "version": "1"}


def test_typed_text_is_normalized_like_wikitext(lm_client: TestClient) -> None:
    body = lm_client.post("/next-word", json={"text": "Happy birthday, my friend!"}).json()
    assert body["tokens"] == ["Happy", "birthday", ",", "my", "friend", "!"]
    body = lm_client.post("/next-word", json={"text": "a well-known zyzzyva"}).json()
    assert body["tokens"] == ["a", "well", "@-@", "known", "<unk>"]


def test_state_token_gives_the_same_candidates_as_the_whole_text(lm_client: TestClient) -> None:
    whole = lm_client.post(
        "/next-word", json={"text": "Happy birthday , my friend", "k": 10}
    ).json()
    first = lm_client.post("/next-word", json={"text": "Happy birthday ,", "k": 10}).json()
    rest = lm_client.post(
        "/next-word", json={"text": "my friend", "k": 10, "state": first["state"]}
    ).json()
    assert [c["word"] for c in rest["candidates"]] == [c["word"] for c in whole["candidates"]]
    for word, p in _probs(whole).items():
        assert abs(_probs(rest)[word] - p) <= 1e-3


def test_score_equals_chained_next_word_probabilities(lm_client: TestClient) -> None:
    text = "the band played"
    scored = lm_client.post("/next-word/score", json={"text": text}).json()
    assert scored["tokens"] == 3
    # p(the | <eos>) p(band | the) p(played | the band) through the full-vocabulary next-word path
    big_k = 100
    total, state, prefix = 0.0, None, None
    for word in text.split():
        if prefix is not None:
            payload = {"text": prefix, "k": big_k, **({"state": state} if state else {})}
            body = lm_client.post("/next-word", json=payload).json()
            total += math.log(_probs(body)[word])
            state = body["state"]
        prefix = word
    first = lm_client.post("/next-word/score", json={"text": "the"}).json()["log_likelihood"]
    assert scored["log_likelihood"] == pytest.approx(first + total, abs=5e-3)
    assert scored["perplexity"] == pytest.approx(math.exp(-scored["log_likelihood"] / 3), rel=1e-6)


def test_completion_greedy_is_deterministic_and_sampling_follows_seed(
    lm_client: TestClient,
) -> None:
    a = lm_client.post("/next-word", json={"text": "Happy", "complete": 5}).json()
    b = lm_client.post("/next-word", json={"text": "Happy", "complete": 5}).json()
    assert len(a["completion_tokens"]) == 5 and a["completion"] == b["completion"]
    assert a["completion_tokens"][0] == a["candidates"][0]["word"]  # greedy = top candidate
    s = {"text": "Happy", "complete": 6, "temperature": 1.0, "top_k": 20, "seed": 3}
    assert (
        lm_client.post("/next-word", json=s).json()["completion"]
        == lm_client.post("/next-word", json=s).json()["completion"]
    )
    assert "<unk>" not in a["completion_tokens"] and "<eos>" not in a["completion_tokens"]


def _err(client: TestClient, path: str, payload: object) -> tuple[int, str, str]:
    r = client.post(path, json=payload)
    e = r.json()["error"]
    return r.status_code, e["code"], e["message"]


def test_tampered_truncated_foreign_and_malformed_tokens_are_400(lm_client: TestClient) -> None:
    token = lm_client.post("/next-word", json={"text": "Happy"}).json()["state"]
    head, ref, issued, body, mac = token.split(".")  # v2.<model>.<issued>.<state>.<signature>
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    cases = {
        "tampered": ".".join([head, ref, issued, flipped, mac]),
        "truncated": token[:-5],
        "foreign": ".".join([head, "other-lm:1", issued, body, mac]),
        "malformed": "not-a-token",
        "bad base64": ".".join([head, ref, issued, "!!!", mac]),
        "older issue time": ".".join([head, ref, str(int(issued) - 1), body, mac]),
    }
    for name, bad in cases.items():
        status, code, message = _err(lm_client, "/next-word", {"text": "birthday", "state": bad})
        assert (status, code) == (400, "invalid_state"), (name, message)
    assert (
        "other-lm:1" in _err(lm_client, "/next-word", {"text": "x", "state": cases["foreign"]})[2]
    )


def test_token_from_another_secret_is_rejected(tiny_lm_models: Path, lm_client: TestClient) -> None:
    token = lm_client.post("/next-word", json={"text": "Happy"}).json()["state"]
    other = Settings(
        models_dir=tiny_lm_models, state_secret="another-secret-0123456789abcdef01234567"
    )
    with TestClient(create_app(other)) as c:
        status, code, message = _err(c, "/next-word", {"text": "birthday", "state": token})
    assert (status, code) == (400, "invalid_state") and "signature" in message


def test_state_max_age_reaches_the_served_tokens(
    tiny_lm_models: Path, lm_client: TestClient
) -> None:
    """SEQSERVE_STATE_MAX_AGE_S reaches the service: a server with a max age refuses a token
    issued earlier than that (a token it signed itself), one without it accepts the same token."""
    token = lm_client.post("/next-word", json={"text": "Happy"}).json()["state"]
    time.sleep(1.1)
    settings = Settings(
        models_dir=tiny_lm_models,
        state_secret="test-secret-0123456789abcdef0123456789",
        state_max_age_s=1,
    )
    with TestClient(create_app(settings)) as c:
        status, code, _ = _err(c, "/next-word", {"text": "birthday", "state": token})
        fresh = c.post("/next-word", json={"text": "Happy"}).json()["state"]
        ok = c.post("/next-word", json={"text": "birthday", "state": fresh})
    assert (status, code) == (400, "state_expired")
    assert ok.status_code == 200
    again = lm_client.post("/next-word", json={"text": "birthday", "state": token})
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"text": ""}, 422, "text is empty"),
        ({"text": "  "}, 422, "text is empty"),
        ({"text": "Happy", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"text": "Happy", "k": 101}, 422, "k: Input should be less than or equal to 100"),
        ({"text": "Happy", "complete": 101}, 422, "complete"),
        ({"text": "Happy", "complete": -1}, 422, "complete"),
        ({"text": "Happy", "temperature": -1}, 422, "temperature"),
        ({"text": "Happy", "top_k": 5}, 422, "set temperature > 0"),
        ({"text": 5}, 422, "text: Input should be a valid string"),
        ({"text": "Happy", "k": "5"}, 422, "k: Input should be a valid integer"),
        (
            {"text": "word " * (MAX_TOKENS + 1)},
            413,
            f"{MAX_TOKENS + 1} tokens; the limit is {MAX_TOKENS}",
        ),
        ({"text": "Happy", "model": "nope"}, 404, "nope"),
        ({"texts": ["Happy"]}, 422, "text: Field required"),
    ],
)
def test_next_word_limits(lm_client: TestClient, payload: dict, status: int, fragment: str) -> None:
    got_status, _, message = _err(lm_client, "/next-word", payload)
    assert got_status == status and fragment in message, message


def test_score_errors(lm_client: TestClient) -> None:
    assert _err(lm_client, "/next-word/score", {"text": ""})[0] == 422
    assert _err(lm_client, "/next-word/score", {"text": "a", "k": 3})[0] == 422


def test_sentiment_absent_is_404(lm_client: TestClient) -> None:
    assert _err(lm_client, "/sentiment", {"text": "good"})[:2] == (404, "model_not_found")


def test_detokenize() -> None:
    assert (
        detokenize(["a", "well", "@-@", "known", "band", ",", "1", "@,@", "000", "fans", "."])
        == "a well-known band, 1,000 fans."
    )


@pytest.mark.parametrize(
    "text",
    [
        "The well-known band played for 1,000 people.",
        "I don't think John's car cost 3.5 million dollars in the U.S., Mr. Smith said.",
    ],
)
def test_served_tokens_detokenize_to_the_typed_text(lm_client: TestClient, text: str) -> None:
    """What the served tokenizer cuts typed text into reads back as that text (the words are
    all in the fixture vocabulary, so none becomes <unk>)."""
    body = lm_client.post("/next-word", json={"text": text}).json()
    assert "<unk>" not in body["tokens"], body["tokens"]
    assert detokenize(body["tokens"]) == text


def test_fixture_lm_perplexity_measured_through_the_api(
    lm_client: TestClient, tiny_lm_models: Path
) -> None:
    """The tiny model's validation perplexity measured again through /next-word/score, a line
    per request; the card (the export's own measurement on the same text) must agree."""
    valid = tiny_lm_models.parent / "valid.txt"  # written next to the models by the fixture
    perplexity, tokens = measured_perplexity(lm_client, text_chunks(valid, 1, 1))
    card = json.loads((tiny_lm_models / "next-word" / "tiny-lm" / "1" / "card.json").read_text())
    [valid_record] = [d for d in card["datasets"] if d["role"] == "valid"]
    assert tokens == valid_record["tokens"]  # the served tokenizer cuts the lines as training did
    assert math.isfinite(perplexity) and perplexity > 1
    # the export carries the state across lines; a request per line starts each from <eos>
    assert perplexity == pytest.approx(card["metrics"]["valid_perplexity"], rel=0.05)
