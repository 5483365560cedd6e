"""How uvicorn reads requests off the wire: a deadline for a request's headers.

Uvicorn has no header-read timeout: a client that opens a connection and sends nothing, or
sends its headers one byte a second (slowloris), holds the connection for ever. The protocol
classes here arm a timer when a connection opens, and again when the first byte of each later
request arrives; the headers must be complete before it fires (a total deadline, so a trickle
cannot keep it alive). On expiry the client gets ``408 Request Timeout`` and the connection is
closed. The body's deadline lives in the edge middleware (``app.api.middleware``), which reads
the body before the request takes an in-flight slot.

``uvicorn_kwargs(settings)`` is what ``seqserve serve`` passes to ``uvicorn.run``.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import typing
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import metrics

log = logging.getLogger("seqserve.protocol")

# Written as-is on expiry: no request was parsed, so there is nothing to route or log per route.
_TIMEOUT_BODY = (
    b'{"error":{"code":"request_timeout","message":"the request headers took too long"}}'
)
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


# The scope key under which the httptools protocol hands each request a ``Disconnect``.
DISCONNECT = "seqserve.disconnect"


class Disconnect:
    """Tells the edge that a request's client went away, from ``connection_lost``.

    Without it the edge needs one task per request waiting on ``receive()`` for the
    ``http.disconnect`` message (a task, an event and a cancellation per request, ~4% of a
    small request's cost); with it the edge registers a callback instead."""

    __slots__ = ("callback", "gone")

    def __init__(self) -> None:
        self.gone = False
        self.callback: Any = None

    def fire(self) -> None:
        self.gone = True
        if self.callback is not None:
            self.callback()


class _HeaderDeadline:
    """The timer shared by both protocol classes (uvicorn's attributes: loop, transport, cycle)."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def __init__(self, *args: Any, header_timeout_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # uvicorn's protocol, next in the MRO
        self.header_timeout_s = header_timeout_s

    def connection_made(self, transport: Any) -> None:  # uvicorn: an asyncio.Transport
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()  # a connection that never sends a byte is cut off too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            disconnect = cycle.scope.get(DISCONNECT)
            if disconnect is not None:
                disconnect.fire()
        super().connection_lost(exc)  # type: ignore[misc]

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self.header_timeout_s > 0:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is trickling in behind one still being answered: finish that
            # answer, then close instead of waiting for the rest of these headers.
            self.cycle.keep_alive = False
            return
        metrics.REJECTED.labels("other", "header_timeout").inc()  # no route: no path yet
        log.debug("request headers not complete after %s s: closing", self.header_timeout_s)
        self.transport.write(TIMEOUT_RESPONSE)
        self.transport.close()


class HeaderTimeoutHttpToolsProtocol(_HeaderDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()  # no-op for the first request: armed at connection_made

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        typing.cast(dict[str, Any], self.scope)[DISCONNECT] = Disconnect()
        super().on_headers_complete()


class HeaderTimeoutH11Protocol(_HeaderDeadline, H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or the peer is done)
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # h11 reports no "first byte": the next request's deadline runs from the end of this
        # response, so it covers the keep-alive idle time too (uvicorn closes idle connections
        # after --timeout-keep-alive, 5 s by default, anyway).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()


def protocol_class() -> type[HeaderTimeoutHttpToolsProtocol | HeaderTimeoutH11Protocol]:
    """httptools when installed (uvicorn's own choice with ``http="auto"``), else h11."""
    if importlib.util.find_spec("httptools") is not None:
        return HeaderTimeoutHttpToolsProtocol
    return HeaderTimeoutH11Protocol


def uvicorn_kwargs(settings: Any) -> dict[str, Any]:
    """Extra keyword arguments for ``uvicorn.run`` derived from the settings.

    A ``functools.partial`` of a module-level class: it pickles, so ``--workers N`` (which
    spawns worker processes with a copy of the config) gets the same protocol."""
    timeout = float(settings.header_timeout_s)
    return {"http": functools.partial(protocol_class(), header_timeout_s=timeout)}
