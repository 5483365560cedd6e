"""POST /sentiment: HTTP only; the work happens in ``app.services.sentiment``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from app.api.deps import ContainerDep
from app.api.schemas import (
    ERROR_RESPONSES,
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    ModelRef,
    StrictRequest,
    json_response,
    text_schema,
)
from app.services.sentiment import Prediction, SentimentService

router = APIRouter(tags=["sentiment"])


_TEXT = text_schema(MAX_TEXT_CHARS, "one text to classify")
_TEXTS = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_TEXTS,
    "items": text_schema(MAX_TEXT_CHARS, "a text"),
    "description": "several texts, classified in order",
}


class SentimentRequest(StrictRequest):
    # The schema says what is served: exactly one of the two, each text non-blank, within the
    # default limits (null is still read as absent).
    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
    )

    text: Annotated[str | None, WithJsonSchema(_TEXT)] = None
    texts: Annotated[list[str] | None, WithJsonSchema(_TEXTS)] = None
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


def _result(p: Prediction) -> dict[str, Any]:
    return {
        "label": p.label,
        "score": p.score,
        "probabilities": p.probabilities,
        "tokens": p.tokens,
        "truncated": p.truncated,
    }


@router.post(
    "/sentiment",
    summary="Classify the sentiment of one text or a list of texts",
    response_model=SentimentResponse | SentimentBatchResponse,
    responses=ERROR_RESPONSES,
)
async def sentiment(
    request: Annotated[SentimentRequest, Body(openapi_examples=EXAMPLES)], container: ContainerDep
) -> Response:
    texts, field = (
        ([request.text], "text") if request.text is not None else (request.texts, "texts")
    )
    assert texts is not None
    rec, preds = await container.get(SentimentService).classify(texts, field, request.model)
    model = {"name": rec.name, "version": rec.version}
    body = (
        {**_result(preds[0]), "model": model}
        if request.text is not None
        else {"results": [_result(p) for p in preds], "model": model}
    )
    return json_response(body)
