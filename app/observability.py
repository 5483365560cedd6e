"""Per-request context (id, model, timings) and one JSON log line per request.

A context variable carries what the layers below the HTTP edge learn about a request — which
model served it, how long tokenizing, waiting in the queue and inference took, how big its
batches were — so the edge can write the ``Server-Timing`` header and the request's log line
without any layer knowing about HTTP. The user's text is never logged.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass
class RequestInfo:
    request_id: str
    model: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds, by phase
    batch_sizes: list[int] = field(default_factory=list)
    # When the request started (time.monotonic()): every step of a multi-step request (a
    # completion, a long text in pieces) shares one deadline counted from here.
    started: float = field(default_factory=time.monotonic)

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def server_timing(self) -> bytes:
        """``tokenize;dur=0.031, queue;dur=0.002, inference;dur=0.210`` (milliseconds)."""
        return ", ".join(f"{k};dur={v * 1e3:.3f}" for k, v in self.timings.items()).encode()


CURRENT: ContextVar[RequestInfo | None] = ContextVar("seqserve_request", default=None)


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if header:
        value = header.decode("latin-1")
        if _ID_OK.match(value):
            return value
    return uuid.uuid4().hex


def note_model(ref: str) -> None:
    info = CURRENT.get()
    if info is not None:
        info.model = ref


def note_time(phase: str, seconds: float) -> None:
    info = CURRENT.get()
    if info is not None:
        info.add(phase, seconds)


def note_batch(size: int) -> None:
    info = CURRENT.get()
    if info is not None:
        info.batch_sizes.append(size)


class Timer:
    """``with Timer("tokenize"): ...`` adds the elapsed time to the current request."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.t0 = 0.0

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        note_time(self.phase, time.perf_counter() - self.t0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal: the usual prefix and message, then the ``extra`` fields as
    ``key=value`` on the same line (``request method=POST route=/sentiment status=200
    latency_ms=3.1 request_id=... model=sst2-bilstm:1``)."""

    SKIP = JsonFormatter.RESERVED | {"asctime"}  # record attributes that are not extra fields

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    @staticmethod
    def _value(value: Any) -> str:
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str, separators=(",", ":"))
        if not text or any(c.isspace() for c in text):
            return json.dumps(text)  # quoted so the line still splits on spaces
        return text

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in self.SKIP}
        fields = " ".join(f"{k}={self._value(v)}" for k, v in extra.items() if v is not None)
        if not fields:
            return line
        head, sep, rest = line.partition("\n")  # a traceback stays below the one line
        return f"{head} {fields}{sep}{rest}"


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
