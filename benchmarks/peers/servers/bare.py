"""The floor: a bare Starlette route per task calling onnxruntime inline, no batching.

No validation, limits, metrics, logging or batching: what is left of a request's cost is the
HTTP server, JSON and the model call itself, so seqserve's distance from this is what its own
request path costs. ``PEERS_TASKS`` (comma-separated, default all) picks the models to load, so
the resident memory counts only the task measured. Run:
``uvicorn benchmarks.peers.servers.bare:app --no-access-log``.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks.peers.common import Forecast, NextWord, Sentiment

TASKS = set(os.environ.get("PEERS_TASKS", "sentiment,next-word,forecast").split(","))
SENTIMENT = Sentiment() if "sentiment" in TASKS else None
NEXT_WORD = NextWord() if "next-word" in TASKS else None
FORECAST = Forecast() if "forecast" in TASKS else None


def reply(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


async def sentiment(request: Request) -> Response:
    assert SENTIMENT is not None
    text = orjson.loads(await request.body())["text"]
    return reply(SENTIMENT.response(SENTIMENT.predict([text])[0]))


async def next_word(request: Request) -> Response:
    """The state travels as base64 of the raw float32 h/c arrays: unsigned, the floor only."""
    assert NEXT_WORD is not None
    body = orjson.loads(await request.body())
    state = NEXT_WORD.decode_state(body["state"]) if body.get("state") else None
    log_probs, new_state, _ = NEXT_WORD.step(body["text"], state)
    return reply(
        {
            "candidates": NEXT_WORD.top_k(log_probs, int(body.get("k", 5))),
            "state": NEXT_WORD.encode_state(new_state),
        }
    )


async def forecast(request: Request) -> Response:
    assert FORECAST is not None
    body = orjson.loads(await request.body())
    series = [s["values"] for s in body["series"]]
    horizon = int(body.get("horizon") or FORECAST.max_horizon)
    out = FORECAST.predict(series, horizon, body.get("level", [80.0, 95.0]))
    ids = [s.get("id") or str(i) for i, s in enumerate(body["series"])]
    return reply({"forecasts": [{"id": i, **f} for i, f in zip(ids, out, strict=True)]})


async def ready(request: Request) -> Response:
    return reply({"ready": True})


app = Starlette(
    routes=[
        Route("/sentiment", sentiment, methods=["POST"]),
        Route("/next-word", next_word, methods=["POST"]),
        Route("/forecast", forecast, methods=["POST"]),
        Route("/readyz", ready),
    ]
)
