"""Per-request context (id, model, timings) and one JSON log line per request.

A context variable carries what the layers below the HTTP edge learn about a request — which
model served it, how long tokenizing, waiting in the queue and inference took, how big its
batches were — so the edge can write the ``Server-Timing`` header and the request's log line
without any layer knowing about HTTP. The user's text is never logged.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import json
import logging
import os
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    client_gone: bool = False  # the client left before its answer (logged as 499)

    def add(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def server_timing(self) -> bytes:
        """``tokenize;dur=0.031, queue;dur=0.002, inference;dur=0.210`` (milliseconds)."""
        return ", ".join(f"{k};dur={v * 1e3:.3f}" for k, v in self.timings.items()).encode()


CURRENT: ContextVar[RequestInfo | None] = ContextVar("seqserve_request", default=None)


class _Ids:
    """Fresh request ids: 32 hex digits, a random per-process prefix and a counter.

    ``uuid.uuid4()`` reads the kernel's random source on every call: a system call that
    releases the GIL and lets the inference thread take the CPU while only one or two requests
    are queued (profiled: 19% of the event loop's samples at 64 clients, and batches of ~2
    instead of ~14). Ids only need to be unique, not secret: 64 random bits per process (drawn
    again in a forked child) and a 64-bit counter give that without a system call."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_IDS = _Ids()


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if header:
        value = header.decode("latin-1")
        if _ID_OK.match(value):
            return value
    return _IDS.next()


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


class FieldsFormatter(logging.Formatter):
    """A formatter that can also write a line straight from its fields (``AccessLog`` uses
    that: no ``LogRecord``, no ``extra`` merging)."""

    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def line(self, created: float, level: str, name: str, message: str, fields: Any) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in self.RESERVED}
        fields.pop("asctime", None)
        line = self.line(record.created, record.levelname, record.name, record.getMessage(), fields)
        if record.exc_info:
            line = self.with_exception(line, self.formatException(record.exc_info))
        return line

    def with_exception(self, line: str, exception: str) -> str:
        return f"{line}\n{exception}"


class JsonFormatter(FieldsFormatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def line(self, created: float, level: str, name: str, message: str, fields: Any) -> str:
        out: dict[str, Any] = {
            "time": _local_time(created, "%Y-%m-%dT%H:%M:%S"),
            "level": level.lower(),
            "logger": name,
            "message": message,
            **fields,
        }
        return orjson.dumps(out, default=str).decode()

    def with_exception(self, line: str, exception: str) -> str:
        out = orjson.loads(line)
        out["exception"] = exception
        return orjson.dumps(out, default=str).decode()


class TextFormatter(FieldsFormatter):
    """Plain lines for a terminal: the usual prefix and message, then the ``extra`` fields as
    ``key=value`` on the same line (``request method=POST route=/sentiment status=200
    latency_ms=3.1 request_id=... model=sst2-bilstm:1``)."""

    @staticmethod
    def _value(value: Any) -> str:
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, default=str, separators=(",", ":"))
        if not text or any(c.isspace() for c in text):
            return json.dumps(text)  # quoted so the line still splits on spaces
        return text

    def line(self, created: float, level: str, name: str, message: str, fields: Any) -> str:
        stamp = f"{_local_time(created, '%Y-%m-%d %H:%M:%S')},{int(created % 1 * 1000):03d}"
        head = f"{stamp} {level} {name}: {message}"
        extra = " ".join(f"{k}={self._value(v)}" for k, v in fields.items() if v is not None)
        if not extra:
            return head
        first, sep, rest = head.partition("\n")  # a multi-line message keeps its fields on line 1
        return f"{first} {extra}{sep}{rest}"


def _local_time(created: float, fmt: str) -> str:
    return _strftime(int(created), fmt)


@functools.lru_cache(maxsize=8)
def _strftime(second: int, fmt: str) -> str:  # one call per second and format, not per line
    return time.strftime(fmt, time.localtime(second))


class AccessLog:
    """The per-request log line, written in batches.

    Through ``logging`` a line costs ~26 us (a ``LogRecord``, the formatter, a lock and a write
    per request: a fifth of the serving path of a small request, profiled at 64 clients). When
    the process logs the way ``configure_logging`` set it up (one stream handler with our
    formatter), lines are formatted straight from their fields by that formatter and written
    together every ``FLUSH_S`` (or ``MAX_LINES``): same lines, one write per batch. Any other
    set-up (a handler added by the application or by pytest's caplog, a filter) gets ordinary
    log records, as before."""

    FLUSH_S = 0.05
    MAX_LINES = 256

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.lines: list[str] = []
        self.handler: logging.StreamHandler[Any] | None = None
        self.scheduled = False
        atexit.register(self.flush)  # lines still waiting when the process ends

    def write(self, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct()
        if handler is None:
            self.logger.info("request", extra=fields)
            return
        if handler is not self.handler:
            self.flush()
            self.handler = handler
        formatter = handler.formatter
        assert isinstance(formatter, FieldsFormatter)
        self.lines.append(formatter.line(time.time(), "INFO", self.logger.name, "request", fields))
        if len(self.lines) >= self.MAX_LINES:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(self.FLUSH_S, self.flush)
                self.scheduled = True
            except RuntimeError:  # no event loop: write now
                self.flush()

    def _direct(self) -> logging.StreamHandler[Any] | None:
        """The one handler lines may go to directly, or None."""
        root = logging.getLogger()
        handlers = root.handlers
        if self.logger.handlers or not self.logger.propagate or self.logger.filters:
            return None
        if len(handlers) != 1 or root.filters:
            return None
        handler = handlers[0]
        if (
            type(handler) is not logging.StreamHandler
            or handler.filters
            or handler.level > logging.INFO
            or not isinstance(handler.formatter, FieldsFormatter)
        ):
            return None
        return handler

    def flush(self) -> None:
        self.scheduled = False
        lines, self.lines = self.lines, []
        handler = self.handler
        if not lines or handler is None:
            return
        handler.acquire()
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.flush()
        except Exception:  # a closed or broken stream: what logging would do
            handler.handleError(logging.makeLogRecord({"msg": "access log lines lost"}))
        finally:
            handler.release()


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
