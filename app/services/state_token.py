"""Signed, compact tokens that carry a recurrent state between stateless requests.

Format: ``v2.<name>:<version>.<issued>.<zlib(float16 state), base64url>.<HMAC-SHA256, base64url>``
where ``issued`` is the Unix time (whole seconds) the token was made. The model reference may
itself hold dots (``wiki.lm:2.1``): a token is read from both ends, since base64url, the issue
time and the prefix never hold one. The MAC covers the format, the model reference, the issue
time and the compressed state, so a token is only accepted by the model version that issued it,
under the same server secret (every replica must share it), and its age cannot be changed.

Tokens of the earlier format ``v1.<name>:<version>.<state>.<signature>`` (no issue time) are
still accepted while tokens do not expire (``state_max_age_s`` 0).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import zlib
from collections.abc import Callable

import numpy as np

from app.errors import InvalidStateToken, StateTokenExpired, echo

PREFIX = "v2"
LEGACY_PREFIX = "v1"  # no issue time
MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _malformed(why: str) -> InvalidStateToken:
    return InvalidStateToken(
        f"state token is malformed: {why}; expected {PREFIX}.<model>.<issued>.<state>.<signature> "
        "as a previous response returned it"
    )


class StateCodec:
    """Encodes/decodes the state arrays of one model version, shapes ``[layers, hidden]`` each.

    ``max_age_s`` > 0 refuses tokens issued longer ago than that (``StateTokenExpired``);
    ``clock`` returns the current Unix time (tests pass their own).
    """

    def __init__(
        self,
        secret: bytes,
        model_ref: str,
        shapes: list[tuple[int, int]],
        previous: list[bytes] | None = None,
        max_age_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.previous = list(previous or [])  # rotated-out secrets: their tokens still verify
        self.model_ref = model_ref
        self.shapes = shapes
        self.raw_bytes = sum(a * b for a, b in shapes) * 2  # float16
        self.max_age_s = max_age_s
        self.clock = clock

    def _message(self, body: bytes, issued: str | None) -> bytes:
        if issued is None:  # the v1 format
            return self.model_ref.encode() + b"\0" + body
        return b"\0".join((PREFIX.encode(), self.model_ref.encode(), issued.encode(), body))

    def _mac(self, msg: bytes, secret: bytes) -> bytes:
        return hmac.new(secret, msg, hashlib.sha256).digest()[:MAC_BYTES]

    def _verifies(self, msg: bytes, mac: bytes) -> bool:
        ok = False
        for key in (self.secret, *self.previous):  # no early exit: timing says nothing
            ok |= hmac.compare_digest(mac, self._mac(msg, key))
        return ok

    def encode(self, arrays: list[np.ndarray]) -> str:
        flat = np.concatenate([np.asarray(a, dtype=np.float16).ravel() for a in arrays])
        body = zlib.compress(flat.tobytes(), 6)
        issued = str(int(self.clock()))
        mac = self._mac(self._message(body, issued), self.secret)
        return f"{PREFIX}.{self.model_ref}.{issued}.{_b64(body)}.{_b64(mac)}"

    def _split(self, token: str) -> tuple[str, str | None, str, str]:
        """(model reference, issue time or None for v1, state, signature) of a token."""
        prefix, _, rest = token.partition(".")
        if prefix == PREFIX:
            parts = rest.rsplit(".", 3)
            if len(parts) != 4 or not parts[0]:
                raise _malformed("it does not have five dot-separated parts")
            ref, issued, body, mac = parts
            if not (issued.isascii() and issued.isdigit()) or len(issued) > 12:
                raise _malformed("its issue time is not a number of seconds")
            return ref, issued, body, mac
        if prefix == LEGACY_PREFIX:
            parts = rest.rsplit(".", 2)
            if len(parts) != 3 or not parts[0]:
                raise _malformed("it does not have four dot-separated parts")
            return parts[0], None, parts[1], parts[2]
        raise _malformed(f"it does not start with {PREFIX}.")

    def decode(self, token: str) -> list[np.ndarray]:
        ref, issued, body_b64, mac_b64 = self._split(token)
        if ref != self.model_ref:
            raise InvalidStateToken(
                f"state token was issued by model {echo(ref)}, not {self.model_ref!r}"
            )
        try:
            body, mac = _unb64(body_b64), _unb64(mac_b64)
        except (binascii.Error, ValueError):
            raise _malformed("its state or signature is not base64url") from None
        if not self._verifies(self._message(body, issued), mac):
            raise InvalidStateToken(
                "state token signature does not match: it was altered or truncated, "
                "or signed with another server secret"
            )
        if self.max_age_s > 0:  # only a verified token's age is worth reporting
            if issued is None:
                raise StateTokenExpired(
                    f"state token has no issue time (an older format) and tokens now expire "
                    f"after {self.max_age_s:g} s; send the text again without 'state'"
                )
            age = self.clock() - int(issued)
            if age > self.max_age_s:
                raise StateTokenExpired(
                    f"state token expired: it was issued {age:.0f} s ago and tokens expire "
                    f"after {self.max_age_s:g} s; send the text again without 'state'"
                )
        try:
            raw = zlib.decompress(body)
        except zlib.error:
            raise _malformed("its state does not decompress") from None
        if len(raw) != self.raw_bytes:
            raise _malformed("its state has the wrong size")
        flat = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
        out, start = [], 0
        for layers, hidden in self.shapes:
            n = layers * hidden
            out.append(flat[start : start + n].reshape(layers, 1, hidden))
            start += n
        return out
