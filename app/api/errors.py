"""The one place where errors become HTTP: status table and JSON handlers.

Every error body is ``{"error": {"code": ..., "message": ...}}``, except on the Open Inference
Protocol routes (``/v2/...``), where it is the protocol's ``{"error": "..."}`` and an invalid
request is a 400 (the protocol has no 422).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors

log = logging.getLogger(__name__)

STATUS: dict[type[errors.SeqServeError], int] = {
    errors.InvalidInput: 422,
    errors.InputTooLarge: 413,
    errors.ModelNotFound: 404,
    errors.InvalidStateToken: 400,
    errors.Overloaded: 429,
    errors.NotReady: 503,
    errors.ModelLoadError: 503,
    errors.InferenceError: 500,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.DeadlineExceeded: 503,
}


def status_for(exc: errors.SeqServeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def is_oip(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


MAX_MESSAGE_CHARS = 1000  # a backstop: messages echo user values through errors.echo already


def safe_message(message: str) -> str:
    """The message as it can go out: valid UTF-8 (a lone surrogate shows as ``\\ud800``) and
    at most MAX_MESSAGE_CHARS long, whatever a layer below put in it."""
    if not message.isascii():
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "\u2026"
    return message


def error_payload(path: str, code: str, message: str) -> dict[str, Any]:
    """The error body in the shape of the API the path belongs to (the edge uses it too)."""
    message = safe_message(message)
    return {"error": message} if is_oip(path) else error_body(code, message)


def error_response(
    path: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if is_oip(path) and status == 422:
        status = 400  # the protocol has no 422
    return JSONResponse(error_payload(path, code, message), status_code=status, headers=headers)


def _location(loc: tuple[object, ...]) -> str:
    """('body', 'texts', 2) -> 'texts[2]'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
        if isinstance(part, str) and (len(part) > 40 or not part.isprintable()):
            part = errors.echo(part, 40)  # an unknown field's name is the user's text
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        detail = next(e for e in errs if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "invalid JSON")
        return 400, "malformed_json", f"request body is not valid JSON: {reason}"
    parts = []
    for e in errs[:5]:
        where = _location(tuple(e.get("loc", ())))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(
            msg if where == "body" and e.get("type") == "value_error" else f"{where}: {msg}"
        )
    more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def response_for(path: str, exc: Exception) -> JSONResponse:
    """The answer to an exception raised while serving ``path`` (the app's handlers and the
    edge's direct path, ``app.api.fast``, both use it)."""
    if isinstance(exc, errors.SeqServeError):
        status = status_for(exc)
        if status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(path, status, exc.code, exc.message, exc.headers or None)
    if isinstance(exc, RequestValidationError):
        status, code, message = describe_validation(exc)
        return error_response(path, status, code, message)
    if isinstance(exc, StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(
            path, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None)
        )
    log.error("unhandled error", exc_info=exc)
    return error_response(path, 500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return response_for(request.url.path, exc)

    for kind in (errors.SeqServeError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handler)
