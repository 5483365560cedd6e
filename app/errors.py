"""Typed errors raised below the HTTP layer.

Each carries a stable machine-readable ``code`` and a message written for the API user. They
know nothing about HTTP: ``app.api.errors`` maps each kind to a status code in one table.
"""

from __future__ import annotations

ECHO_CHARS = 100  # longest user value an error message repeats back


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A user-supplied value as an error message shows it: ``repr`` (so control characters and
    lone surrogates come back escaped, valid UTF-8) cut to ``limit`` characters with an ellipsis,
    so a 1 MB model name never comes back as a 1 MB error body."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class SeqServeError(Exception):
    code = "error"
    headers: dict[str, str] = {}  # extra response headers (e.g. Retry-After)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SeqServeError):
    """The request is well-formed JSON but its content cannot be served."""

    code = "invalid_input"


class InputTooLarge(SeqServeError):
    """More items or longer items than the configured limits."""

    code = "input_too_large"


class ModelNotFound(SeqServeError):
    code = "model_not_found"

    def __init__(
        self, ref: str, task: str | None = None, available: list[str] | None = None
    ) -> None:
        where = f" for task {task!r}" if task else ""
        hint = f"; available: {', '.join(available)}" if available else ""
        super().__init__(f"no model {echo(ref)}{where}{hint}")


class InvalidStateToken(SeqServeError):
    code = "invalid_state"


class StateTokenExpired(InvalidStateToken):
    """A well-signed state token older than ``state_max_age_s``."""

    code = "state_expired"


class Overloaded(SeqServeError):
    code = "overloaded"
    headers = {"Retry-After": "1"}

    def __init__(self, limit: int) -> None:
        super().__init__(f"the server is at its limit of {limit} requests in flight; retry shortly")


class QueueFull(Overloaded):
    def __init__(self, model: str, limit: int) -> None:
        SeqServeError.__init__(
            self,
            f"model {model} has {limit} items waiting, its limit; retry shortly or send less",
        )


class NotReady(SeqServeError):
    code = "not_ready"


class ModelLoadError(SeqServeError):
    code = "model_load_error"


class InferenceError(SeqServeError):
    code = "inference_error"


class Unauthorized(SeqServeError):
    code = "unauthorized"


class Forbidden(SeqServeError):
    code = "forbidden"


class NotFound(SeqServeError):
    code = "not_found"


class DeadlineExceeded(SeqServeError):
    code = "deadline_exceeded"
    headers = {"Retry-After": "1"}
