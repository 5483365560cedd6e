"""The service's edge: API keys, body-size cap, admission control, draining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings


@pytest.fixture(scope="module")
def keyed(tiny_sentiment_models: Path) -> TestClient:
    settings = Settings(models_dir=tiny_sentiment_models, api_keys=["alpha-key", "beta-key"])
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer alpha-key"},
        {"authorization": "bearer beta-key"},
        {"X-API-Key": "beta-key"},
    ],
)
def test_a_valid_key_opens_inference_and_model_endpoints(
    keyed: TestClient, headers: dict[str, str]
) -> None:
    assert keyed.post("/sentiment", json={"text": "good"}, headers=headers).status_code == 200
    assert keyed.get("/v1/models", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "alpha-ke"},
        {"Authorization": "alpha-key"},
    ],
)
def test_missing_or_wrong_key_is_401_json(keyed: TestClient, headers: dict[str, str]) -> None:
    for method, path in [("POST", "/sentiment"), ("GET", "/v1/models"), ("GET", "/v1/models/toy")]:
        r = keyed.request(method, path, json={"text": "good"}, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


def test_health_readiness_and_metrics_stay_open(keyed: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert keyed.get(path).status_code == 200, path


def test_no_keys_means_open(tiny_sentiment_models: Path, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(create_app(Settings(models_dir=tiny_sentiment_models))) as c:
        assert c.post("/sentiment", json={"text": "good"}).status_code == 200
    assert "SEQSERVE_API_KEYS is not set" in caplog.text


def test_body_over_the_cap_is_413_before_it_is_read(tiny_sentiment_models: Path) -> None:
    settings = Settings(models_dir=tiny_sentiment_models, max_body_bytes=4096)
    with TestClient(create_app(settings)) as c:
        r = c.post("/sentiment", json={"text": "good " * settings.max_body_bytes})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert f"{settings.max_body_bytes} bytes" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: the cap applies while streaming
            for _ in range(100):
                yield b" " * 100

        r = c.post("/sentiment", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/sentiment", json={"text": "good"}).status_code == 200


def test_deeply_nested_json_is_a_400(client: TestClient) -> None:
    body = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = client.post("/sentiment", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_in_flight_limit_answers_429_with_retry_after(tiny_sentiment_models: Path) -> None:
    settings = Settings(models_dir=tiny_sentiment_models, max_concurrent_requests=1)
    with TestClient(create_app(settings)) as c:
        c.app.state.container.limiter.current = 1  # type: ignore[attr-defined]
        r = c.post("/sentiment", json={"text": "good"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        assert c.get("/healthz").status_code == 200  # only inference is limited
        c.app.state.container.limiter.current = 0  # type: ignore[attr-defined]
        assert c.post("/sentiment", json={"text": "good"}).status_code == 200


def test_work_for_a_client_that_went_away_is_cancelled() -> None:
    import asyncio
    from types import SimpleNamespace

    from app.api.middleware import EdgeMiddleware

    cancelled = []

    async def slow_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        assert (await receive())["body"] == b'{"text": "hi"}'
        try:
            await asyncio.sleep(5)  # waiting on a queued inference
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> list[dict]:
        messages = [
            {"type": "http.request", "body": b'{"text": "hi"}', "more_body": False},
        ]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        state = SimpleNamespace(container=None, draining=False)
        scope = {
            "type": "http",
            "path": "/sentiment",
            "method": "POST",
            "headers": [(b"content-type", b"application/json")],
            "app": SimpleNamespace(state=state),
        }
        t0 = asyncio.get_running_loop().time()
        await EdgeMiddleware(slow_app, max_body_bytes=1000)(scope, receive, send)
        assert asyncio.get_running_loop().time() - t0 < 1
        return sent

    assert asyncio.run(main()) == [] and cancelled == [True]


def test_readiness_is_503_while_draining(tiny_sentiment_models: Path) -> None:
    with TestClient(create_app(Settings(models_dir=tiny_sentiment_models))) as c:
        c.app.state.draining = True  # type: ignore[attr-defined]  # what SIGTERM sets
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
        assert c.post("/sentiment", json={"text": "good"}).status_code == 200  # already sent
        assert c.get("/healthz").status_code == 200


def test_a_failure_nothing_answered_gets_the_json_500() -> None:
    import asyncio
    from types import SimpleNamespace

    from app.api.middleware import EdgeMiddleware

    async def broken_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    async def main() -> list[dict]:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "path": "/healthz",
            "method": "GET",
            "headers": [],
            "app": SimpleNamespace(state=SimpleNamespace(container=None, draining=False)),
        }
        await EdgeMiddleware(broken_app)(scope, receive, send)
        return sent

    start, body = asyncio.run(main())
    assert start["status"] == 500
    assert json.loads(body["body"]) == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
