"""The one place where errors become HTTP: status table and JSON handlers.

Every error body is ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import logging

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


def _location(loc: tuple[object, ...]) -> str:
    """('body', 'texts', 2) -> 'texts[2]'."""
    out = ""
    for part in loc:
        if part == "body" and not out:
            continue
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


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.SeqServeError)
    async def _seqserve(_: Request, exc: errors.SeqServeError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return JSONResponse(
            error_body(exc.code, exc.message), status_code=status, headers=exc.headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = describe_validation(exc)
        return JSONResponse(error_body(code, message), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
