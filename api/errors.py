"""One table mapping every exception to the contract's error shape; routes never build errors."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from events.errors import STATUS_BY_CODE, RekorError

log = logging.getLogger("rekor.api")

_CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "VALIDATION_ERROR",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "VALIDATION_ERROR",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
}


def error_response(code: str, message: str, details: Any, status: int) -> Response[Any]:
    """The contract's error body."""
    return Response(
        content={"error": {"code": code, "message": message, "details": details}},
        status_code=status,
        media_type=MediaType.JSON,
    )


def _rekor_error(_: Request[Any, Any, Any], exc: RekorError) -> Response[Any]:
    return error_response(exc.code, exc.message, exc.details, exc.status)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    details = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            key = item.get("key")
            path = f"$.{key}" if key and not str(key).startswith("$") else (key or "$")
            details.append(
                {"path": path, "message": item.get("message", ""), "source": item.get("source")}
            )
    message = str(exc.detail)
    if "Validation failed for" in message and details:
        message = "request is not valid: " + "; ".join(
            f"{d['path']}: {d['message']}" for d in details[:5]
        )
    elif "Malformed" in message or "JSON" in message:
        message = f"request body is not valid JSON ({message})"
    return error_response("VALIDATION_ERROR", message, details, 400)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
    message = str(exc.detail)
    if status == 404:
        message = f"no such endpoint: {message}" if message != "Not Found" else "no such endpoint"
    if status == 413:
        message = "request body is too large"
    return error_response(code, message, exc.extra or [], status)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response("INTERNAL_ERROR", "internal error; the request may be retried", [], 500)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    RekorError: _rekor_error,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _internal,
}

assert STATUS_BY_CODE  # the code table lives in events.errors
