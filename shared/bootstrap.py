"""The composition root: the process-wide clients that the triggers hand to ``shared``: one queue
client, one ledger, one httpx client and one credential per worker process.

Built on first use (the Functions host imports the app before settings may be complete, and Flex
Consumption gives module import 30 s), then reused by every invocation so tokens and connections
are cached.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import lru_cache

import httpx

from shared.archive import EventArchive
from shared.circuit import CircuitBreaker, Policy, TableCircuitStore, probe_lease
from shared.credentials import graph_credential, tls_options
from shared.dedupe import TableDeliveryDedupe
from shared.fetchback import LmsFetcher
from shared.graph import GraphClient
from shared.ledger import Ledger, push_timing, table_service
from shared.queue import StorageCommandQueue
from shared.ratebudget import RateBudgets
from shared.settings import Settings, get_settings
from shared.worker import WorkerPorts

logger = logging.getLogger(__name__)

_graph: GraphClient | None = None


@lru_cache(maxsize=1)
def command_queue() -> StorageCommandQueue:
    return StorageCommandQueue.from_settings(get_settings())


@lru_cache(maxsize=1)
def ledger() -> Ledger:
    """The ledger, its pre-tenant rows adopted before the first command is judged against it."""
    built = Ledger.from_settings(get_settings())
    built.adopt_legacy_rows()
    return built


def worker_ports() -> WorkerPorts:
    queue = command_queue()
    settings = get_settings()
    return WorkerPorts(
        graph=graph_client(),
        queue=queue,
        ledger=ledger(),
        timing=push_timing(settings.graph_timeout_seconds, settings.graph_max_inline_retry_seconds),
        max_deferrals=settings.graph_max_deferrals,
        max_inline_retry_seconds=settings.graph_max_inline_retry_seconds,
        circuit=circuit_breaker(),
        budgets=write_budgets(),
        fetch=lms_fetcher(),
    )


@lru_cache(maxsize=1)
def lms_fetcher() -> LmsFetcher:
    """Fetch-back's LMS clients over one httpx client for the process (``shared.fetchback``): each
    request bounded by GRAPH_TIMEOUT_SECONDS, a whole completion by the push's deadline rule."""
    settings = get_settings()
    timing = push_timing(settings.graph_timeout_seconds, settings.graph_max_inline_retry_seconds)
    return LmsFetcher(
        httpx.AsyncClient(timeout=settings.graph_timeout_seconds, follow_redirects=False),
        settings.sources,
        request_timeout=settings.graph_timeout_seconds,
        deadline_seconds=timing.deadline_seconds,
        max_inline_retry_seconds=settings.graph_max_inline_retry_seconds,
    )


@lru_cache(maxsize=1)
def write_budgets() -> RateBudgets | None:
    """The Graph write budgets, one per tenant and registration, in the ledger table shared by every
    instance (``shared.ratebudget``); ``None`` when GRAPH_WRITE_RATE_PER_SECOND is 0."""
    budgets = RateBudgets.from_settings(get_settings())
    if budgets is not None:
        rate, burst = budgets.policy.ceiling, budgets.policy.burst
        logger.info("graph write budget: %.3f writes/s, burst %d per tenant and registration", rate, burst)
    return budgets


@lru_cache(maxsize=1)
def circuit_breaker() -> CircuitBreaker:
    """The Graph circuit, one row in the ledger table shared by every instance (``shared.circuit``)."""
    settings = get_settings()
    push = push_timing(settings.graph_timeout_seconds, settings.graph_max_inline_retry_seconds)
    policy = Policy(
        failures_to_open=settings.graph_circuit_failures,
        first_cooldown=timedelta(seconds=settings.graph_circuit_cooldown_seconds),
        probe=probe_lease(push.lease_seconds),
    )
    table = table_service(settings).get_table_client(settings.ledger_table_name)
    return CircuitBreaker(TableCircuitStore(table), policy=policy)


def graph_client(settings: Settings | None = None) -> GraphClient:
    """The worker's Graph client, signed in as ``GRAPH_AUTH_MODE`` says (``shared.credentials``)."""
    global _graph
    if _graph is None:
        settings = settings or get_settings()
        credential = graph_credential(settings, **tls_options())
        http = httpx.AsyncClient(timeout=settings.graph_timeout_seconds)
        _graph = GraphClient(
            http,
            credential,
            root=settings.graph_root,
            scope=settings.graph_token_scope,
            max_inline_retry_seconds=settings.graph_max_inline_retry_seconds,
        )
        logger.info(
            "graph client ready root=%s auth=%s app=%s identity=%s",
            settings.graph_root,
            settings.graph_auth_mode,
            settings.viva_app_client_id if settings.graph_auth_mode == "app" else None,
            settings.azure_client_id or "system",
        )
    return _graph


async def aclose() -> None:
    """Close the worker's Graph client on the loop it was built on, then ``reset()``: without it, a
    host that ends its loop (the dev host in tests) leaves the credential's aiohttp session to be
    collected open, and Python prints "Unclosed client session" at exit."""
    global _graph
    graph, _graph = _graph, None
    if graph is not None:
        await graph.aclose()
    reset()


def reset() -> None:
    """Forget the cached settings and clients, for a host that restarts its event loop (tests, tools)."""
    global _graph
    _graph = None
    command_queue.cache_clear()
    ledger.cache_clear()
    circuit_breaker.cache_clear()
    write_budgets.cache_clear()
    lms_fetcher.cache_clear()
    get_settings.cache_clear()


# The intake's optional ports. Built from the current settings object, so they follow `reset()`
# (which forgets the settings) without a cache of their own to clear; None when the setting turns
# the step off (DEDUPE_HORIZON_HOURS=0, EVENT_ARCHIVE_RETENTION_DAYS=0).
_delivery_dedupe: tuple[Settings, TableDeliveryDedupe | None] | None = None
_event_archive: tuple[Settings, EventArchive | None] | None = None


def delivery_dedupe() -> TableDeliveryDedupe | None:
    global _delivery_dedupe
    settings = get_settings()
    if _delivery_dedupe is None or _delivery_dedupe[0] is not settings:
        _delivery_dedupe = (settings, TableDeliveryDedupe.from_settings(settings))
    return _delivery_dedupe[1]


def event_archive() -> EventArchive | None:
    global _event_archive
    settings = get_settings()
    if _event_archive is None or _event_archive[0] is not settings:
        _event_archive = (settings, EventArchive.from_settings(settings))
    return _event_archive[1]
