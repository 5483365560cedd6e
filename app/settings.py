"""Service configuration from environment variables (prefix ``SEQSERVE_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
KNOWN_PROVIDERS = {"CPUExecutionProvider", "CUDAExecutionProvider"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", env_file=".env", extra="ignore")

    models_dir: Path = Field(
        DEFAULT_MODELS_DIR, description="root of models/<task>/<name>/<version>/"
    )
    default_models: dict[str, str] = Field(
        default_factory=dict,
        description='task -> "name" or "name:version" used when a request names no model '
        '(JSON, e.g. {"sentiment": "sst2-bilstm:1"}); else models/defaults.json; else the first '
        "name, newest version",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in preference order; CUDA falls back to CPU "
        "with a warning when unavailable",
    )
    intra_op_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per session")
    max_batch_size: int = Field(
        32, ge=1, description="largest batch the batcher forms; 1 turns batching off"
    )
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        description="how long a batch may wait for more requests; 0 adds no latency when idle",
    )
    inline_tokens: int = Field(
        64,
        ge=0,
        description="a sentiment request of at most this many tokens runs on the event loop when "
        "it is the only request in flight (no thread hop); 0 always uses the inference thread",
    )
    max_queue_items: int = Field(
        512,
        ge=0,
        description="items (texts, steps, series) waiting per model before new requests get 429 "
        "with Retry-After; ~0.5 s of work for the shipped sentiment model on one core. "
        "0: unbounded",
    )
    request_deadline_ms: float = Field(
        10_000,
        ge=0,
        description="a request not answered within this time gets 503 and its queued work is "
        "dropped; 0: no deadline",
    )
    max_concurrent_requests: int = Field(
        512, ge=1, description="requests in flight before the service answers 429 (overloaded)"
    )
    max_body_bytes: int = Field(
        8_000_000,
        ge=1024,
        description="largest request body, in bytes; larger bodies get 413 before they are read "
        "whole (all 414 M4 series in one /forecast body are ~3 MB)",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description='JSON list of API keys (e.g. ["k1","k2"]); when set, inference and model '
        "endpoints need 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (401 otherwise); "
        "health, readiness and metrics stay open. Unset: open, with a warning at start-up",
    )
    max_texts: int = Field(64, ge=1, description="most texts in one /sentiment request")
    max_text_chars: int = Field(
        20_000,
        ge=1,
        description="longest /sentiment text accepted, in characters (a long movie review is "
        "~10,000); longer texts get 413",
    )

    max_context_chars: int = Field(
        50_000, ge=1, description="longest /next-word text accepted, in characters"
    )
    max_context_tokens: int = Field(5_000, ge=1, description="most tokens in one /next-word text")
    max_series: int = Field(2000, ge=1, description="most series in one /forecast request")
    max_series_values: int = Field(100_000, ge=1, description="longest series accepted, in values")
    forecast_max_batch_size: int = Field(
        512,
        ge=1,
        description="largest forecast batch (windows are equal-length, so big batches are cheap)",
    )
    require_all_models: bool = Field(
        False,
        description="refuse to start when any model folder fails to load; by default the healthy "
        "models are served and /readyz and /v1/models name the broken one and why",
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="JSON list of keys for POST /admin/reload (401 without a key, 403 with a "
        "non-admin one); unset: the admin endpoint answers 404",
    )
    reload_grace_seconds: float = Field(
        30.0,
        ge=0.0,
        description="after a reload, replaced model versions are closed this long later, so "
        "requests already running on them finish",
    )
    shutdown_grace_seconds: float = Field(
        30.0,
        ge=0.0,
        description="on SIGTERM, how long requests in flight (and bodies still uploading) may "
        "take to finish before the server closes; meanwhile /readyz answers 503 and new "
        "connections are refused",
    )
    log_level: str = Field("info", description="log level: debug, info, warning, error")
    log_format: str = Field(
        "json",
        pattern="^(json|text)$",
        description="json: one JSON object per line (request id, route, model, status, latency, "
        "batch sizes; never the user's text); text: plain lines",
    )
    access_log: bool = Field(True, description="one log line per request (probes excluded)")
    state_secret: SecretStr | None = Field(
        None,
        description="HMAC key signing next-word state tokens; share it across replicas. When "
        "unset, a random key is made at start-up and tokens do not survive a restart",
    )

    state_previous_secrets: list[SecretStr] = Field(
        default_factory=list,
        description="JSON list of earlier state secrets: tokens they signed still verify (key "
        "rotation); new tokens are always signed with SEQSERVE_STATE_SECRET",
    )

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in KNOWN_PROVIDERS]
        if unknown or not value:
            raise ValueError(
                f"providers must be a non-empty subset of {sorted(KNOWN_PROVIDERS)}, got {value}"
            )
        return value

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"models_dir {value} is not a directory")
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
