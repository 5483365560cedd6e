"""Next word: suggest, complete and score text (``POST /next-word``, ``/next-word/score``, v2)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import numpy as np
from pydantic import ValidationError

from app import predict
from app.api.oip import InferRequest, Tensor
from app.api.oip_models import meta, pydantic_message, strings, tensor
from app.api.routes import next_word as route
from app.container import Container
from app.errors import InputTooLarge, InvalidInput
from app.registry import ModelRecord
from app.services.base import TaskService
from app.services.next_word import TASK, NextWordService
from app.settings import Settings
from app.tasks import PredictEntry, ServiceContext, TaskSpec, register
from app.tasks.next_word_schema import NextWordRequest
from contract.card import NextWordCard

log = logging.getLogger(__name__)


class NextWordAdapter:
    task = TASK

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            meta("text", "BYTES", [-1]),
            meta("state", "BYTES", [-1], optional=True, meaning="'' or a state token"),
        ]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            meta("words", "BYTES", [-1, -1]),
            meta("probabilities", "FP32", [-1, -1]),
            meta("state", "BYTES", [-1]),
            meta("completion", "BYTES", [-1]),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        req.check_inputs({"text", "state"})
        texts = strings(req.require("text", ("BYTES",)))
        state_t = req.get("state", ("BYTES",))
        states = strings(state_t) if state_t is not None else [""] * len(texts)
        if len(states) != len(texts):
            raise InvalidInput(
                f"input 'state' has {len(states)} elements and 'text' {len(texts)}; send one "
                "state per text ('' for none)"
            )
        if not texts:
            raise InvalidInput("input 'text' has no elements; send at least one text")
        if len(texts) > c.settings.max_texts:
            raise InputTooLarge(
                f"input 'text' has {len(texts)} elements; the limit is {c.settings.max_texts}"
            )
        options = {
            k: req.parameters[k]
            for k in ("k", "complete", "temperature", "top_k", "seed", "cache")
            if k in req.parameters
        }
        try:  # strict: "5" where an integer is expected is an error, as on the REST route
            o = NextWordRequest.model_validate({"text": "", **options}, strict=True)
        except ValidationError as exc:
            raise InvalidInput(pydantic_message(exc)) from None
        results = await asyncio.gather(
            *(
                c.get(NextWordService).predict(
                    text,
                    ref,
                    k=o.k,
                    state_token=state or None,
                    complete=o.complete,
                    temperature=o.temperature,
                    top_k=o.top_k,
                    seed=o.seed,
                    cache=o.cache,
                )
                for text, state in zip(texts, states, strict=True)
            )
        )
        width = max((len(r.candidates) for _, r in results), default=0)
        words = np.full((len(results), width), "", dtype=object)
        probs = np.zeros((len(results), width), dtype=np.float32)
        for i, (_, r) in enumerate(results):
            for j, cand in enumerate(r.candidates):
                words[i, j] = cand.word
                probs[i, j] = cand.probability
        return [
            Tensor("words", "BYTES", words),
            Tensor("probabilities", "FP32", probs),
            tensor("state", "BYTES", [r.state for _, r in results]),
            tensor("completion", "BYTES", [r.completion or "" for _, r in results]),
        ]


def state_secret(settings: Settings) -> bytes:
    """The key state tokens are signed with; a random one (with a warning) when none is set."""
    if settings.state_secret is not None:
        return settings.state_secret.get_secret_value().encode()
    log.warning(
        "SEQSERVE_STATE_SECRET is not set: next-word state tokens are signed with a random key "
        "made now, so they stop working after a restart and are not accepted by other replicas"
    )
    return secrets.token_bytes(32)


def service(ctx: ServiceContext) -> TaskService[Any]:
    return NextWordService(ctx.registry, ctx.settings, state_secret(ctx.settings))


SPEC = register(
    TaskSpec(
        name=TASK,
        card=NextWordCard,
        service=service,
        router=route.router,
        inference_routes=("/next-word", "/next-word/score"),
        adapter=NextWordAdapter(),
        predict=PredictEntry(
            "suggest the next words of a text", predict.next_word_arguments, predict.run_next_word
        ),
        bench={"next-word": ("/next-word", {"text": "The game was released in", "k": 5})},
    )
)
