"""Rekor's error vocabulary, shared by every layer. Interfaces map these to the contract's
error shape `{"error": {"code", "message", "details"}}` in one place each."""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE = {
    "VALIDATION_ERROR": 422,
    "BAD_REQUEST": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
}


class RekorError(Exception):
    """A user-facing error with a stable code, a message a person or agent can act on, and
    optional details (for validation: one entry per failing JSON path)."""

    code = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else []
        self.status = status or STATUS_BY_CODE[self.code]

    def to_json(self) -> dict[str, Any]:
        """The contract's error body."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationError(RekorError):
    code = "VALIDATION_ERROR"


class BadRequest(ValidationError):
    """Malformed input (not JSON, wrong top-level shape): VALIDATION_ERROR with status 400."""

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message, details, status=400)


class Unauthorized(RekorError):
    code = "UNAUTHORIZED"


class Forbidden(RekorError):
    code = "FORBIDDEN"


class NotFound(RekorError):
    code = "NOT_FOUND"


class Conflict(RekorError):
    code = "CONFLICT"


class PayloadTooLarge(RekorError):
    code = "PAYLOAD_TOO_LARGE"


class RateLimited(RekorError):
    code = "RATE_LIMITED"


class NotImplementedYet(RekorError):
    code = "NOT_IMPLEMENTED"


class Unavailable(RekorError):
    code = "UNAVAILABLE"
