"""Checks shared by the task services (limits come from settings; messages name the field)."""

from __future__ import annotations

from app.errors import InputTooLarge, InvalidInput


def check_text(text: str, field: str, max_chars: int) -> None:
    if not text.strip():
        raise InvalidInput(f"{field} is empty or whitespace-only")
    if len(text) > max_chars:
        raise InputTooLarge(f"{field} has {len(text)} characters; the limit is {max_chars}")
