"""POST /next-word and POST /next-word/score: HTTP only; logic in ``app.services.next_word``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field

from app.api.deps import ContainerDep
from app.api.schemas import (
    ERROR_RESPONSES,
    MAX_CONTEXT_CHARS,
    TEXT_PATTERN,
    ModelRef,
    StrictRequest,
    json_response,
)
from app.services.next_word import NextWordService
from app.tasks.next_word_schema import CACHE_HELP, NextWordRequest

router = APIRouter(tags=["next-word"])


class Candidate(BaseModel):
    word: str
    probability: float


class NextWordResponse(BaseModel):
    candidates: list[Candidate]
    state: str = Field(description="signed state after the text; send it back with the next words")
    tokens: list[str] = Field(description="the text as the model read it (unknown words as <unk>)")
    completion: str | None = None
    completion_tokens: list[str] | None = None
    cache: bool = Field(description="whether the model's continuous cache was used")
    model: ModelRef


class ScoreRequest(StrictRequest):
    text: str = Field(
        description="text to score, every token given all before it; not blank",
        json_schema_extra={"pattern": TEXT_PATTERN, "maxLength": MAX_CONTEXT_CHARS},
    )
    model: str | None = None
    cache: bool | None = Field(None, description=CACHE_HELP)


class ScoreResponse(BaseModel):
    tokens: int
    log_likelihood: float = Field(description="natural-log probability of the whole text")
    perplexity: float
    cache: bool = Field(description="whether the model's continuous cache was used")
    model: ModelRef


EXAMPLES = {
    "suggest": {"value": {"text": "Happy", "k": 5}},
    "continue from a state": {
        "value": {"text": "birthday", "state": "v2.wikitext2-lstm:2.1764720000...."}
    },
    "complete": {"value": {"text": "The game was released in", "complete": 8}},
    "sample": {
        "value": {"text": "The city of", "complete": 10, "temperature": 0.8, "top_k": 40, "seed": 7}
    },
}


@router.post(
    "/next-word",
    summary="Suggest the next words; optionally complete the text",
    response_model=NextWordResponse,
    responses=ERROR_RESPONSES,
)
async def next_word(
    request: Annotated[NextWordRequest, Body(openapi_examples=EXAMPLES)], container: ContainerDep
) -> Response:
    rec, res = await container.get(NextWordService).predict(
        request.text,
        request.model,
        k=request.k,
        state_token=request.state,
        complete=request.complete,
        temperature=request.temperature,
        top_k=request.top_k,
        seed=request.seed,
        cache=request.cache,
    )
    body = {
        "candidates": [{"word": c.word, "probability": c.probability} for c in res.candidates],
        "state": res.state,
        "tokens": res.tokens,
        "completion": res.completion,
        "completion_tokens": res.completion_tokens,
        "cache": res.cache,
        "model": {"name": rec.name, "version": rec.version},
    }
    return json_response(body)


@router.post(
    "/next-word/score",
    summary="Log-likelihood and perplexity of a text",
    response_model=ScoreResponse,
    responses=ERROR_RESPONSES,
)
async def score(
    request: Annotated[
        ScoreRequest, Body(openapi_examples={"score": {"value": {"text": "Happy birthday!"}}})
    ],
    container: ContainerDep,
) -> Response:
    rec, res = await container.get(NextWordService).score(
        request.text, request.model, request.cache
    )
    body = {
        "tokens": res.tokens,
        "log_likelihood": res.log_likelihood,
        "perplexity": res.perplexity,
        "cache": res.cache,
        "model": {"name": rec.name, "version": rec.version},
    }
    return json_response(body)
