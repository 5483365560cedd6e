"""The edge's direct path (app.api.fast) answers exactly as FastAPI's path does.

FastAPI reads ``application/json`` and ``+json`` bodies alike; the direct path takes only the
former, so sending one body with both content types compares the two paths on the same app.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from fastapi.testclient import TestClient

from app.api import fast
from app.tasks import tasks

SERIES = [float(10 + (i % 24)) for i in range(200)]
CASES: list[tuple[str, Any]] = [
    ("/sentiment", {"text": "a gorgeous, witty, moving film"}),
    ("/sentiment", {"texts": ["awful", "great", "fine [PAD] film"]}),
    ("/sentiment", {"text": "fine", "model": "sst2-bilstm:1"}),
    ("/next-word/score", {"text": "Happy birthday to you"}),
    ("/forecast", {"series": [{"values": SERIES}], "horizon": 6, "level": [80]}),
    ("/anomaly", {"series": [{"id": "a", "values": SERIES}]}),
    # errors: raised by the services (the endpoint ran) ...
    ("/sentiment", {"text": "good", "model": "no-such-model"}),
    ("/sentiment", {"texts": ["good", "   "]}),
    ("/next-word/score", {"text": "hello", "model": "sst2-bilstm:1"}),
    ("/forecast", {"series": [{"values": [1.0, 2.0]}], "horizon": 100000}),
    # ... and by validation (the direct path hands these to FastAPI)
    ("/sentiment", {"txt": "typo"}),
    ("/sentiment", {"text": 5}),
    ("/sentiment", {}),
    ("/next-word", {"text": "the", "k": "5"}),
    ("/anomaly", {"series": "not a list"}),
]


def _post(client: TestClient, path: str, body: Any, kind: str) -> tuple[int, Any]:
    r = client.post(path, json=body, headers={"content-type": kind})
    return r.status_code, r.json()


@pytest.mark.parametrize(("path", "body"), CASES)
def test_the_direct_path_answers_as_fastapi_does(client: TestClient, path: str, body: Any) -> None:
    served = []
    real = fast.serve

    async def spy(*args: Any) -> bool:
        handled = await real(*args)
        served.append(handled)
        return handled

    with mock.patch.object(fast, "serve", spy):
        direct = _post(client, path, body, "application/json")
        via_fastapi = _post(client, path, body, "application/seqserve-test+json")
    assert direct == via_fastapi
    # the direct path was tried once (not for +json) and answered when the body is valid
    assert len(served) == 1
    assert served[0] == (direct[0] == 200 or direct[1]["error"]["code"] != "invalid_request")


def test_the_five_inference_routes_take_the_direct_path() -> None:
    routes = fast.fast_routes(r for spec in tasks().values() for r in spec.router.routes)
    assert sorted(routes) == [
        "/anomaly",
        "/forecast",
        "/next-word",
        "/next-word/score",
        "/sentiment",
    ]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        # NaN is JSON to Python's json module (FastAPI's reader), not to orjson
        ("/forecast", b'{"series": [{"values": [1, NaN, 3]}], "horizon": 2}'),
        # a lone surrogate: orjson refuses it, json reads it (the service makes it U+FFFD)
        ("/sentiment", b'{"text": "\\ud800 good"}'),
        ("/sentiment", b'{"text": "good", "text": "bad"}'),  # the last one wins in both
        ("/sentiment", b""),
        ("/sentiment", b"[1, 2"),
    ],
)
def test_bodies_orjson_reads_differently_get_fastapis_answer(
    client: TestClient, path: str, raw: bytes
) -> None:
    answers = [
        client.post(path, content=raw, headers={"content-type": kind})
        for kind in ("application/json", "application/seqserve-test+json")
    ]
    assert [(r.status_code, r.json()) for r in answers][0] == (
        answers[1].status_code,
        answers[1].json(),
    )
    assert answers[0].status_code < 500


def test_a_body_not_json_by_its_content_type_gets_fastapis_answer(client: TestClient) -> None:
    r = client.post(
        "/sentiment", content=b'{"text": "good"}', headers={"content-type": "text/plain"}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_dependency_overrides_are_honoured(client: TestClient) -> None:
    from app.api.deps import get_container
    from app.errors import NotReady

    async def not_ready() -> None:
        raise NotReady("overridden")

    client.app.dependency_overrides[get_container] = not_ready  # type: ignore[attr-defined]
    try:
        r = client.post("/sentiment", json={"text": "good"})
    finally:
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
    assert r.status_code == 503 and r.json()["error"]["message"] == "overridden"
