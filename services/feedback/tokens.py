"""The signed token a tracked similar row's links carry: ``/r/<token>/<movie id>``.

One token per page view, whatever the row's length: the ``ShownRow`` (view id, model version,
experiment, arm, the movies in the order shown, when) as compact JSON (an array, see
``ShownRow``), base64url, signed with ``auth.sign(..., purpose="row")``. The link names the movie
followed, the token says what was shown, so a follow of a movie that was not in the row, an
altered token or an old one is told apart and refused without any lookup.

Signing is done with an explicit ``now`` (the row's ``issued``): ``auth.sign`` keeps the tokens
it hands out by value for a minute, which helps a CSRF token re-signed on every page, but every
row token is new (a random view id) and would only crowd that cache.
"""

from __future__ import annotations

import base64
import binascii
import hmac

import msgspec

from services.feedback.schemas import ShownRow
from services.platform import auth

PURPOSE = "row"
MAX_TOKEN = 4096  # characters; a row of 12 ids and a long version is ~350

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ShownRow).decode


def row_token(shown: ShownRow, secret: str) -> str:
    """The token of one shown row (url-safe: base64url, digits and dots)."""
    value = base64.urlsafe_b64encode(_encode(shown)).rstrip(b"=").decode()
    return auth.sign(value, secret, purpose=PURPOSE, now=shown.issued)


def read_row_token(token: str, secret: str) -> ShownRow | None:
    """The row a token of ours signed, or None for anything we did not sign as it is
    (malformed, altered, another purpose, a payload of a shape we never write). The age is not
    checked here: the caller tells an expired token (410) from a forged one (403)."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return None
    parts = token.rsplit(".", 2)
    if len(parts) != 3:
        return None
    value, issued, _ = parts
    if not (0 < len(issued) <= 12 and issued.isdigit()):
        return None
    expected = auth.sign(value, secret, purpose=PURPOSE, now=int(issued))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    try:
        shown = _decode(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (msgspec.DecodeError, binascii.Error, ValueError):
        return None
    return shown if shown.issued == int(issued) else None
