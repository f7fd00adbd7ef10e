"""The one Microsoft Graph client of the product (worker now; CLI, backfill and replay later).

It owns what every caller needs the same way: the managed-identity token, OData keys, Graph error
bodies, and a bounded in-invocation retry that honours ``Retry-After``. What it cannot finish within
its budget it raises as transient, so the queue (not this process) carries the wait. A retry never
repeats a create that may already have happened, and never hides a misconfiguration: a 401 gets one
fresh token, then names the permission the call needs.

A push under a ledger lease passes a ``Deadline``: the token, every attempt and every wait end before
it, so the push cannot outlive the lease (``shared.ledger.push_timing`` derives both). The deadline
also notes a request left without a complete answer, which Graph may still apply later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import email.utils
import json as jsonlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx
from azure.core.credentials import AccessToken
from azure.core.exceptions import AzureError
from opentelemetry.trace import SpanKind

from shared import odata, telemetry
from shared.models import upsert_body

logger = logging.getLogger(__name__)

Disposition = Literal["ok", "absent", "transient", "permanent"]
DeleteForm = Literal["ref", "plain"]
# 401 is not here: GraphClient.call answers it with one fresh token, then a permanent error.
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# What a service answers when it refuses a request's form rather than its target (a DELETE form it
# does not route): the client then tries the other delete form.
FORM_REFUSED = frozenset({400, 405})
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0)
MAX_INLINE_ATTEMPTS = 8  # besides the time budget: a bound on calls whatever the waits
MAX_ERROR_MESSAGE = 1024  # parked commands carry the message; keep them well inside 64 KiB
# No attempt starts with less than this left before a deadline: Graph answers a content call in well
# under a second when healthy, and an attempt cut off by the deadline leaves a request whose fate is
# unknown (it may still land) for no chance of success.
MIN_ATTEMPT_SECONDS = 2.0
# Answers of a gateway that gave up waiting for the service behind it: that service may still apply
# the request after the answer, like a request abandoned by a timeout.
GATEWAY_GAVE_UP = frozenset({502, 504})
# The methods that spend from a WriteBudget by default (a call's ``cost`` overrides).
_WRITES = frozenset({"PATCH", "POST", "DELETE"})
_BODY_HINT = re.compile(r"retry after (\d+) (second|minute)", re.IGNORECASE)
_MAY_HAVE_APPLIED = " (the request may have reached Graph, so it is not repeated)"
_CHALLENGE_CLAIMS = re.compile(r'claims="([^"]+)"')
# Transport failures that happen before a request is on the wire: repeating such a POST cannot
# create a second provider. Any other failure may come after Graph received it.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
    httpx.LocalProtocolError,
)

# The least permission of each call, as the docs' permission tables give it (copied from the "perm"
# entries of local/graph_metadata/learning-paths.derived.json, which cite the pages; a test keeps the
# two in step). A copy, because the deployed app never reads files under local/.
_CONTENT_READ = "the application permission LearningContent.Read.All (or LearningContent.ReadWrite.All)"
_CONTENT_WRITE = "the application permission LearningContent.ReadWrite.All (delegated tokens are not supported)"
_PROVIDER_READ = "the delegated permission LearningProvider.Read (or LearningProvider.ReadWrite)"
_PROVIDER_WRITE = "the delegated permission LearningProvider.ReadWrite (application tokens are not supported)"


class AsyncTokenCredential(Protocol):
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


class WriteBudget(Protocol):
    """The rate of Graph writes a tenant's registration may spend, shared by every instance (the one
    owner of that rule: ``shared.ratebudget``). ``GraphClient.call`` asks it before each write and
    tells it how Graph answered; a ``$batch`` spends one unit per request inside it, as Graph counts."""

    async def acquire(self, cost: int, deadline: Deadline | None) -> None:
        """Wait until ``cost`` writes may go. Raises ``GraphTransientError`` (code ``RateBudget``, with
        ``retry_after``) instead of waiting past the deadline or a shared ``notBefore``."""
        ...

    async def settled(self, status: int | None, retry_after: float | None) -> None:
        """Graph's answer to a write (``None``: no answer): a 429 or 503 cuts the rate and sets the
        shared ``notBefore``; success raises the rate again."""
        ...


@dataclass
class Deadline:
    """When one whole operation (token, attempts, back-off waits) must be over, on a monotonic clock.

    ``unsettled`` is set when a request under it was left without a complete answer (a timeout, a
    connection lost after sending, a gateway's 502/504): Graph may still apply it, later than any
    answer says, so whoever orders writes to the item must not let the next one start before it
    cannot land any more (``shared.ledger.Ledger.pushing`` then keeps the item's lease to its end).
    """

    at: float
    clock: Callable[[], float] = time.monotonic
    unsettled: bool = False

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def remaining(self) -> float:
        return self.at - self.clock()


@dataclass
class GraphError(Exception):
    """A Graph call that did not succeed, with Graph's own code, message and request id."""

    status: int | None
    code: str
    message: str
    request_id: str | None = None
    retry_after: float | None = None
    # True when a POST failed after Graph may have received it (a 5xx, a read timeout, a dropped
    # connection): repeating it could create a second object, so the caller must look first.
    may_have_applied: bool = False

    def __str__(self) -> str:
        where = f" (request-id {self.request_id})" if self.request_id else ""
        return f"{self.status or 'no response'} {self.code}: {self.message}{where}"


class GraphTransientError(GraphError):
    """Worth retrying later: throttling, server errors, timeouts, lost connections, token trouble, and
    a deadline that left no time for another attempt (code ``Deadline``)."""


class GraphPermanentError(GraphError):
    """Retrying the same request cannot succeed (bad request, forbidden, unknown registration)."""


@dataclass
class _Unauthorized(GraphPermanentError):
    """A 401, with the claims of Graph's challenge (Continuous Access Evaluation) when it sent one."""

    claims: str | None = None


def required_permission(method: str, path_or_url: str) -> str:
    """The permission a Graph call needs, in words for an error message."""
    path = httpx.URL(path_or_url).path if path_or_url.startswith("http") else path_or_url.partition("?")[0]
    if "/learningcontents" in path.lower():
        return _CONTENT_READ if method.upper() == "GET" else _CONTENT_WRITE
    return _PROVIDER_READ if method.upper() == "GET" else _PROVIDER_WRITE


def _challenge_claims(header: str | None) -> str | None:
    """The claims of a ``WWW-Authenticate`` claims challenge (base64 JSON), or None."""
    match = _CHALLENGE_CLAIMS.search(header or "")
    if match is None:
        return None
    encoded = match.group(1)
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def _fresh_token_claims() -> str:
    """Claims asking for a token issued no earlier than now (the shape of Entra's CAE challenge).

    azure-identity never answers a request with claims from its cache (managed identity:
    ``ManagedIdentityClient.get_cached_token`` returns None when claims are given, and the request
    itself drops them, as the identity endpoint takes none), so this is how one fresh token is had.
    """
    return jsonlib.dumps({"access_token": {"nbf": {"essential": True, "value": str(int(time.time()))}}})


def _transport_error(method: str, exc: httpx.TransportError, deadline: Deadline | None) -> GraphTransientError:
    """A request that got no answer. One that was on the wire may still be applied by Graph: noted on
    the deadline, and a POST is not repeated (``may_have_applied``)."""
    sent = not isinstance(exc, _NOT_SENT)
    if sent and deadline is not None:
        deadline.unsettled = True
    applied = method == "POST" and sent
    if isinstance(exc, httpx.TimeoutException):
        code, message = "Timeout", f"{method} timed out: {type(exc).__name__}"
    else:
        code, message = "ConnectionError", f"{method} failed: {type(exc).__name__}: {exc}"
    return GraphTransientError(None, code, message + (_MAY_HAVE_APPLIED if applied else ""), may_have_applied=applied)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or {"https": 443, "http": 80}.get(url.scheme)


def _server_date(response: httpx.Response) -> datetime | None:
    value = response.headers.get("date")
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        logger.warning("ignoring unreadable Date header %r", value[:64])
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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


def capped_timeout(configured: httpx.Timeout, remaining: float) -> httpx.Timeout:
    """The client's per-request timeout, each phase cut to what is left before a deadline."""

    def cap(phase: float | None) -> float:
        return remaining if phase is None else min(phase, remaining)

    return httpx.Timeout(**{phase: cap(seconds) for phase, seconds in configured.as_dict().items()})


def past_deadline(deadline: Deadline, last: GraphError | None, why: str) -> GraphTransientError:
    """The transient error of a call that stops because ``deadline`` leaves no time to go on; it keeps
    the last answer's status and ``Retry-After``, so the worker still defers a long wait Graph asked for."""
    left = max(0.0, deadline.remaining())
    message = f"{why} ({left:.1f}s left before the push's deadline)" + (f"; last error: {last}" if last else "")
    return GraphTransientError(
        last.status if last else None,
        "Deadline",
        message[:MAX_ERROR_MESSAGE],
        last.request_id if last else None,
        last.retry_after if last else None,
    )


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


@dataclass
class _Learned:
    """What a client learns from Graph's answers."""

    delete_form: DeleteForm | None = None  # the delete form this Graph honours, once known
    server_date: datetime | None = None  # the Date header of Graph's latest answer


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
        tenant_id: str | None = None,
        budget: WriteBudget | None = None,
    ) -> None:
        """``on_retry(error, attempt, delay)`` is told before each wait (the CLI shows it); optional.
        ``tenant_id``: the tenant tokens are asked for (``None``: the credential's own).
        ``budget``: the shared write rate (``None``: writes are not rate-limited here)."""
        self.budget = budget
        self._http = http
        self._tenant_id = tenant_id
        self._credential = credential
        self._root = root.rstrip("/")
        self._origin = _origin(httpx.URL(self._root))
        self._scope = scope
        self._budget = max_inline_retry_seconds
        self._sleep = sleep
        self._on_retry = on_retry
        # What this client learns about Graph, shared with its per-tenant copies (``for_tenant``): the
        # delete form Graph honours is Graph's, not a tenant's, and is learned once per process.
        self._learned = _Learned()
        self._tenant_clients: dict[str, GraphClient] = {}

    async def aclose(self) -> None:
        """Close the connections and the credential's own session (shared with every copy of this
        client): for a host that ends its event loop while the process goes on (tests, tools)."""
        await self._http.aclose()
        close = getattr(self._credential, "close", None)  # every aio credential has it; the protocol omits it
        if close is not None:
            await close()

    @property
    def last_server_date(self) -> datetime | None:
        """Graph's clock: the Date header of its latest answer (errors included), so callers can take
        event times from Graph rather than from this machine."""
        return self._learned.server_date

    @property
    def _delete_form(self) -> DeleteForm | None:
        return self._learned.delete_form

    def for_tenant(self, tenant_id: str | None) -> GraphClient:
        """The same client (connections, credential, token cache) asking for ``tenant_id``'s tokens."""
        if tenant_id is None or tenant_id == self._tenant_id:
            return self
        found = self._tenant_clients.get(tenant_id)
        if found is None:  # one copy per tenant, kept: the copies share _learned and this dict
            found = copy.copy(self)
            found._tenant_id = tenant_id
            self._tenant_clients[tenant_id] = found
        return found

    def with_budget(self, budget: WriteBudget | None) -> GraphClient:
        """The same client spending from ``budget`` (one per tenant and registration, ``shared.ratebudget``)."""
        if budget is self.budget:
            return self
        found = copy.copy(self)  # shares connections, credential and what was learned
        found.budget = budget
        found._tenant_clients = {}  # its tenant copies keep this budget; the plain client's keep none
        return found

    # -- learning content ---------------------------------------------------------------------

    async def upsert_content(
        self,
        registration_id: str,
        content: dict[str, Any],
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """Create or update by external id. Every managed property is sent (absent ones as null or []),
        so the result is the same whether Graph replaces or merges (``shared.models.upsert_body``)."""
        path = odata.content_by_external_id(registration_id, str(content["externalId"]))
        response = await self.call(
            "PATCH", path, json=upsert_body(content), correlation_id=correlation_id, deadline=deadline
        )
        return _json_object(response)

    async def delete_content(
        self,
        registration_id: str,
        external_id: str,
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> bool:
        """Delete by external id; ``False`` when it was already gone (a repeat delivery)."""
        return await self._delete(odata.content_by_external_id(registration_id, external_id), correlation_id, deadline)

    async def get_content(
        self,
        registration_id: str,
        external_id: str,
        *,
        select: list[str] | None = None,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        response = await self.call(
            "GET",
            odata.content_by_external_id(registration_id, external_id) + odata.select(select),
            correlation_id=correlation_id,
            deadline=deadline,
        )
        data: dict[str, Any] = response.json()
        return data

    async def get_content_by_id(
        self,
        registration_id: str,
        content_id: str,
        *,
        select: list[str] | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        response = await self.call(
            "GET", odata.content_by_id(registration_id, content_id) + odata.select(select), deadline=deadline
        )
        data: dict[str, Any] = response.json()
        return data

    async def delete_content_by_id(
        self, registration_id: str, content_id: str, *, deadline: Deadline | None = None
    ) -> bool:
        """Delete by Graph's id; ``False`` when it was already gone."""
        return await self._delete(odata.content_by_id(registration_id, content_id), None, deadline)

    async def _delete(self, path: str, correlation_id: str | None, deadline: Deadline | None = None) -> bool:
        """DELETE in the form Graph honours; ``False`` only when a GET by the same key finds nothing.

        The docs show only ``…/$ref`` (learningprovider-delete-learningcontents.md); the official SDK
        sends the form without it. The documented form goes first; while the honoured form is unknown,
        a form that Graph refuses (400/405), or that answers 404 for an item a GET still finds, counts
        as refused and the other form is tried. Only a 2xx teaches the client a form: a 404 or a 400
        for an unknown registration says nothing about the form, and must not decide it for good.
        """
        learning = self._delete_form is None
        forms: tuple[DeleteForm, ...] = (self._delete_form,) if self._delete_form else ("ref", "plain")
        refusals: list[GraphPermanentError] = []
        for form in forms:
            target = odata.ref(path) if form == "ref" else path
            try:
                response = await self.call("DELETE", target, correlation_id=correlation_id, deadline=deadline)
            except GraphPermanentError as error:
                if learning and error.status in FORM_REFUSED:
                    refusals.append(error)
                    continue
                raise
            if response.status_code != 404:
                self._remember_delete_form(form, refusals[0] if refusals else None)
                return True
            if await self._absent(path, correlation_id, deadline):
                return False
            still_there = self._still_there(target, response)
            if not learning:
                raise still_there
            refusals.append(still_there)
        # Every form refused: a 400 or a 404-but-present says more than a 405 on the form.
        raise next((error for error in refusals if error.status != 405), refusals[0])

    async def _absent(self, path: str, correlation_id: str | None, deadline: Deadline | None = None) -> bool:
        """Whether a GET by the same key finds nothing (a 404 on DELETE alone may come from a form the
        service does not route, and calling the course gone while Viva still shows it loses the delete)."""
        try:
            await self.call("GET", path, correlation_id=correlation_id, deadline=deadline)
        except GraphPermanentError as error:
            if error.status == 404:
                return True
            raise
        return False

    @staticmethod
    def _still_there(target: str, response: httpx.Response) -> GraphPermanentError:
        code, message = _graph_error(response)
        return GraphPermanentError(
            404,
            code,
            f"DELETE {target} answered 404 but the item still exists (a GET by the same key found it), "
            f"so it was not deleted. Graph said: {message}"[:MAX_ERROR_MESSAGE],
            response.headers.get("request-id"),
        )

    def _remember_delete_form(self, form: DeleteForm, refused: GraphPermanentError | None) -> None:
        if self._delete_form is not None:
            return
        self._learned.delete_form = form
        if refused is not None:
            logger.warning(
                "Graph refused the documented delete form …/$ref (%s); this client uses the delete form "
                "without /$ref from now on",
                refused,
            )

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

    @property
    def timeout_seconds(self) -> float:
        """The longest phase of one request's timeout (0: none; a deadline then bounds each request)."""
        return max((seconds for seconds in self._http.timeout.as_dict().values() if seconds is not None), default=0.0)

    @property
    def max_inline_retry_seconds(self) -> float:
        """The longest total wait between the attempts of one call."""
        return self._budget

    async def call(
        self,
        method: str,
        path_or_url: str,
        *,
        json: Any = None,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
        cost: int | None = None,
    ) -> httpx.Response:
        """One logical call: retried within the budget, then raised as transient or permanent.

        ``cost``: the writes this request spends from the shared ``WriteBudget`` (a ``$batch`` of n
        writes costs n); ``None``: 1 for a PATCH, POST or DELETE, 0 for a read.

        A POST that may have reached Graph is raised at once (``may_have_applied``). A 401 gets one
        fresh token (the credential's cache bypassed) and then fails with the permission it needs.
        Under a ``deadline`` the token and each request end before it, and neither a wait nor an
        attempt begins that would leave the attempt less than ``MIN_ATTEMPT_SECONDS``: the call then
        raises a transient error of code ``Deadline``.
        """
        waited = 0.0
        attempt = 0
        claims: str | None = None  # set: the next attempt takes a fresh token with these claims
        refreshed = False
        last: GraphTransientError | None = None
        spend = (1 if method.upper() in _WRITES else 0) if cost is None else cost
        while True:
            attempt += 1
            fresh, claims = claims, None
            if deadline is not None and deadline.remaining() < MIN_ATTEMPT_SECONDS:
                raise past_deadline(deadline, last, f"{method} not attempted")
            if spend and self.budget is not None:
                # Every attempt spends from the shared budget (Graph counts each); a wait longer than
                # the budget allows is raised as it is (code RateBudget): the queue carries it.
                await self.budget.acquire(spend, deadline)
            try:
                return await self._once(method, path_or_url, json, correlation_id, fresh, deadline, spend)
            except _Unauthorized as error:
                if refreshed:
                    raise self._misconfigured(method, path_or_url, error) from error
                refreshed = True
                # A cached token may have been revoked or may predate a new role assignment: one
                # fresh token settles it, with no wait (nothing is throttled).
                claims = error.claims or _fresh_token_claims()
                logger.warning("graph %s answered 401; retrying once with a fresh token", method)
            except GraphTransientError as error:
                delay = next_delay(error, attempt)
                if error.may_have_applied or waited + delay > self._budget or attempt >= MAX_INLINE_ATTEMPTS:
                    raise
                if deadline is not None and deadline.remaining() - delay < MIN_ATTEMPT_SECONDS:
                    raise past_deadline(deadline, error, f"{method} not retried after {delay:.1f}s") from error
                last = error
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

    @staticmethod
    async def _settle(budget: WriteBudget, response: httpx.Response) -> None:
        """Tell the budget how Graph answered a write, with its ``Retry-After`` on a 429 or 503."""
        status = response.status_code
        hint = retry_after_seconds(response.headers, _graph_error(response)[1]) if status in (429, 503) else None
        await budget.settled(status, hint)

    @staticmethod
    def _misconfigured(method: str, path_or_url: str, error: GraphError) -> GraphPermanentError:
        needs = required_permission(method, path_or_url)
        return GraphPermanentError(
            401,
            error.code,
            f"Graph refused the token, and a fresh one too: {method} needs {needs}; grant it to this "
            f"identity (and admin-consent it). Graph said: {error.message}"[:MAX_ERROR_MESSAGE],
            error.request_id,
        )

    async def _token(self, claims: str | None) -> str:
        tenant: dict[str, str] = {"tenant_id": self._tenant_id} if self._tenant_id else {}
        try:
            if claims is not None:
                try:
                    return (await self._credential.get_token(self._scope, claims=claims, **tenant)).token
                except AzureError as exc:
                    # Some credentials refuse claims (AzureCliCredential); they keep no token cache
                    # in this process either, so a plain request is as fresh as it gets.
                    logger.info("credential took no claims (%s); asking for a token without them", type(exc).__name__)
            return (await self._credential.get_token(self._scope, **tenant)).token
        except AzureError as exc:
            # The aio credential raises ClientAuthenticationError for refusals and ServiceRequestError /
            # ServiceResponseError for lost connections: all are the token endpoint's trouble, not the command's.
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise GraphTransientError(None, "TokenUnavailable", f"{type(exc).__name__}: {first_line}") from exc

    async def _token_before(self, claims: str | None, deadline: Deadline | None) -> str:
        if deadline is None:
            return await self._token(claims)
        try:
            async with asyncio.timeout(max(0.0, deadline.remaining())):
                return await self._token(claims)
        except TimeoutError as exc:
            raise past_deadline(deadline, None, "no token came") from exc

    async def _send(
        self, method: str, url: str, body: Any, headers: dict[str, str], deadline: Deadline | None
    ) -> httpx.Response:
        """The request; under a deadline each timeout phase is cut to what is left, and so is the whole
        exchange (httpx bounds each phase, not an answer that trickles in slowly)."""
        if deadline is None:
            return await self._http.request(method, httpx.URL(url), json=body, headers=headers)
        left = max(0.0, deadline.remaining())
        timeout = capped_timeout(self._http.timeout, left)
        try:
            async with asyncio.timeout(left):
                return await self._http.request(method, httpx.URL(url), json=body, headers=headers, timeout=timeout)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("no complete answer before the push's deadline") from exc

    async def _once(
        self,
        method: str,
        path_or_url: str,
        body: Any,
        correlation_id: str | None,
        claims: str | None = None,
        deadline: Deadline | None = None,
        spend: int = 0,
    ) -> httpx.Response:
        url = path_or_url if path_or_url.startswith("http") else self._root + path_or_url
        if _origin(httpx.URL(url)) != self._origin:
            # An @odata.nextLink to another host would carry the bearer token there.
            raise GraphPermanentError(
                None,
                "ForeignNextLink",
                f"not following {url[:200]} (an @odata.nextLink or other absolute URL): it is not on Graph's "
                f"origin {self._root}, and the request would carry the bearer token there",
            )
        token = await self._token_before(claims, deadline)
        headers = {"Authorization": f"Bearer {token}"}
        if correlation_id:
            headers["client-request-id"] = correlation_id
        try:
            with telemetry.tracer.start_as_current_span(
                f"graph {method}", kind=SpanKind.CLIENT, attributes={"http.request.method": method, "url.full": url}
            ) as span:
                headers.update(telemetry.inject())
                response = await self._send(method, url, body, headers, deadline)
                span.set_attribute("http.response.status_code", response.status_code)
        except httpx.TransportError as exc:
            if spend and self.budget is not None:
                await self.budget.settled(None, None)
            raise _transport_error(method, exc, deadline) from exc
        if spend and self.budget is not None:
            await self._settle(self.budget, response)
        if deadline is not None and response.status_code in GATEWAY_GAVE_UP:
            deadline.unsettled = True
        self._learned.server_date = _server_date(response) or self._learned.server_date
        disposition = classify(response.status_code, method)
        if disposition in ("ok", "absent"):
            return response
        code, message = _graph_error(response)
        request_id = response.headers.get("request-id")
        if response.status_code == 401:
            claims = _challenge_claims(response.headers.get("www-authenticate"))
            raise _Unauthorized(401, code, message, request_id, claims=claims)
        if disposition == "transient":
            # A 429 refused the request; a 5xx may come after the create happened.
            applied = method == "POST" and response.status_code >= 500
            raise GraphTransientError(
                response.status_code,
                code,
                message + (_MAY_HAVE_APPLIED if applied else ""),
                request_id,
                retry_after_seconds(response.headers, message),
                may_have_applied=applied,
            )
        raise GraphPermanentError(response.status_code, code, message, request_id)
