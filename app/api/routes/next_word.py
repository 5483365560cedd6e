"""POST /next-word and POST /next-word/score: HTTP only; logic in ``app.services.next_word``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field, model_validator

from app.api.deps import ContainerDep
from app.api.schemas import ERROR_RESPONSES, ModelRef, StrictRequest

router = APIRouter(tags=["next-word"])


class NextWordRequest(StrictRequest):
    text: str = Field(description="text typed so far (or, with `state`, only the new words)")
    k: int = Field(5, ge=1, le=100, description="number of candidates")
    state: str | None = Field(
        None, description="token from a previous response: continue from there"
    )
    complete: int = Field(
        0, ge=0, le=100, description="also continue the text with this many words"
    )
    temperature: float = Field(
        0.0, ge=0.0, le=5.0, description="0 = greedy completion; > 0 samples"
    )
    top_k: int | None = Field(None, ge=1, le=1000, description="sample only among the top_k words")
    seed: int | None = Field(None, ge=0, description="makes sampled completions reproducible")
    model: str | None = Field(None, description='"name" or "name:version"')

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> NextWordRequest:
        if self.top_k is not None and self.temperature == 0:
            raise ValueError("top_k applies to sampling: set temperature > 0 as well")
        return self


class Candidate(BaseModel):
    word: str
    probability: float


class NextWordResponse(BaseModel):
    candidates: list[Candidate]
    state: str = Field(description="signed state after the text; send it back with the next words")
    tokens: list[str] = Field(description="the text as the model read it (unknown words as <unk>)")
    completion: str | None = None
    completion_tokens: list[str] | None = None
    model: ModelRef


class ScoreRequest(StrictRequest):
    text: str = Field(description="text to score, every token given all before it")
    model: str | None = None


class ScoreResponse(BaseModel):
    tokens: int
    log_likelihood: float = Field(description="natural-log probability of the whole text")
    perplexity: float
    model: ModelRef


EXAMPLES = {
    "suggest": {"value": {"text": "Happy", "k": 5}},
    "continue from a state": {"value": {"text": "birthday", "state": "v1.wikitext2-lstm:2...."}},
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
) -> NextWordResponse:
    rec, res = await container.next_word.predict(
        request.text,
        request.model,
        k=request.k,
        state_token=request.state,
        complete=request.complete,
        temperature=request.temperature,
        top_k=request.top_k,
        seed=request.seed,
    )
    return NextWordResponse(
        candidates=[Candidate(word=c.word, probability=c.probability) for c in res.candidates],
        state=res.state,
        tokens=res.tokens,
        completion=res.completion,
        completion_tokens=res.completion_tokens,
        model=ModelRef(name=rec.name, version=rec.version),
    )


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
) -> ScoreResponse:
    rec, res = await container.next_word.score(request.text, request.model)
    return ScoreResponse(
        tokens=res.tokens,
        log_likelihood=res.log_likelihood,
        perplexity=res.perplexity,
        model=ModelRef(name=rec.name, version=rec.version),
    )
