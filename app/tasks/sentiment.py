"""Sentiment: classify texts (``POST /sentiment``, v2 ``text`` -> ``label``, ``probabilities``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app import predict
from app.api.oip import InferRequest, Tensor
from app.api.oip_models import meta, strings, tensor
from app.api.routes import sentiment as route
from app.container import Container
from app.registry import ModelRecord
from app.services.base import TaskService
from app.services.sentiment import TASK, SentimentService
from app.tasks import PredictEntry, ServiceContext, TaskSpec, register
from contract.card import SentimentCard


class SentimentAdapter:
    task = TASK

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [meta("text", "BYTES", [-1])]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        labels = list(rec.card["labels"])
        return [
            meta("label", "BYTES", [-1]),
            meta("probabilities", "FP32", [-1, len(labels)], labels=labels),
            meta("score", "FP32", [-1]),
            meta("tokens", "INT64", [-1]),
            meta("truncated", "BOOL", [-1]),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        req.check_inputs({"text"})
        texts = strings(req.require("text", ("BYTES",)))
        _, preds = await c.get(SentimentService).classify(texts, "input 'text'", ref)
        return [
            tensor("label", "BYTES", [p.label for p in preds]),
            Tensor(
                "probabilities",
                "FP32",
                np.asarray([list(p.probabilities.values()) for p in preds], dtype=np.float32),
            ),
            tensor("score", "FP32", np.asarray([p.score for p in preds], dtype=np.float32)),
            tensor("tokens", "INT64", np.asarray([p.tokens for p in preds], dtype=np.int64)),
            tensor("truncated", "BOOL", np.asarray([p.truncated for p in preds], dtype=bool)),
        ]


def service(ctx: ServiceContext) -> TaskService[Any]:
    # Tiny requests run inline on the event loop only while they are alone at the edge.
    return SentimentService(ctx.registry, ctx.settings, alone=ctx.alone)


SENTENCE = (  # seqserve bench's request
    "the film is a gorgeous , witty and moving portrait of a family that never quite "
    "manages to say what it means"
)
_V2_BODY = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [SENTENCE]}]}

SPEC = register(
    TaskSpec(
        name=TASK,
        card=SentimentCard,
        service=service,
        router=route.router,
        inference_routes=("/sentiment",),
        adapter=SentimentAdapter(),
        predict=PredictEntry(
            "classify texts (arguments, or one per line of --file)",
            predict.sentiment_arguments,
            predict.run_sentiment,
        ),
        bench={
            "sentiment": ("/sentiment", {"text": SENTENCE}),
            "v2-sentiment": ("/v2/models/{model}/infer", _V2_BODY),
        },
    )
)
