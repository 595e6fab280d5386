"""Payloads every service shares: the error envelope and the system routes' answers.

Every payload in Marquee is a ``msgspec.Struct``: one class per payload, used by the logic that
makes it, the handler that sends it, the clients that read it (decoding validates: a backend's
200 with the wrong shape is a failed call, not a crash later) and the OpenAPI document, which is
generated from the classes (``services.platform.openapi``). msgspec decodes and encodes them in
C: on the page's hot path that is cheaper than building and reading plain dicts.
"""

from __future__ import annotations

from typing import Any

import msgspec


class ErrorBody(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    # facts a client may act on (a batch upload's bad lines, a size limit): free-form by design
    details: dict[str, Any] | None = None


class ErrorEnvelope(msgspec.Struct):
    """Every error answer: ``{"error": {"code": "...", "message": "..."}}``."""

    error: ErrorBody


class Health(msgspec.Struct):
    status: str
    service: str


class Readiness(msgspec.Struct):
    status: str  # ready | not_ready
    checks: dict[str, bool]
