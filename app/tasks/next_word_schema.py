"""The next-word request body: one definition of its fields and limits, read by the REST route
and by the v2 adapter (which validates its request parameters with it)."""

from __future__ import annotations

from pydantic import Field, model_validator

from app.api.schemas import StrictRequest


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
