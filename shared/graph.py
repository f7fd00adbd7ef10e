"""The one Microsoft Graph client of the product (worker now; CLI, backfill and replay later).

It owns what every caller needs the same way: the managed-identity token, OData keys, Graph error
bodies, and a bounded in-invocation retry that honours ``Retry-After``. What it cannot finish within
its budget it raises as transient, so the queue (not this process) carries the wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from opentelemetry.trace import SpanKind

from shared import odata, telemetry

logger = logging.getLogger(__name__)

Disposition = Literal["ok", "absent", "transient", "permanent"]
TRANSIENT_STATUSES = frozenset({401, 408, 409, 429, 500, 502, 503, 504})
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)
MAX_INLINE_ATTEMPTS = 8  # besides the time budget: a bound on calls whatever the waits
MAX_ERROR_MESSAGE = 1024  # parked commands carry the message; keep them well inside 64 KiB
_BODY_HINT = re.compile(r"retry after (\d+) (second|minute)", re.IGNORECASE)


class AsyncTokenCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


@dataclass
class GraphError(Exception):
    """A Graph call that did not succeed, with Graph's own code, message and request id."""

    status: int | None
    code: str
    message: str
    request_id: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        where = f" (request-id {self.request_id})" if self.request_id else ""
        return f"{self.status or 'no response'} {self.code}: {self.message}{where}"


class GraphTransientError(GraphError):
    """Worth retrying later: throttling, server errors, timeouts, lost connections, token trouble."""


class GraphPermanentError(GraphError):
    """Retrying the same request cannot succeed (bad request, forbidden, unknown registration)."""


def classify(status: int, method: str) -> Disposition:
    """What a Graph status means for a command; a 404 on DELETE means the goal is already reached."""
    if 200 <= status < 300:
        return "ok"
    if status == 404 and method == "DELETE":
        return "absent"
    if status in TRANSIENT_STATUSES or status >= 500:
        return "transient"
    return "permanent"


