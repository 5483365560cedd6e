"""State tokens: dotted model references round-trip, the v1 format still verifies, tokens carry
an issue time and honour ``state_max_age_s``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib

import numpy as np
import pytest

from app.api.errors import status_for
from app.errors import InvalidStateToken, StateTokenExpired
from app.services.state_token import StateCodec

SECRET = b"k" * 32
SHAPES = [(2, 4), (2, 4)]
STATE = [np.full((2, 1, 4), 0.5, np.float32), np.full((2, 1, 4), -1.0, np.float32)]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("ref", ["wiki.lm:2.1", "a.b.c:1", "lm:2", "x:1.0.0"])
def test_dotted_references_round_trip(ref: str) -> None:
    codec = StateCodec(SECRET, ref, SHAPES)
    token = codec.encode(STATE)
    assert token.startswith(f"v2.{ref}.")
    for got, want in zip(codec.decode(token), STATE, strict=True):
        np.testing.assert_array_equal(got, want)
    other = StateCodec(SECRET, ref + "9", SHAPES)
    with pytest.raises(InvalidStateToken, match="issued by model"):
        other.decode(token)


def _v1_token(ref: str) -> str:
    """A token as the previous format wrote it: v1.<ref>.<state>.<mac>, MAC over ref NUL body."""
    flat = np.concatenate([a.astype(np.float16).ravel() for a in STATE])
    body = zlib.compress(flat.tobytes(), 6)
    mac = hmac.new(SECRET, ref.encode() + b"\0" + body, hashlib.sha256).digest()[:16]

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    return f"v1.{ref}.{b64(body)}.{b64(mac)}"


def test_tokens_of_the_v1_format_still_verify() -> None:
    codec = StateCodec(SECRET, "wiki.lm:2", SHAPES)
    np.testing.assert_array_equal(codec.decode(_v1_token("wiki.lm:2"))[1], STATE[1])


def test_tokens_expire_after_the_max_age() -> None:
    clock = Clock(1_800_000_000)
    codec = StateCodec(SECRET, "lm:1", SHAPES, max_age_s=60, clock=clock)
    token = codec.encode(STATE)
    clock.now += 60
    codec.decode(token)  # exactly at the limit: still good
    clock.now += 1
    with pytest.raises(StateTokenExpired, match="expired") as info:
        codec.decode(token)
    assert info.value.code == "state_expired" and status_for(info.value) == 400
    with pytest.raises(StateTokenExpired, match="no issue time"):
        codec.decode(_v1_token("lm:1"))
    forever = StateCodec(SECRET, "lm:1", SHAPES, clock=Clock(4_000_000_000))
    forever.decode(token)  # max age 0: never expires


def test_the_issue_time_is_signed() -> None:
    codec = StateCodec(SECRET, "lm:1", SHAPES, max_age_s=60, clock=Clock(1_800_000_000))
    prefix, ref, issued, body, mac = codec.encode(STATE).split(".")
    forged = ".".join([prefix, ref, str(int(issued) + 1000), body, mac])
    with pytest.raises(InvalidStateToken, match="signature"):
        codec.decode(forged)
    for bad in ("", "v2", "v2.lm:1", "v2.lm:1.x.y.z", "v3.lm:1.1.a.b", f"v2.lm:1.{'9' * 20}.a.b"):
        with pytest.raises(InvalidStateToken, match="malformed"):
            codec.decode(bad)
