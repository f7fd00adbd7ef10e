"""The composition root: the process-wide clients that the triggers hand to ``shared``: one queue
client, one ledger, one httpx client and one credential per worker process.

Built on first use (the Functions host imports the app before settings may be complete, and Flex
Consumption gives module import 30 s), then reused by every invocation so tokens and connections
are cached.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import httpx

from shared.credentials import graph_credential, tls_options
from shared.graph import GraphClient
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings, get_settings
from shared.worker import WorkerPorts

logger = logging.getLogger(__name__)

_graph: GraphClient | None = None


@lru_cache(maxsize=1)
def command_queue() -> StorageCommandQueue:
    return StorageCommandQueue.from_settings(get_settings())


@lru_cache(maxsize=1)
def ledger() -> Ledger:
    return Ledger.from_settings(get_settings())


def worker_ports() -> WorkerPorts:
    queue = command_queue()
    settings = get_settings()
    return WorkerPorts(
        graph=graph_client(),
        queue=queue,
        ledger=ledger(),
        lease_seconds=max(120.0, 3 * settings.graph_timeout_seconds + settings.graph_max_inline_retry_seconds),
        max_deferrals=settings.graph_max_deferrals,
        max_inline_retry_seconds=settings.graph_max_inline_retry_seconds,
    )


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


def reset() -> None:
    """Forget the cached settings and clients, for a host that restarts its event loop (tests, tools)."""
    global _graph
    _graph = None
    command_queue.cache_clear()
    ledger.cache_clear()
    get_settings.cache_clear()
