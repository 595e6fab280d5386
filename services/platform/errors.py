"""Domain errors. Stores and logic raise these; one middleware turns them into JSON responses."""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, details: object = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ApiError):
    """Too many attempts for now: come back in ``retry_after`` seconds (sent as Retry-After and
    in the details, so a client that relays the error can say it too)."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code, details={"retry_after": retry_after})
        self.retry_after = retry_after


class NotReady(ApiError):
    """Unavailable for now; ``retry_after`` seconds is sent as Retry-After."""

    status = 503
    code = "not_ready"
    retry_after = 5
