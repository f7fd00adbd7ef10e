"""Graph-shaped errors.

Every failure the emulator reports, whatever layer raises it, leaves as the standard Graph error
body (``{"error": {"code", "message", "innerError": {...}}}``) so client code under test parses
exactly what it would get from graph.microsoft.com.

Codes are spelled as the Viva Learning error tables spell them (camelCase: ``badRequest``,
``notFound``, ``methodNotAllowed``, ``tooManyRequests``, ``serviceUnavailable``;
``v1.0/api/learningcourseactivity-get.md``), except where a different answer of Graph's front door is
on record: ``RequestBroker--ParseUri`` for an unresolvable segment (microsoft-graph-docs issue 10167),
``BadRequest`` for a body without Content-Type (microsoft-graph-docs-contrib issue 6337) and
``InvalidAuthenticationToken`` for a refused token.
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


PARSE_URI = "RequestBroker--ParseUri"
# microsoft-graph-docs-contrib issue 6337 records the start of this message; the rest is Graph's usual
# wording as far as known (unverified).
NO_CONTENT_TYPE = (
    "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format."
)


def bad_request(message: str) -> GraphError:
    return GraphError(400, "badRequest", message)


def not_found(message: str) -> GraphError:
    return GraphError(404, "notFound", message)


def segment_not_found(segment: str) -> GraphError:
    """What Graph's front door answers for a path segment it cannot resolve (issue 10167)."""
    return GraphError(400, PARSE_URI, f"Resource not found for the segment '{segment}'.")


def missing_content_type() -> GraphError:
    return GraphError(400, "BadRequest", NO_CONTENT_TYPE)


def method_not_allowed(method: str, allowed: tuple[str, ...]) -> GraphError:
    return GraphError(
        405,
        "methodNotAllowed",
        f"The HTTP method '{method}' is not allowed on this resource. Allowed: {', '.join(allowed)}.",
        {"Allow": ", ".join(allowed)},
    )


def unauthenticated(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": 'Bearer realm=""'})


def forbidden(message: str) -> GraphError:
    return GraphError(403, "forbidden", message)


def access_denied(message: str) -> GraphError:
    """403 for a caller whose permissions suffice but who may not act on this resource (app binding).

    ``forbidden`` stays the answer for a missing permission; this code lets a client tell the two
    apart. Graph's code for the app-binding refusal is unknown (the refusal itself is inferred).
    """
    return GraphError(403, "accessDenied", message)


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


# Codes for statuses the fault injector or the HTTP layer can produce: the Viva tables' camelCase
# where they list the status, Graph's usual spelling otherwise (unverified for Viva).
STATUS_CODES: dict[int, str] = {
    400: "badRequest",
    401: "InvalidAuthenticationToken",
    403: "forbidden",
    404: "notFound",
    405: "methodNotAllowed",
    409: "conflict",
    412: "preconditionFailed",
    413: "requestEntityTooLarge",
    415: "UnsupportedMediaType",
    429: "tooManyRequests",
    500: "internalServerError",
    501: "NotImplemented",
    502: "badGateway",
    503: "serviceUnavailable",
    504: "gatewayTimeout",
}


def code_for_status(status: int) -> str:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    return "badRequest" if status < 500 else "internalServerError"
