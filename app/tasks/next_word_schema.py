"""The next-word request body: one definition of its fields and limits, read by the REST route
and by the v2 adapter (which validates its request parameters with it)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator
from pydantic.config import JsonDict

from app.api.schemas import MAX_CONTEXT_CHARS, TEXT_PATTERN, StrictRequest

# Sampling divides log-probabilities by the temperature: below this a tiny temperature overflows
# to infinity (1e-310 is a 500 otherwise) while sampling is already as greedy as it gets.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 5.0
CACHE_HELP = (
    "mix in the model's continuous cache (if its card has one) over this request's text "
    "(absent, null or true); false: the model alone"
)


def _integral(value: Any) -> Any:
    """5.0 is the integer 5 (JSON does not tell them apart); "5" stays an error."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


def _top_k_needs_temperature(schema: JsonDict) -> None:
    """top_k only with a temperature > 0, said in the schema too, so a client generating
    requests from it does not send what the validator below refuses. Each branch repeats
    every property (generators merge branches poorly otherwise)."""
    props = schema["properties"]
    assert isinstance(props, dict)
    sampling: JsonDict = {"type": "number", "minimum": MIN_TEMPERATURE, "maximum": MAX_TEMPERATURE}
    top_k: JsonDict = {"type": "integer", "minimum": 1, "maximum": 1000}
    schema["anyOf"] = [
        {"properties": {**props, "top_k": {"type": "null"}}},  # absent or null
        {
            "required": ["temperature"],
            "properties": {**props, "temperature": sampling, "top_k": top_k},
        },
    ]


class NextWordRequest(StrictRequest):
    model_config = {**StrictRequest.model_config, "json_schema_extra": _top_k_needs_temperature}

    text: str = Field(
        description="text typed so far (or, with `state`, only the new words); not blank",
        json_schema_extra={"pattern": TEXT_PATTERN, "maxLength": MAX_CONTEXT_CHARS},
    )
    k: Int = Field(5, ge=1, le=100, description="number of candidates")
    state: str | None = Field(
        None,
        min_length=1,
        description="token from a previous response: continue from there (omit it, or null, "
        "to start fresh; an empty string is an error)",
    )
    complete: Int = Field(
        0, ge=0, le=100, description="also continue the text with this many words"
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=MAX_TEMPERATURE,
        description=f"0 = greedy completion; otherwise sample, with a temperature from "
        f"{MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}",
        json_schema_extra={"anyOf": [{"const": 0}, {"minimum": MIN_TEMPERATURE}]},
    )
    top_k: Annotated[int, Field(ge=1, le=1000), BeforeValidator(_integral)] | None = Field(
        None, description="sample only among the top_k words"
    )
    seed: Annotated[int, Field(ge=0, le=2**63 - 1), BeforeValidator(_integral)] | None = Field(
        None, description="makes sampled completions reproducible"
    )
    model: str | None = Field(None, description='"name" or "name:version"')
    cache: bool | None = Field(None, description=CACHE_HELP)

    @field_validator("temperature")
    @classmethod
    def _greedy_or_sampling(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:
            raise ValueError(
                f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g} to sample, got {value:g}"
            )
        return value

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> NextWordRequest:
        if self.top_k is not None and self.temperature == 0:
            raise ValueError("top_k applies to sampling: set temperature > 0 as well")
        return self
