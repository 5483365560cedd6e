"""Checks shared by the task services (limits come from settings; messages name the field)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from app.errors import InputTooLarge, InvalidInput, ModelLoadError, echo

# The models compute in float32: magnitudes past 1e30 would overflow their scaling, so series
# values beyond it are refused by name (forecast, anomaly) instead of coming back as nulls.
MAX_ABS_VALUE = 1e30

# Requests with at least this many series values are prepared and finished in a worker thread:
# below it the work costs less than the thread hop (~50 us).
OFF_LOOP_VALUES = 50_000
# Texts with at least this many characters in all are checked and tokenized in a worker thread.
OFF_LOOP_CHARS = 100_000

T = TypeVar("T")


async def off_loop(big: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread when the input is ``big`` (the event loop keeps answering
    probes and small requests meanwhile), else right here."""
    return await asyncio.to_thread(fn, *args) if big else fn(*args)


# Lone UTF-16 surrogates (valid in JSON as "\ud800", not encodable as UTF-8) and control
# characters other than tab/newline/carriage return (NUL, escape, C1 controls).
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """The text a tokenizer may safely read: lone surrogates become U+FFFD (the Unicode
    replacement character) and control characters become spaces. Nothing else changes."""
    if text.isascii():
        return _CONTROLS.sub(" ", text)
    return _CONTROLS.sub(" ", _SURROGATES.sub("\ufffd", text))


def check_text(text: str, field: str, max_chars: int) -> str:
    """Validate one text against the limits and return its normalized form."""
    if len(text) > max_chars:
        raise InputTooLarge(f"{field} has {len(text)} characters; the limit is {max_chars}")
    clean = normalize_text(text)
    if not clean.strip():
        raise InvalidInput(f"{field} is empty or whitespace-only")
    return clean


def expect(ok: bool, what: str) -> None:
    """A smoke-check assertion that survives ``python -O``: a failed check refuses the model."""
    if not ok:
        raise ModelLoadError(f"smoke check failed: {what}")


def expect_finite(x: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    expect(x.shape == shape, f"{name} has shape {tuple(x.shape)}, the card says {shape}")
    expect(bool(np.isfinite(x).all()), f"{name} has non-finite values")


def has_surrogates(text: str) -> bool:
    """True for a string holding a lone UTF-16 surrogate: valid in JSON ("\\ud800"), but it
    cannot be written back as UTF-8, so a field holding one is refused by name. The one check
    for it: REST series ids (``check_series``) and the v2 request id (``app.api.oip``)."""
    return not text.isascii() and _SURROGATES.search(text) is not None


def check_series(ids: list[str], lengths: list[int], max_series: int, max_values: int) -> None:
    """The checks every many-series task makes (forecast, anomaly), with the same messages."""
    if not ids:
        raise InvalidInput("series is empty; send at least one series")
    if len(ids) > max_series:
        raise InputTooLarge(f"series has {len(ids)} items; the limit is {max_series}")
    seen: set[str] = set()
    for i, (sid, n) in enumerate(zip(ids, lengths, strict=True)):
        if has_surrogates(sid):
            raise InvalidInput(
                f"series[{i}].id must be valid Unicode text: it holds a lone surrogate "
                "(such as \\ud800)"
            )
        if sid in seen:
            raise InvalidInput(f"series id {echo(sid)} appears more than once; ids must be unique")
        seen.add(sid)
        if n > max_values:
            raise InputTooLarge(f"series {echo(sid)} has {n} values; the limit is {max_values}")