def retry_after_seconds(headers: httpx.Headers, body_message: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds or an HTTP date, else the "Retry after N minutes" hint in the body."""
    value = (headers.get("retry-after") or "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            parsed = email.utils.parsedate_to_datetime(value)
            return max(0.0, parsed.timestamp() - (time.time() if now is None else now))
        except (ValueError, TypeError, OverflowError):
            logger.warning("ignoring unreadable Retry-After %r", value[:64])
    if body_message:
        match = _BODY_HINT.search(body_message)
        if match:
            return float(match.group(1)) * (60 if match.group(2).lower() == "minute" else 1)
    return None


def next_delay(error: GraphTransientError, attempt: int) -> float:
    """Wait before retry ``attempt`` (1-based): never sooner than Graph's hint, never less than the
    exponential back-off (a ``Retry-After: 0`` must not turn into a hot loop)."""
    backoff = BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)]
    return max(backoff, error.retry_after or 0.0)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """The body of a successful call; a success whose body is not a JSON object still succeeded."""
    try:
        data = response.json() if response.content else {}
    except ValueError:
        logger.warning("graph answered %s with a non-JSON body", response.status_code)
        return {}
    return data if isinstance(data, dict) else {}


def _graph_error(response: httpx.Response) -> tuple[str, str]:
    """Graph's error code and message, from whatever body came back (Graph's shape, OAuth's, or none)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    err = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"code": err} if isinstance(err, str) else {}
    code = str(err.get("code") or response.reason_phrase or "Error")
    description = body.get("error_description") if isinstance(body, dict) else None
    message = str(err.get("message") or description or response.text[:500] or code)
    return code, message[:MAX_ERROR_MESSAGE]


class GraphClient:
    """Async Graph client over one ``httpx.AsyncClient`` and one credential (both reused per process)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        credential: AsyncTokenCredential,
        *,
        root: str,
        scope: str,
        max_inline_retry_seconds: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[GraphTransientError, int, float], None] | None = None,
    ) -> None:
        """``on_retry(error, attempt, delay)`` is told before each wait (the CLI shows it); optional."""
        self._http = http
        self._credential = credential
        self._root = root.rstrip("/")
        self._scope = scope
        self._budget = max_inline_retry_seconds
        self._sleep = sleep
        self._on_retry = on_retry

    # -- learning content ---------------------------------------------------------------------

    async def upsert_content(
        self, registration_id: str, content: dict[str, Any], *, correlation_id: str | None = None
    ) -> dict[str, Any]:
        path = odata.content_by_external_id(registration_id, str(content["externalId"]))
        response = await self.call("PATCH", path, json=content, correlation_id=correlation_id)
        return _json_object(response)

    async def delete_content(
        self, registration_id: str, external_id: str, *, correlation_id: str | None = None
    ) -> bool:
        """Delete by external id; ``False`` when it was already gone (a repeat delivery)."""
        path = odata.content_by_external_id(registration_id, external_id)
        response = await self.call("DELETE", path, correlation_id=correlation_id)
        return response.status_code != 404

    async def get_content(
        self,
        registration_id: str,
        external_id: str,
        *,
        select: list[str] | None = None,
        correlation_id: str | None = None,
    ) -> dict[str, Any]:
        response = await self.call(
            "GET",
            odata.content_by_external_id(registration_id, external_id) + odata.select(select),
            correlation_id=correlation_id,
        )
        data: dict[str, Any] = response.json()
        return data

    async def get_content_by_id(
        self, registration_id: str, content_id: str, *, select: list[str] | None = None
    ) -> dict[str, Any]:
        response = await self.call("GET", odata.content_by_id(registration_id, content_id) + odata.select(select))
        data: dict[str, Any] = response.json()
        return data

    async def delete_content_by_id(self, registration_id: str, content_id: str) -> bool:
        response = await self.call("DELETE", odata.content_by_id(registration_id, content_id))
        return response.status_code != 404

    async def list_contents(
        self, registration_id: str, *, top: int | None = None, select: list[str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a registration, following ``@odata.nextLink`` to the end."""
        async for item in self._pages(odata.contents(registration_id) + odata.query(top=top, select=select)):
            yield item

    async def _pages(self, url: str | None) -> AsyncIterator[dict[str, Any]]:
        while url:
            page = (await self.call("GET", url)).json()
            for item in page.get("value", []):
                yield item
            url = page.get("@odata.nextLink")

    # -- learning providers (delegated tokens only, as in Graph) -----------------------------------

    async def create_provider(self, provider: dict[str, Any]) -> dict[str, Any]:
        response = await self.call("POST", odata.providers(), json=provider)
        data: dict[str, Any] = response.json()
        return data

    async def update_provider(self, registration_id: str, changes: dict[str, Any]) -> None:
        await self.call("PATCH", odata.provider(registration_id), json=changes)

    async def get_provider(self, registration_id: str, *, select: list[str] | None = None) -> dict[str, Any]:
        response = await self.call("GET", odata.provider(registration_id) + odata.select(select))
        data: dict[str, Any] = response.json()
        return data

    async def list_providers(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self._pages(odata.providers()):
            yield item

    async def delete_provider(self, registration_id: str) -> None:
        await self.call("DELETE", odata.provider(registration_id))

    # -- transport ----------------------------------------------------------------------------

    async def call(
        self, method: str, path_or_url: str, *, json: Any = None, correlation_id: str | None = None
    ) -> httpx.Response:
        """One logical call: retried within the budget, then raised as transient or permanent."""
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, path_or_url, json, correlation_id)
            except GraphTransientError as error:
                delay = next_delay(error, attempt)
                if waited + delay > self._budget or attempt >= MAX_INLINE_ATTEMPTS:
                    raise
                logger.warning(
                    "graph %s transient %s; retry %d in %.1fs correlation=%s",
                    method,
                    error,
                    attempt,
                    delay,
                    correlation_id,
                )
                if self._on_retry is not None:
                    self._on_retry(error, attempt, delay)
                await self._sleep(delay)
                waited += delay

    async def _once(self, method: str, path_or_url: str, body: Any, correlation_id: str | None) -> httpx.Response:
        url = path_or_url if path_or_url.startswith("http") else self._root + path_or_url
        try:
            token = await self._credential.get_token(self._scope)
        except AzureError as exc:
            # The aio credential raises ClientAuthenticationError for refusals and ServiceRequestError /
            # ServiceResponseError for lost connections: all are the token endpoint's trouble, not the command's.
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise GraphTransientError(None, "TokenUnavailable", f"{type(exc).__name__}: {first_line}") from exc
        headers = {"Authorization": f"Bearer {token.token}"}
        if correlation_id:
            headers["client-request-id"] = correlation_id
        try:
            with telemetry.tracer.start_as_current_span(
                f"graph {method}", kind=SpanKind.CLIENT, attributes={"http.request.method": method, "url.full": url}
            ) as span:
                headers.update(telemetry.inject())
                response = await self._http.request(method, httpx.URL(url), json=body, headers=headers)
                span.set_attribute("http.response.status_code", response.status_code)
        except httpx.TimeoutException as exc:
            raise GraphTransientError(None, "Timeout", f"{method} timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise GraphTransientError(None, "ConnectionError", f"{method} failed: {type(exc).__name__}: {exc}") from exc
        disposition = classify(response.status_code, method)
        if disposition in ("ok", "absent"):
            return response
        code, message = _graph_error(response)
        request_id = response.headers.get("request-id")
        if disposition == "transient":
            raise GraphTransientError(
                response.status_code, code, message, request_id, retry_after_seconds(response.headers, message)
            )
        raise GraphPermanentError(response.status_code, code, message, request_id)
