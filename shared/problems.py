"""RFC 9457 problem details: every rejected webhook gets one, with a stable ``type`` per error.

The catalogue below is the single source of the types; ``docs/problems.md`` documents each one and
a test keeps the two in step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:vlsync:problem:"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.slug


UNKNOWN_SOURCE = ProblemType("unknown-source", 404, "Unknown webhook source")
UNSUPPORTED_MEDIA_TYPE = ProblemType("unsupported-media-type", 415, "Unsupported media type")
BODY_TOO_LARGE = ProblemType("body-too-large", 413, "Request body too large")
COMMAND_TOO_LARGE = ProblemType("command-too-large", 413, "Content command too large for the queue")
SIGNATURE_MISSING = ProblemType("signature-missing", 401, "Webhook signature missing")
SIGNATURE_INVALID = ProblemType("signature-invalid", 401, "Webhook signature invalid")
SIGNATURE_EXPIRED = ProblemType("signature-expired", 401, "Webhook timestamp outside the tolerance")
BAD_JSON = ProblemType("bad-json", 400, "Body is not valid JSON")
SCHEMA_VIOLATION = ProblemType("schema-violation", 400, "Event does not match the schema")
EMPTY_BATCH = ProblemType("empty-batch", 400, "Batch holds no events")
SOURCE_MISCONFIGURED = ProblemType("source-misconfigured", 500, "Webhook source is misconfigured")
QUEUE_UNAVAILABLE = ProblemType("queue-unavailable", 503, "Queue storage unavailable")
CREDENTIAL_MISSING = ProblemType("credential-missing", 401, "Source key or token missing")
CREDENTIAL_INVALID = ProblemType("credential-invalid", 401, "Source key or token invalid")
KEYS_UNAVAILABLE = ProblemType("keys-unavailable", 503, "Signing keys unavailable")
CONTENT_INCOMPLETE = ProblemType("content-incomplete", 422, "Event lacks required learningContent fields")

CATALOGUE: tuple[ProblemType, ...] = (
    UNKNOWN_SOURCE,
    UNSUPPORTED_MEDIA_TYPE,
    BODY_TOO_LARGE,
    COMMAND_TOO_LARGE,
    SIGNATURE_MISSING,
    SIGNATURE_INVALID,
    SIGNATURE_EXPIRED,
    BAD_JSON,
    SCHEMA_VIOLATION,
    EMPTY_BATCH,
    SOURCE_MISCONFIGURED,
    QUEUE_UNAVAILABLE,
    CREDENTIAL_MISSING,
    CREDENTIAL_INVALID,
    KEYS_UNAVAILABLE,
    CONTENT_INCOMPLETE,
)


@dataclass(frozen=True)
class FieldError:
    """One failing field: a JSON pointer (RFC 6901) into the body, or the request header at fault."""

    detail: str
    pointer: str | None = None
    header: str | None = None

    def as_dict(self) -> dict[str, str]:
        doc = {"detail": self.detail}
        if self.pointer is not None:
            doc["pointer"] = self.pointer
        if self.header is not None:
            doc["header"] = self.header
        return doc


@dataclass
class Problem(Exception):
    """A rejection: raised by the decision code, rendered once by the intake."""

    kind: ProblemType
    detail: str
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind.slug}: {self.detail}"

    def body(self, *, instance: str | None = None, correlation_id: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.kind.uri,
            "title": self.kind.title,
            "status": self.kind.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if correlation_id:
            doc["correlationId"] = correlation_id
        if self.errors:
            doc["errors"] = [e.as_dict() for e in self.errors]
        return doc


def json_pointer(path: tuple[str | int, ...] | list[str | int]) -> str:
    """RFC 6901 pointer of a location tuple (``~`` and ``/`` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def lone_surrogates(document: Any) -> list[str]:
    """Pointers to the strings (keys included) of a decoded JSON document that hold a lone surrogate.

    JSON may escape one (``"\\ud800"``); Python decodes it, and only encoding it again (for the queue,
    for Graph) fails. A valid pair decodes to one character, so any surrogate left is a lone one.
    """
    found: list[str] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:  # iterative: a deeply nested body must not exhaust the stack
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                found.append(json_pointer(path))
        elif isinstance(value, dict):
            for key, item in value.items():
                if _SURROGATE.search(key):  # the pointer names it escaped, so the answer stays encodable
                    key = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    found.append(json_pointer((*path, key)))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))
    return sorted(found)
