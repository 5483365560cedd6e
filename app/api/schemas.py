"""Request/response bodies shared by several routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    name: str
    version: str


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_input"])
    message: str = Field(examples=["texts[1] is empty or whitespace-only"])


class ErrorResponse(BaseModel):
    error: ErrorDetail


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
