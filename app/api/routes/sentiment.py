"""POST /sentiment: HTTP only; the work happens in ``app.services.sentiment``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field, model_validator

from app.api.deps import ContainerDep, InflightDep
from app.api.schemas import ERROR_RESPONSES, ModelRef, StrictRequest
from app.errors import ModelNotFound
from app.services.sentiment import Prediction

router = APIRouter(tags=["sentiment"])


class SentimentRequest(StrictRequest):
    text: str | None = Field(None, description="one text to classify")
    texts: list[str] | None = Field(None, description="several texts, classified in order")
    model: str | None = Field(
        None, description='"name" or "name:version"; default: the task default'
    )

    @model_validator(mode="after")
    def _one_of(self) -> SentimentRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send exactly one of 'text' (a string) or 'texts' (a list of strings)")
        return self


class SentimentResult(BaseModel):
    label: str
    score: float = Field(description="probability of the predicted label")
    probabilities: dict[str, float]
    tokens: int = Field(description="tokens in the text")
    truncated: bool = Field(
        description="true when the text was longer than the model's max_length "
        "tokens and only its first max_length tokens were read"
    )


class SentimentResponse(SentimentResult):
    model: ModelRef


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResult]
    model: ModelRef


EXAMPLES = {
    "one text": {"value": {"text": "a gorgeous, witty, moving film"}},
    "several texts": {"value": {"texts": ["awful", "great"]}},
    "a named model": {"value": {"text": "dull and overlong", "model": "sst2-bilstm:1"}},
}


def _result(p: Prediction) -> SentimentResult:
    return SentimentResult(
        label=p.label,
        score=p.score,
        probabilities=p.probabilities,
        tokens=p.tokens,
        truncated=p.truncated,
    )


@router.post(
    "/sentiment",
    summary="Classify the sentiment of one text or a list of texts",
    response_model=SentimentResponse | SentimentBatchResponse,
    responses=ERROR_RESPONSES,
    dependencies=[InflightDep],
)
async def sentiment(
    request: Annotated[SentimentRequest, Body(openapi_examples=EXAMPLES)], container: ContainerDep
) -> SentimentResponse | SentimentBatchResponse:
    if container.sentiment is None:
        raise ModelNotFound(request.model or "(default)", "sentiment")
    if request.text is not None:
        rec, preds = await container.sentiment.classify([request.text], "text", request.model)
        return SentimentResponse(
            **_result(preds[0]).model_dump(), model=ModelRef(name=rec.name, version=rec.version)
        )
    assert request.texts is not None
    rec, preds = await container.sentiment.classify(request.texts, "texts", request.model)
    return SentimentBatchResponse(
        results=[_result(p) for p in preds], model=ModelRef(name=rec.name, version=rec.version)
    )
