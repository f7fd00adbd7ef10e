"""The dev host's async core: one HTTP server plus one queue listener per queue-triggered function.

Used directly by the CLI (``asyncio.run``) and from a background thread by :class:`DevHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from azure.storage.queue.aio import QueueServiceClient

from .host_config import HostConfig
from .http_server import HttpFrontend
from .indexing import HttpFunction, IndexedFunction, QueueFunction
from .queue_connection import QueueConnection, create_service_client, resolve_queue_connection
from .queue_listener import QueueListener
from .queue_policy import poison_queue_name

logger = logging.getLogger(__name__)


def thread_count(settings: Mapping[str, str]) -> int | None:
    """``PYTHON_THREADPOOL_THREAD_COUNT`` as in the worker; unset means the executor's default."""
    value = settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class HostRuntime:
    """Start with :meth:`start`, stop with :meth:`stop`; both on the same event loop."""

    def __init__(
        self,
        functions: Sequence[IndexedFunction],
        config: HostConfig,
        settings: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        drain_timeout: float = 30.0,
    ) -> None:
        self.functions = list(functions)
        self.config = config
        self.settings = settings
        self.host = host
        self.requested_port = port
        self.drain_timeout = drain_timeout
        self.port = port
        self.listeners: list[QueueListener] = []
        self._executor = ThreadPoolExecutor(thread_count(settings), thread_name_prefix="devhost-fn")
        self._http = HttpFrontend(
            [f for f in self.functions if isinstance(f, HttpFunction)], config.route_prefix, self._executor
        )
        # Resolved now so a missing connection setting fails before any port is opened.
        queue_functions = [f for f in self.functions if isinstance(f, QueueFunction)]
        self._connections = {f.name: resolve_queue_connection(f.connection, settings) for f in queue_functions}
        self._runner: web.AppRunner | None = None
        self._clients: dict[QueueConnection, tuple[QueueServiceClient, Any]] = {}

    @property
    def base_url(self) -> str:
        root = f"http://{self.host}:{self.port}"
        return f"{root}/{self.config.route_prefix}" if self.config.route_prefix else root

    async def start(self) -> None:
        """Open the HTTP port and start every queue listener; undo everything on failure."""
        try:
            await self._start_http()
            for function in self.functions:
                if isinstance(function, QueueFunction):
                    await self._start_listener(function)
        except BaseException:
            await self.stop()
            raise
        self._log_auth_levels()

    async def _start_http(self) -> None:
        self._runner = web.AppRunner(
            self._http.application(), handle_signals=False, access_log=None, shutdown_timeout=self.drain_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    def _client_for(self, connection: QueueConnection) -> QueueServiceClient:
        if connection not in self._clients:
            self._clients[connection] = create_service_client(connection)
        return self._clients[connection][0]

    async def _start_listener(self, function: QueueFunction) -> None:
        connection = self._connections[function.name]
        service = self._client_for(connection)
        poison_name = poison_queue_name(function.queue_name)
        listener = QueueListener(
            function,
            service.get_queue_client(function.queue_name),
            service.get_queue_client(poison_name) if poison_name else None,
            self.config.queues,
            self._executor,
        )
        try:
            await listener.ensure_queues()
        except Exception as exc:
            raise ConnectionError(
                f"function {function.name!r}: cannot create queue {function.queue_name!r} "
                f"using setting {connection.setting!r}: {exc}"
            ) from exc
        listener.start()
        self.listeners.append(listener)
        logger.info(
            "function %s listening on queue %s (poison queue %s)", function.name, function.queue_name, poison_name
        )

    def _log_auth_levels(self) -> None:
        keyed = sorted(
            f"{f.name}={f.auth_level}"
            for f in self.functions
            if isinstance(f, HttpFunction) and f.auth_level != "anonymous"
        )
        if keyed:
            logger.info("auth levels are not enforced locally (as with Core Tools): %s", ", ".join(keyed))

    async def is_idle(self) -> bool:
        """True when no HTTP request is being served and every trigger queue is settled."""
        if self._http.in_flight:
            return False
        for listener in self.listeners:
            if not await listener.is_idle():
                return False
        return self._http.in_flight == 0  # a request may have arrived during the queue checks

    async def stop(self) -> None:
        """Stop polling, finish in-flight invocations and requests, then release every resource."""
        listeners, self.listeners = self.listeners, []
        await asyncio.gather(*(listener.stop(self.drain_timeout) for listener in listeners))
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        clients, self._clients = self._clients, {}
        for client, credential in clients.values():
            await client.close()
            if credential is not None:
                await credential.close()
        self._executor.shutdown(wait=False, cancel_futures=False)
