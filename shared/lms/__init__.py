"""LMS REST clients for fetch-back: one adapter per external system, one documented GET each.

A thin webhook (Canvas, Moodle, Open edX, Thinkific) names a course; the worker asks the LMS for the
course (``shared.fetchback``) through the client of the source's kind. Every client answers the same
way, an :class:`LmsCourse` of Graph property names with the LMS's raw values (the intake's
normalisation rules then apply), or raises:

- :class:`LmsTransientError`: 429, 5xx, 408, timeouts and transport failures (worth retrying; carries
  the LMS's ``Retry-After``), and a rate limit an LMS answers with 403 (Canvas, Thinkific);
- :class:`LmsPermanentError`: 401/403 (the API secret or its permissions: a misconfiguration), 404
  (the course no longer exists), other 4xx, and an answer that is not what the vendor documents.

Nothing here logs or returns a secret: messages name the app setting that holds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.graph import Deadline

# The largest answer read from an LMS: a course detail is a few kB; a bigger body is not one.
MAX_RESPONSE_BYTES = 1_048_576
MAX_ERROR_TEXT = 300
# One request's own bound (the worker's GRAPH_TIMEOUT_SECONDS by default); the completion's Deadline
# bounds them all together.
DEFAULT_REQUEST_TIMEOUT = 30.0
# Statuses that say "not now" rather than "never": request timeout, too early, throttled, server errors.
_TRANSIENT = frozenset({408, 425, 429})


@dataclass
class LmsError(Exception):
    """An LMS call that did not give the course: which LMS, its status, a code and what it said."""

    lms: str
    status: int | None
    code: str
    message: str
    retry_after: float | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"{self.lms} {self.status or 'no response'} {self.code}: {self.message}"


class LmsTransientError(LmsError):
    """Worth retrying later: throttling, server errors, timeouts, lost connections."""


class LmsPermanentError(LmsError):
    """Retrying cannot help: a wrong or unauthorised API secret, a course that does not exist, an
    answer that is not the vendor's documented shape."""


@dataclass(frozen=True)
class LmsCourse:
    """One course as an LMS describes it, in Graph property names with raw values (normalised later).

    ``deleted``: the LMS says the course is deleted (Canvas ``workflow_state: "deleted"``), so the
    item is to be deleted. ``default_url``: the course page the LMS's address implies, used when
    neither the LMS, the event nor ``contentWebUrlTemplate`` gives one. ``url_values``: extra
    ``contentWebUrlTemplate`` values (Thinkific's slug).
    """

    fields: Mapping[str, Any] = field(default_factory=dict)
    deleted: bool = False
    default_url: str | None = None
    url_values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSecret:
    """The source's API secret and the name of the app setting it came from (for messages only)."""

    value: str
    setting: str

    def __repr__(self) -> str:  # never the value, whatever prints it
        return f"ApiSecret(setting={self.setting!r})"


class LmsClient(Protocol):
    """One LMS's course lookup (``shared.lms.canvas`` and the others)."""

    lms: str

    async def course(self, course_id: str, *, deadline: Deadline) -> LmsCourse:
        """The course ``course_id`` (the platform's own id); every request ends by ``deadline``."""
        ...


class ApiClient:
    """What every LMS client holds: the process's HTTP client, the API root, the secret, and the
    timeout of one request (each is also cut to the push's deadline)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        secret: ApiSecret,
        *,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        self.http, self.base_url, self.secret = http, base_url.rstrip("/"), secret
        self.request_timeout = request_timeout


# -- the shared HTTP steps -------------------------------------------------------------------------


async def send(
    http: httpx.AsyncClient,
    lms: str,
    method: str,
    url: str,
    *,
    deadline: Deadline,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    **kwargs: Any,
) -> httpx.Response:
    """One request; no answer (timeout, connection lost, DNS) is transient. Redirects are not followed:
    the configured ``apiBaseUrl`` is the trusted address, and a redirect would carry the secret along."""
    timeout = min(request_timeout, deadline.remaining())
    if timeout <= 0:
        raise LmsTransientError(lms, None, "Deadline", "no time left for the LMS call")
    try:
        return await http.request(method, url, timeout=timeout, follow_redirects=False, **kwargs)
    except httpx.TimeoutException as exc:
        raise LmsTransientError(
            lms, None, "Timeout", f"no answer within {timeout:.0f} s ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:
        raise LmsTransientError(lms, None, "Transport", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]) from exc


def check(response: httpx.Response, lms: str, *, what: str, secret: ApiSecret) -> None:
    """Raise the error a non-2xx answer means; ``what`` names the looked-up thing for a 404."""
    status = response.status_code
    if 200 <= status < 300:
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise LmsPermanentError(lms, status, "invalid-response", f"the answer is over {MAX_RESPONSE_BYTES} bytes")
        return
    said = _said(response)
    if status in _TRANSIENT or status >= 500 or (status == 403 and "rate limit" in said.lower()):
        raise LmsTransientError(
            lms,
            status,
            "throttled" if status in (403, 429) else f"http-{status}",
            said or response.reason_phrase,
            retry_after=retry_after(response),
        )
    if status in (401, 403):
        raise LmsPermanentError(
            lms,
            status,
            "unauthorized" if status == 401 else "forbidden",
            f"{lms} refused the API secret in app setting {secret.setting} (apiSecretSetting)"
            + (" or it lacks the permission to read courses" if status == 403 else "")
            + (f": {said}" if said else ""),
        )
    if status == 404:
        raise LmsPermanentError(
            lms, 404, "not-found", f"{what} does not exist in {lms}" + (f": {said}" if said else "")
        )
    raise LmsPermanentError(lms, status, f"http-{status}", said or response.reason_phrase)


def _said(response: httpx.Response) -> str:
    """The LMS's own words in an error body (Canvas ``errors[].message``, DRF ``detail``, ``error``), short."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:MAX_ERROR_TEXT]
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list):
            messages = [str(e["message"]) for e in errors if isinstance(e, dict) and isinstance(e.get("message"), str)]
            if messages:
                return "; ".join(messages)[:MAX_ERROR_TEXT]
        for key in ("detail", "error_description", "error", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:MAX_ERROR_TEXT]
    return ""


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], response: httpx.Response, lms: str) -> Model:
    """The answer as the vendor documents it, or a permanent error naming what is wrong."""
    try:
        data = response.json()
    except ValueError:
        raise LmsPermanentError(lms, response.status_code, "invalid-response", "the answer is not JSON") from None
    return validate(model, data, lms, response.status_code)


def validate(model: type[Model], data: Any, lms: str, status: int | None = None) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        raise LmsPermanentError(
            lms, status, "invalid-response", f"the answer is not a {lms} course: {problems}"
        ) from None
