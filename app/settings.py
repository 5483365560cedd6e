"""Service configuration from environment variables (prefix ``SEQSERVE_``) or a ``.env`` file.

A bad value is one line naming the variable and what it expects (``SettingsInvalid``), never a
traceback: ``get_settings`` is what the server, ``uvicorn app.main:app`` and the CLI call.
List settings take what people type (``key1,key2``) as well as JSON (``["key1","key2"]``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.errors import SeqServeError

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
KNOWN_PROVIDERS = {"CPUExecutionProvider", "CUDAExecutionProvider"}
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_PREFIX = "SEQSERVE_"


class SettingsInvalid(SeqServeError):
    """One or more settings cannot be used; the message is one line naming each variable."""

    code = "invalid_settings"


def _json(text: str) -> Any:
    """``json.loads`` whose error reads well inside the one-line message (still a ValueError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at character {exc.pos}") from None


def split_list(value: Any) -> Any:
    """A JSON list, or a comma-separated one as typed in a shell (an empty value: no items)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return _json(text)
    return [item.strip() for item in text.split(",") if item.strip()]


def split_mapping(value: Any) -> Any:
    """A JSON object, or ``task=name[:version]`` pairs separated by commas."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("{"):
        return _json(text)
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    bad = [k for k, sep, v in pairs if not sep or not k.strip() or not v.strip()]
    if bad:
        raise ValueError(f"{bad[0].strip()!r} is not task=name")
    return {k.strip(): v.strip() for k, _, v in pairs}


SECRET_LISTS = ("api_keys", "admin_keys", "state_previous_secrets")
MIN_SECRET_BYTES = 32
GENERATE_SECRET = "generate one with: openssl rand -hex 32"


STATE_SECRET_ENV = "SEQSERVE_STATE_SECRET"


def check_secret(value: SecretStr) -> None:
    """An HMAC key must be long enough to guess at no better than brute force. The reason says
    what is wrong; the fix (``GENERATE_SECRET``) is in what the setting expects (``EXPECTS``)."""
    size = len(value.get_secret_value().encode())
    if size == 0:
        raise ValueError("it is empty; leave it unset for a random key made at start-up")
    if size < MIN_SECRET_BYTES:
        raise ValueError(f"it has {size} bytes, fewer than {MIN_SECRET_BYTES}")


def short_previous_secrets(settings: Settings) -> int:
    """How many SEQSERVE_STATE_PREVIOUS_SECRETS are shorter than ``MIN_SECRET_BYTES`` (accepted:
    they only verify tokens signed before a rotation, never sign new ones)."""
    return sum(
        len(k.get_secret_value().encode()) < MIN_SECRET_BYTES
        for k in settings.state_previous_secrets
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", env_file=".env", extra="ignore")

    models_dir: Path = Field(
        DEFAULT_MODELS_DIR, description="root of models/<task>/<name>/<version>/"
    )
    default_models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description='task -> "name" or "name:version" used when a request names no model '
        "(sentiment=sst2-bilstm:1,forecast=m4-hourly-gru:1 or JSON); else models/defaults.json; "
        "else the first name, newest version",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in preference order, comma-separated (or a "
        "JSON list); CUDA falls back to CPU with a warning when unavailable",
    )
    intra_op_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads per session")
    max_batch_size: int = Field(
        64, ge=1, description="largest batch the batcher forms; 1 turns batching off"
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
        "dropped; counted from the moment its body is in, it covers every step of the request "
        "(waiting for a slot, each model call of a completion); 0: no deadline",
    )
    max_concurrent_requests: int = Field(
        512, ge=1, description="requests in flight before the service answers 429 (overloaded)"
    )
    max_admission_wait_ms: float = Field(
        1000.0,
        ge=0.0,
        description="an inference request (its body read) that finds every in-flight slot "
        "taken waits up to this long for one, in arrival order, before 429; clients that resend "
        "at once then wait instead of spinning the server. 0: 429 at once",
    )
    max_waiting_requests: int = Field(
        1024,
        ge=0,
        description="most inference requests waiting for an in-flight slot (their bodies: 64 MB "
        "in total at most); past it, 429 at once, before the body is read",
    )
    max_body_bytes: int = Field(
        8_000_000,
        ge=1024,
        description="largest request body, in bytes; larger bodies get 413 before they are read "
        "whole (all 414 M4 series in one /forecast body are ~3 MB)",
    )
    header_timeout_s: float = Field(
        10.0,
        ge=0.0,
        description="a client must send a request's headers within this many seconds of "
        "connecting (or of the request's first byte on a kept-alive connection), else 408 and "
        "the connection is closed; a total deadline, so a byte-a-second trickle is cut off too. "
        "0: no limit",
    )
    body_timeout_s: float = Field(
        10.0,
        ge=0.0,
        description="a request's whole body must arrive within this many seconds of its headers, "
        "else 408 and the connection is closed; bodies are read before the request takes an "
        "in-flight slot, so slow uploads never hold inference. 0: no limit",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description='API keys, comma-separated (k1,k2) or a JSON list (["k1","k2"]); when set, '
        "inference and model endpoints need 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
        "(401 otherwise); health, readiness and metrics stay open. Unset: open, with a warning "
        "at start-up",
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
    memory_budget_mb: int = Field(
        128,
        ge=16,
        description="working memory of one server process, in MB: model batches (all models "
        "share it) stop growing at it and long /next-word texts are scored in pieces that fit it "
        "(exact: the state is carried); request bodies held in memory are capped at half of it "
        "(never below SEQSERVE_MAX_BODY_BYTES; 429 past it) and one large body per 64 MB is "
        "parsed at a time; one request alone always runs",
    )
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
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="keys for POST /admin/reload, comma-separated or a JSON list (401 without "
        "a key, 403 with a non-admin one); unset: the admin endpoint answers 404",
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
        description="HMAC key signing next-word state tokens, at least 32 bytes (openssl rand "
        "-hex 32); share it across replicas. When unset, a random key is made at start-up (one "
        "for all the workers of `seqserve serve`) and tokens do not survive a restart",
    )

    state_previous_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="earlier state secrets, comma-separated or a JSON list: tokens they signed "
        "still verify (key rotation); new tokens are always signed with SEQSERVE_STATE_SECRET. "
        "Each must be non-empty; one shorter than 32 bytes is accepted with a warning at start-up",
    )
    state_max_age_s: float = Field(
        0.0,
        ge=0.0,
        description="next-word state tokens older than this many seconds are refused (400, "
        "code state_expired); 0: tokens do not expire",
    )

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _no_empty_key(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not key.get_secret_value().strip() for key in value):
            raise ValueError("it has an empty key")
        return value

    @field_validator("state_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret(value)
        return value

    @field_validator("state_previous_secrets")
    @classmethod
    def _no_empty_previous_secret(cls, value: list[SecretStr]) -> list[SecretStr]:
        # short ones are accepted (a short secret must be rotatable out of SEQSERVE_STATE_SECRET
        # without breaking its tokens); the server warns about them at start-up
        if any(not key.get_secret_value() for key in value):
            raise ValueError("it has an empty secret")
        return value

    @field_validator("providers", "api_keys", "admin_keys", "state_previous_secrets", mode="before")
    @classmethod
    def _split_list(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name in SECRET_LISTS and isinstance(value, str):
            # a stray comma (",k", "k1,,k2") would make an empty key: refused (one trailing
            # comma, "k1,k2,", is still read as the end of the list)
            items = value.strip().removesuffix(",").split(",")
            if value.strip() and not value.strip().startswith("["):
                if any(not item.strip() for item in items):
                    raise ValueError("it has an empty item (a stray comma?)")
        return split_list(value)

    @field_validator("default_models", mode="before")
    @classmethod
    def _split_mapping(cls, value: Any) -> Any:
        return split_mapping(value)

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in KNOWN_PROVIDERS]
        if unknown or not value:
            raise ValueError(f"unknown: {', '.join(unknown)}" if unknown else "empty")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise PydanticCustomError("choice", "not a log level")  # the message says which are
        return value.lower()

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: Path) -> Path:
        if not value.is_dir():
            where = "" if value.is_absolute() else f" (from {Path.cwd()})"
            raise ValueError(f"no folder {value}{where}")
        return value


# What each kind of setting expects, in the words of the one-line error.
EXPECTS = {
    "models_dir": "an existing models folder (models/<task>/<name>/<version>/)",
    "default_models": "task=name[:version] pairs, e.g. sentiment=sst2-bilstm:1,forecast="
    'm4-hourly-gru:1, or a JSON object such as {"sentiment": "sst2-bilstm:1"}',
    "providers": f"a comma-separated list of {', '.join(sorted(KNOWN_PROVIDERS))} "
    '(or a JSON list such as ["CPUExecutionProvider"])',
    "log_level": "one of " + ", ".join(LOG_LEVELS),
    "log_format": "json or text",
}
SECRET_LIST = 'a comma-separated list such as key1,key2 (or a JSON list such as ["key1","key2"])'
EXPECTS["api_keys"] = EXPECTS["admin_keys"] = SECRET_LIST + ", each key non-empty"
EXPECTS["state_secret"] = f"a secret of at least {MIN_SECRET_BYTES} bytes ({GENERATE_SECRET})"
EXPECTS["state_previous_secrets"] = f"{SECRET_LIST}, each secret non-empty"


def expects(name: str) -> str:
    """What a setting accepts, from its type and bounds (``EXPECTS`` for the special ones)."""
    if name in EXPECTS:
        return EXPECTS[name]
    field = Settings.model_fields[name]
    kind = {int: "a whole number", float: "a number", bool: "true or false"}.get(
        field.annotation,  # type: ignore[arg-type]
        SECRET_LIST if "list" in str(field.annotation) else "a string",
    )
    floor = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    return f"{kind} >= {floor}" if floor is not None else kind


def _shown(name: str, value: Any) -> str:
    """The value as the user gave it, shortened; never a secret."""
    if name in ("api_keys", "admin_keys", "state_secret", "state_previous_secrets"):
        return ""
    text = value if isinstance(value, str) else str(value)
    return "=" + repr(text if len(text) <= 200 else text[:197] + "...")


def describe(exc: ValidationError, overrides: dict[str, Any]) -> str:
    """One line for every bad setting: the variable (or flag), its value and what it expects."""
    parts: dict[str, str] = {}
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        if name not in Settings.model_fields or name in parts:
            continue
        source = f"--{name.replace('_', '-')}" if name in overrides else ENV_PREFIX + name.upper()
        reason = str(err["msg"]).removeprefix("Value error, ")
        detail = f" ({reason})" if err["type"] == "value_error" else ""
        parts[name] = f"{source}{_shown(name, err.get('input'))} is invalid{detail}: expected "
        parts[name] += expects(name)
    return "; ".join(parts.values()) or str(exc).splitlines()[0]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and ``.env``), with ``overrides`` from command-line flags."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsInvalid(describe(exc, overrides)) from None
    except SettingsError as exc:  # a source could not be read at all
        raise SettingsInvalid(str(exc).splitlines()[0]) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
