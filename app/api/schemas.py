"""Request/response bodies shared by several routes."""

from __future__ import annotations

import orjson
from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    name: str
    version: str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["texts[1] is empty or whitespace-only"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


# What the schema states for texts. The limits are the settings' defaults (the server checks
# the configured values, answering 413 by name); the pattern says "at least one character that
# is neither whitespace nor a control character", what the services call a non-empty text.
TEXT_PATTERN = r"[^\s\x00-\x1f\x7f-\x9f]"


def text_schema(max_chars: int, description: str) -> dict[str, object]:
    return {
        "type": "string",
        "pattern": TEXT_PATTERN,
        "maxLength": max_chars,
        "description": description,
    }


def _default(name: str) -> int:
    from app.settings import Settings  # the defaults only: no environment is read

    value = Settings.model_fields[name].default
    assert isinstance(value, int)
    return value


MAX_TEXTS = _default("max_texts")
MAX_TEXT_CHARS = _default("max_text_chars")
MAX_CONTEXT_CHARS = _default("max_context_chars")
MAX_SERIES = _default("max_series")
MAX_SERIES_VALUES = _default("max_series_values")


class StrictRequest(BaseModel):
    """Unknown fields are an error: a typo like ``"txt"`` should not pass silently."""

    model_config = ConfigDict(extra="forbid", strict=True)


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "malformed JSON or invalid state token"},
    404: {"model": ErrorResponse, "description": "unknown model"},
    413: {"model": ErrorResponse, "description": "too many items or an item over the size limit"},
    422: {"model": ErrorResponse, "description": "invalid field (type, range, empty text...)"},
    429: {"model": ErrorResponse, "description": "overloaded: too many requests in flight"},
}


def json_response(body: object) -> Response:
    """A response body built from plain types (numpy arrays too), written by orjson.

    The inference routes return these rather than models: FastAPI's response-model
    re-validation is a measurable share of a sub-millisecond request, and ``Response`` is what
    the edge's direct path (``app.api.fast``) calls endpoints for. The routes' declared
    ``response_model`` still documents the shape in the OpenAPI schema."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )
