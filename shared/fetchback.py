"""Fetch-back: complete a thin upsert from the LMS's REST API, in the worker, before the item's lease.

A source with ``apiBaseUrl`` queues its upserts as fetch commands (``ContentCommand.fetch``): the
intake stays fast and never calls the LMS. The worker hands such a command to its :class:`FetchPort`
first; :class:`LmsFetcher` asks the source's LMS for the course (``shared.lms``), normalises the
answer by the intake's own rules (``shared.sources.pipeline.complete``) and returns an ordinary
upsert with content, or a delete (the LMS says the course is deleted, or hidden with
``hiddenAs: delete``). The LMS call holds no lease, so a slow LMS never blocks the item's other
events.

Failures: :class:`shared.lms.LmsTransientError` (429, 5xx, timeouts) is retried inline while the
wait fits the inline budget, then raised for the worker's retry path; :class:`shared.lms.LmsPermanentError`
(a refused secret, a course that no longer exists, an answer of the wrong shape) and
:class:`FetchError` (the source's setup, or content that is still incomplete) are parked at once,
unless the ledger already holds this event or a newer one (the worker then skips it as stale).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from shared.graph import Deadline
from shared.lms import DEFAULT_REQUEST_TIMEOUT, ApiSecret, LmsClient, LmsCourse, LmsTransientError
from shared.lms.canvas import CanvasClient
from shared.lms.moodle import MoodleClient
from shared.lms.openedx import OpenEdxClient
from shared.lms.thinkific import ThinkificClient
from shared.models import ContentCommand
from shared.settings import (
    CanvasSource,
    LmsSource,
    MoodleSource,
    OpenEdxSource,
    SourceConfig,
    ThinkificSource,
    api_secret,
    fetch_back,
)
from shared.sources.pipeline import CompletionError, complete

logger = logging.getLogger(__name__)

# Attempts of one LMS call inside one invocation (then the queue's redelivery takes over), and the
# back-off between them when the LMS names no Retry-After.
MAX_INLINE_ATTEMPTS = 3
BACKOFF_SECONDS = (1.0, 2.0)


class FetchPort(Protocol):
    """What the worker asks before the lease: the command as it is to be pushed."""

    async def complete(self, command: ContentCommand) -> ContentCommand:
        """An upsert with content or a delete for a fetch command; raises ``LmsTransientError``,
        ``LmsPermanentError`` or :class:`FetchError`."""
        ...


@dataclass
class FetchError(Exception):
    """A fetch command that cannot be completed, through no fault of the LMS's availability: the
    source is gone or not set up for fetch-back, its API secret is missing, or the LMS's course still
    lacks a required field (``content-incomplete``) or has a value the rules refuse (``content-invalid``)."""

    code: str
    message: str
    status: int | None = None
    request_id: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


ClientFactory = Callable[[httpx.AsyncClient, SourceConfig, ApiSecret, float], LmsClient]


def client_for(http: httpx.AsyncClient, source: SourceConfig, secret: ApiSecret, request_timeout: float) -> LmsClient:
    """The LMS client of the source's kind (one adapter per external system)."""
    if isinstance(source, CanvasSource) and source.api_base_url:
        return CanvasClient(http, source.api_base_url, secret, request_timeout=request_timeout)
    if isinstance(source, MoodleSource) and source.api_base_url:
        return MoodleClient(http, source.api_base_url, secret, request_timeout=request_timeout)
    if isinstance(source, OpenEdxSource) and source.api_base_url and source.api_client_id:
        return OpenEdxClient(
            http, source.api_base_url, source.api_client_id, secret, source.token_url, request_timeout=request_timeout
        )
    if isinstance(source, ThinkificSource) and source.api_base_url and source.api_subdomain:
        return ThinkificClient(http, source.api_base_url, source.api_subdomain, secret, request_timeout=request_timeout)
    raise FetchError("fetchback-unconfigured", f"a {source.kind} source has no fetch-back client")


class LmsFetcher:
    """The worker's :class:`FetchPort`: one shared ``httpx.AsyncClient``, one LMS client per source
    (kept while the source's settings and secret stay the same, so an Open edX token is reused)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        sources: Callable[[], Mapping[str, SourceConfig]],
        *,
        secret: Callable[[SourceConfig], str | None] = api_secret,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        deadline_seconds: float = 3 * DEFAULT_REQUEST_TIMEOUT,
        max_inline_retry_seconds: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        factory: ClientFactory = client_for,
    ) -> None:
        self.http = http
        self._sources = sources
        self._secret = secret
        self.request_timeout = request_timeout
        self.deadline_seconds = deadline_seconds
        self.max_inline_retry_seconds = max_inline_retry_seconds
        self._sleep = sleep
        self._clock = clock
        self._factory = factory
        self._clients: dict[str, tuple[SourceConfig, str, LmsClient]] = {}

    async def complete(self, command: ContentCommand) -> ContentCommand:
        fetch = command.fetch
        if fetch is None:
            return command
        source = self._source(command)
        client = self._client(command.source, source)
        deadline = Deadline.after(self.deadline_seconds, self._clock)
        course = await self._course(client, fetch.course_id, deadline, command)
        if course.deleted:
            logger.info(
                "fetched %s course %s: deleted there; deleting %s correlation=%s",
                client.lms, fetch.course_id, command.external_id, command.correlation_id,
            )  # fmt: skip
            return command.model_copy(update={"op": "delete", "fetch": None, "content": None})
        with_values = fetch.model_copy(update={"url_values": {**fetch.url_values, **course.url_values}})
        try:
            content = complete(source, command.external_id, with_values, course.fields, default_url=course.default_url)
        except CompletionError as exc:
            raise FetchError(exc.code, f"{client.lms} course {fetch.course_id}: {exc}") from None
        if content is None:
            logger.info(
                "fetched %s course %s: hidden, and the source deletes hidden items; deleting %s correlation=%s",
                client.lms, fetch.course_id, command.external_id, command.correlation_id,
            )  # fmt: skip
            return command.model_copy(update={"op": "delete", "fetch": None, "content": None})
        logger.info(
            "fetched %s course %s for %s correlation=%s",
            client.lms, fetch.course_id, command.external_id, command.correlation_id,
        )  # fmt: skip
        return command.model_copy(update={"content": content, "fetch": None})

    def _source(self, command: ContentCommand) -> LmsSource:
        assert command.fetch is not None
        source = self._sources().get(command.source)
        if source is None:
            raise FetchError(
                "fetchback-unconfigured", f"source {command.source!r} is no longer in SOURCES, so its LMS is unknown"
            )
        if not fetch_back(source) or source.kind != command.fetch.kind or not isinstance(source, LmsSource):
            raise FetchError(
                "fetchback-unconfigured",
                f"source {command.source!r} is not a {command.fetch.kind} source with apiBaseUrl any more",
            )
        return source

    def _client(self, name: str, source: SourceConfig) -> LmsClient:
        value = self._secret(source)
        setting = getattr(source, "api_secret_setting", None) or "?"
        if not value:
            raise FetchError(
                "fetchback-unconfigured",
                f"app setting {setting} (apiSecretSetting of source {name!r}) is empty, missing or an unresolved "
                "Key Vault reference",
            )
        kept = self._clients.get(name)
        if kept is not None and kept[0] == source and kept[1] == value:
            return kept[2]
        client = self._factory(self.http, source, ApiSecret(value, setting), self.request_timeout)
        self._clients[name] = (source, value, client)
        return client

    async def _course(
        self, client: LmsClient, course_id: str, deadline: Deadline, command: ContentCommand
    ) -> LmsCourse:
        waited = 0.0
        for attempt in range(1, MAX_INLINE_ATTEMPTS + 1):
            try:
                return await client.course(course_id, deadline=deadline)
            except LmsTransientError as error:
                wait = error.retry_after if error.retry_after is not None else BACKOFF_SECONDS[min(attempt, 2) - 1]
                if (
                    attempt == MAX_INLINE_ATTEMPTS
                    or waited + wait > self.max_inline_retry_seconds
                    or wait >= deadline.remaining()
                ):
                    raise
                logger.warning(
                    "%s course %s for %s correlation=%s: %s; again in %.1fs (attempt %d/%d)",
                    client.lms, course_id, command.external_id, command.correlation_id, error, wait, attempt,
                    MAX_INLINE_ATTEMPTS,
                )  # fmt: skip
                await self._sleep(wait)
                waited += wait
        raise AssertionError("unreachable")  # the loop returns or raises
