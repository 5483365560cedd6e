"""POST /sentiment through the real app on the shipped model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS, REPO
from tests.helpers import measured_accuracy, read_labelled_tsv

LIMITS = Settings()  # what the ``client`` fixture runs with (conftest clears SEQSERVE_*)
SST2_DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
BINARY = {"0": "negative", "1": "positive"}

POSITIVE = [
    "a gorgeous, witty, moving film",
    "one of the best films of the year , a delight",
    "an absolute triumph: beautifully acted and deeply moving",
]
NEGATIVE = [
    "awful",
    "a dull, tedious mess with no wit at all",
    "the worst movie i have seen in years ; boring and stupid",
]


def test_clear_positives_and_negatives(client: TestClient) -> None:
    for text, label in [(t, "positive") for t in POSITIVE] + [(t, "negative") for t in NEGATIVE]:
        r = client.post("/sentiment", json={"text": text})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == label, (text, body)
        assert body["score"] == pytest.approx(body["probabilities"][label])
        assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert body["model"]["name"] and body["model"]["version"]
        assert body["truncated"] is False


def test_batch_preserves_order_and_matches_single_requests(client: TestClient) -> None:
    texts = [NEGATIVE[0], POSITIVE[0], NEGATIVE[1], POSITIVE[1], "an ok film", NEGATIVE[2]]
    r = client.post("/sentiment", json={"texts": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["label"] for x in results[:4]] == ["negative", "positive", "negative", "positive"]
    for text, got in zip(texts, results, strict=True):
        single = client.post("/sentiment", json={"text": text}).json()
        assert got["probabilities"]["positive"] == pytest.approx(
            single["probabilities"]["positive"], abs=1e-5
        )


def test_named_model_and_version(client: TestClient) -> None:
    default = client.post("/sentiment", json={"text": "great"}).json()["model"]
    for ref in (default["name"], f"{default['name']}:{default['version']}"):
        r = client.post("/sentiment", json={"text": "great", "model": ref})
        assert r.status_code == 200 and r.json()["model"] == default


def _error(
    client: TestClient, payload: object = None, content: bytes | None = None
) -> tuple[int, dict]:
    if content is not None:
        r = client.post("/sentiment", content=content, headers={"content-type": "application/json"})
    else:
        r = client.post("/sentiment", json=payload)
    return r.status_code, r.json()["error"]


@pytest.mark.parametrize(
    ("payload", "status", "code", "fragment"),
    [
        ({"text": ""}, 422, "invalid_input", "text is empty"),
        ({"text": "   \n\t"}, 422, "invalid_input", "text is empty"),
        ({"texts": ["fine", " "]}, 422, "invalid_input", "texts[1] is empty"),
        ({"texts": []}, 422, "invalid_input", "texts is empty"),
        ({"text": 42}, 422, "invalid_request", "text: Input should be a valid string"),
        ({"texts": "not a list"}, 422, "invalid_request", "texts: Input should be a valid list"),
        ({"texts": ["ok", 3]}, 422, "invalid_request", "texts[1]"),
        ({}, 422, "invalid_request", "exactly one of 'text'"),
        ({"text": "a", "texts": ["b"]}, 422, "invalid_request", "exactly one of 'text'"),
        ({"txt": "typo"}, 422, "invalid_request", "txt: Extra inputs are not permitted"),
        (
            {"texts": ["ok"] * (LIMITS.max_texts + 1)},
            413,
            "input_too_large",
            f"texts has {LIMITS.max_texts + 1} items; the limit is {LIMITS.max_texts}",
        ),
        (
            {"text": "x" * (LIMITS.max_text_chars + 1)},
            413,
            "input_too_large",
            f"{LIMITS.max_text_chars + 1} characters; the limit is {LIMITS.max_text_chars}",
        ),
        ({"text": "great", "model": "no-such-model"}, 404, "model_not_found", "no-such-model"),
        ({"text": "great", "model": "sst2-bilstm:999"}, 404, "model_not_found", "sst2-bilstm:999"),
        ([1, 2], 422, "invalid_request", "body"),
    ],
)
def test_bad_inputs_get_clear_4xx(
    client: TestClient, payload: object, status: int, code: str, fragment: str
) -> None:
    got_status, err = _error(client, payload)
    assert (got_status, err["code"]) == (status, code), err
    assert fragment in err["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    status, err = _error(client, content=b'{"text": "unterminated')
    assert status == 400 and err["code"] == "malformed_json"


def test_health_ready_models_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and any(m.startswith("sentiment/") for m in ready["models"])
    models = client.get("/v1/models").json()
    default = models["defaults"]["sentiment"]
    sent = next(m for m in models["models"] if f"{m['name']}:{m['version']}" == default)
    assert client.get(f"/v1/models/{sent['name']}").json()["versions"][0]["card"]["labels"] == [
        "negative",
        "positive",
    ]
    assert client.get("/v1/models/nope").status_code == 404
    text = client.get("/metrics").text
    assert "seqserve_requests_total" in text and "seqserve_batch_size" in text
    assert client.get("/no-such-route").json()["error"]["code"] == "not_found"


def test_openapi_has_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/sentiment"]["post"]["requestBody"]["content"]["application/json"]
    assert "one text" in body["examples"]


@pytest.fixture(scope="module")
def toy_client(tiny_sentiment_models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_sentiment_models))) as c:
        yield c


def test_fixture_model_accuracy_measured_through_the_api(
    toy_client: TestClient, tiny_sentiment_models: Path, sentiment_fixture_data: tuple[Path, Path]
) -> None:
    """The tiny model's dev accuracy measured again through POST /sentiment; its card (written
    by the export on the same rows) must agree."""
    texts, labels = read_labelled_tsv(sentiment_fixture_data[1], BINARY)
    accuracy = measured_accuracy(toy_client, texts, labels, LIMITS.max_texts)
    assert accuracy >= 0.9  # the toy task is separable
    card = json.loads((tiny_sentiment_models / "sentiment" / "toy" / "1" / "card.json").read_text())
    assert accuracy == pytest.approx(card["metrics"]["dev_accuracy"], abs=1.5 / len(texts))


@pytest.mark.skipif(not SST2_DEV.exists(), reason="needs ../shared/data/sst2/dev.tsv")
@pytest.mark.parametrize(
    ("model", "key"),
    [("sst2-bilstm:1", "dev_accuracy"), ("sst2-imdb-bilstm:1", "dev_accuracy_sst2")],
)
def test_shipped_sst2_accuracy_measured_through_the_api(
    client: TestClient, model: str, key: str
) -> None:
    """SST-2 dev through POST /sentiment: the shipped models reach 85 %, as their cards say."""
    texts, labels = read_labelled_tsv(SST2_DEV, BINARY)
    accuracy = measured_accuracy(client, texts, labels, LIMITS.max_texts, model=model)
    assert accuracy >= 0.85
    name, version = model.split(":")
    card = json.loads((MODELS / "sentiment" / name / version / "card.json").read_text())
    assert accuracy == pytest.approx(card["metrics"][key], abs=1.5 / len(texts))
