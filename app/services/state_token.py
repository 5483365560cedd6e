"""Signed, compact tokens that carry a recurrent state between stateless requests.

Format: ``v1.<name>:<version>.<zlib(float16 state), base64url>.<HMAC-SHA256, base64url>``.
The MAC covers the model reference and the compressed state, so a token is only accepted by
the model version that issued it, under the same server secret; every replica must share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib

import numpy as np

from app.errors import InvalidStateToken

PREFIX = "v1"
MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateCodec:
    """Encodes/decodes the state arrays of one model version, shapes ``[layers, hidden]`` each."""

    def __init__(
        self,
        secret: bytes,
        model_ref: str,
        shapes: list[tuple[int, int]],
        previous: list[bytes] | None = None,
    ) -> None:
        self.secret = secret
        self.previous = list(previous or [])  # rotated-out secrets: their tokens still verify
        self.model_ref = model_ref
        self.shapes = shapes
        self.raw_bytes = sum(a * b for a, b in shapes) * 2  # float16

    def _mac(self, body: bytes, secret: bytes | None = None) -> bytes:
        msg = self.model_ref.encode() + b"\0" + body
        return hmac.new(secret or self.secret, msg, hashlib.sha256).digest()[:MAC_BYTES]

    def _verifies(self, body: bytes, mac: bytes) -> bool:
        ok = False
        for key in (self.secret, *self.previous):  # no early exit: timing says nothing
            ok |= hmac.compare_digest(mac, self._mac(body, key))
        return ok

    def encode(self, arrays: list[np.ndarray]) -> str:
        flat = np.concatenate([np.asarray(a, dtype=np.float16).ravel() for a in arrays])
        body = zlib.compress(flat.tobytes(), 6)
        return f"{PREFIX}.{self.model_ref}.{_b64(body)}.{_b64(self._mac(body))}"

    def decode(self, token: str) -> list[np.ndarray]:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != PREFIX:
            raise InvalidStateToken(
                "state token is malformed: expected v1.<model>.<state>.<signature>"
            )
        _, ref, body_b64, mac_b64 = parts
        if ref != self.model_ref:
            raise InvalidStateToken(
                f"state token was issued by model {ref!r}, not {self.model_ref!r}"
            )
        try:
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except (binascii.Error, ValueError):
            raise InvalidStateToken("state token is malformed: not base64url") from None
        if not self._verifies(body, mac):
            raise InvalidStateToken(
                "state token signature does not match: it was altered or truncated, "
                "or signed with another server secret"
            )
        try:
            raw = zlib.decompress(body)
        except zlib.error:
            raise InvalidStateToken("state token is malformed: state does not decompress") from None
        if len(raw) != self.raw_bytes:
            raise InvalidStateToken("state token is malformed: wrong state size")
        flat = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        out, start = [], 0
        for layers, hidden in self.shapes:
            n = layers * hidden
            out.append(flat[start : start + n].reshape(layers, 1, hidden))
            start += n
        return out
