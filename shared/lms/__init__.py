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

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from shared.graph import Deadline

# The largest answer read from an LMS: a course detail is a few kB; a bigger body is not one.
MAX_RESPONSE_BYTES = 1_048_576
# A page of a course list: 100 courses of a few kB each fit in a few MB. Moodle's list has no pages
# (``shared.lms.moodle``): its one answer holds every course, so it is bounded separately there.
MAX_PAGE_BYTES = 16 * MAX_RESPONSE_BYTES
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


@dataclass(frozen=True)
class Listed:
    """One course of an LMS's course list: the platform's own id and the course as fetch-back sees it,
    or, for a course whose values the client's mapping refuses (an undocumented state, a time out of
    range), the ``problem`` instead: one bad course is a bad record of the catalog, not a failed run."""

    course_id: str
    course: LmsCourse | None = None
    problem: str | None = None


def listed(course_id: str, mapping: Callable[..., LmsCourse], *args: Any) -> Listed:
    """The course ``mapping(*args)`` makes, or its refusal as the ``problem``."""
    try:
        return Listed(course_id, mapping(*args))
    except LmsPermanentError as error:
        return Listed(course_id, problem=error.message)


class LmsLister(Protocol):
    """One LMS's whole catalog, one page at a time (``vlsync backfill --source``)."""

    lms: str

    def courses(self, paging: Paging) -> AsyncIterator[Listed]:
        """Every course the API secret may see, in the LMS's order; pages fetched through ``paging``."""
        ...


T = TypeVar("T")


@dataclass
class Paging:
    """How a course list is read: the page size asked for, and each page's own retry of transient
    failures (429, 5xx, timeouts), waiting the LMS's ``Retry-After`` (else ``backoff``) in between.

    Each page gets its own :class:`Deadline` (``page_seconds``): a catalog of many pages takes as long as
    it takes, but one page never hangs. Attempts stop at ``attempts`` or when a wait would exceed
    ``max_wait_seconds`` (an LMS asking for longer is not waited for: the run stops and is resumed later).
    """

    page_size: int = 100  # Canvas's and Open edX's documented maximum per page
    page_seconds: float = 3 * DEFAULT_REQUEST_TIMEOUT
    attempts: int = 5
    max_wait_seconds: float = 120.0
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    pages: int = 0  # pages read so far (for the report)
    visited: set[str] = field(default_factory=set)  # next-page URLs followed so far

    def follow(self, url: str, base_url: str, lms: str) -> str:
        """A next-page URL to fetch: on ``apiBaseUrl``'s origin (:func:`same_origin`) and not one followed
        before. An LMS whose next link leads back to a page already read would loop for ever: that is an
        invalid answer, a permanent error."""
        url = same_origin(url, base_url, lms)
        if url in self.visited:
            raise LmsPermanentError(lms, None, "invalid-response", f"the next page {url} was already read")
        self.visited.add(url)
        return url

    async def fetch(self, page: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``page(*args, deadline=..., **kwargs)`` under a fresh deadline, again after a transient failure
        (see the class)."""
        for attempt in range(1, self.attempts + 1):
            try:
                answer = await page(*args, deadline=Deadline.after(self.page_seconds, self.clock), **kwargs)
            except LmsTransientError as error:
                wait = error.retry_after
                if wait is None:
                    wait = self.backoff[min(attempt, len(self.backoff)) - 1]
                if attempt == self.attempts or wait > self.max_wait_seconds:
                    raise
                await self.sleep(wait)
                continue
            self.pages += 1
            return answer
        raise AssertionError("unreachable")  # the loop returns or raises


_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")


def next_link(response: httpx.Response) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header (Canvas's pagination), or None."""
    for match in _LINK.finditer(response.headers.get("link", "")):
        params = match.group(2).lower().replace(" ", "")
        if 'rel="next"' in params or "rel=next" in params:
            return urljoin(str(response.url), str(match.group(1)))
    return None


def same_origin(url: str, base_url: str, lms: str) -> str:
    """``url`` when it is on the configured API's scheme, host and port; a next-page link elsewhere is a
    permanent error (the secret travels with every request, so only ``apiBaseUrl``'s origin gets it)."""
    given, base = urlsplit(url), urlsplit(base_url)
    if (given.scheme, given.netloc.lower()) != (base.scheme, base.netloc.lower()):
        raise LmsPermanentError(
            lms,
            None,
            "invalid-response",
            f"the next page is on {given.scheme}://{given.netloc}, not on apiBaseUrl's origin",
        )
    return url


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


def check(response: httpx.Response, lms: str, *, what: str, secret: ApiSecret, limit: int = MAX_RESPONSE_BYTES) -> None:
    """Raise the error a non-2xx answer means; ``what`` names the looked-up thing for a 404; ``limit``
    bounds a 2xx body (a course, or a page of a list)."""
    status = response.status_code
    if 200 <= status < 300:
        if len(response.content) > limit:
            raise LmsPermanentError(lms, status, "invalid-response", f"the answer is over {limit} bytes")
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


def parse(model: type[Model], response: httpx.Response, lms: str, what: str = "course") -> Model:
    """The answer as the vendor documents it, or a permanent error naming what is wrong."""
    try:
        data = response.json()
    except ValueError:
        raise LmsPermanentError(lms, response.status_code, "invalid-response", "the answer is not JSON") from None
    return validate(model, data, lms, response.status_code, what)


def validate(model: type[Model], data: Any, lms: str, status: int | None = None, what: str = "course") -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)[:5]
        )
        raise LmsPermanentError(
            lms, status, "invalid-response", f"the answer is not a {lms} {what}: {problems}"
        ) from None
