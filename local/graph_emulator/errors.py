"""Graph-shaped errors.

Every failure the emulator reports, whatever layer raises it, leaves as the standard Graph error
body (``{"error": {"code", "message", "innerError": {...}}}``) so client code under test parses
exactly what it would get from graph.microsoft.com.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

JSON_CONTENT_TYPE = "application/json"


class GraphError(Exception):
    """An HTTP error that is rendered as a Graph error body.

    ``headers`` carries extra response headers (``Retry-After``, ``Allow``, ``WWW-Authenticate``).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


def bad_request(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


def not_found(message: str) -> GraphError:
    return GraphError(404, "ResourceNotFound", message)


def segment_not_found(segment: str) -> GraphError:
    """What Graph answers for a path segment it cannot resolve."""
    return bad_request(f"Resource not found for the segment '{segment}'.")


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> GraphError:
    return GraphError(
        405,
        "MethodNotAllowed",
        f"The HTTP method '{method}' is not allowed on this resource. Allowed: {', '.join(allowed)}.",
        {"Allow": ", ".join(allowed)},
    )


def unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": 'Bearer realm=""'})


def forbidden(message: str) -> GraphError:
    return GraphError(403, "Forbidden", message)


def utc_now_iso() -> str:
    """Graph's ``innerError.date`` format: UTC, seconds precision, no offset suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def error_body(code: str, message: str, request_id: str, client_request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": utc_now_iso(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


def error_bytes(code: str, message: str, request_id: str, client_request_id: str) -> bytes:
    return json.dumps(error_body(code, message, request_id, client_request_id)).encode()


# Codes Graph uses for statuses the fault injector or the HTTP layer can produce.
STATUS_CODES: dict[int, str] = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Forbidden",
    404: "ResourceNotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    500: "InternalServerError",
    501: "NotImplemented",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def code_for_status(status: int) -> str:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    return "BadRequest" if status < 500 else "InternalServerError"
