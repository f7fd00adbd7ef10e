"""The app's triggers: one HTTP server for the HTTP functions, one queue listener per queue function.

Used directly by the CLI (``asyncio.run``) and from a background thread by :class:`DevHost`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from azure.storage.queue.aio import QueueServiceClient

from local.serving import Site, http_url, start_site
from shared import storage

from .host_config import HostConfig
from .http_server import HttpFrontend
from .indexing import HttpFunction, IndexedFunction, QueueFunction, TimerFunction
from .keys import HostKeys
from .queue_listener import QueueListener
from .queue_policy import poison_queue_name
from .timer_runner import TimerRunner

logger = logging.getLogger(__name__)

# The SDK's default retry waits 15 s and more between attempts; locally, fail fast and say why.
_STORAGE_RETRIES = {"retry_total": 2, "initial_backoff": 1, "increment_base": 2}


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
        keys: HostKeys | None = None,
    ) -> None:
        self.functions = list(functions)
        self.config = config
        self.settings = settings
        self.host = host
        self.port = port  # the bound port once started
        self.drain_timeout = drain_timeout
        self.listeners: list[QueueListener] = []
        self.timers: list[TimerRunner] = []
        self._executor = ThreadPoolExecutor(thread_count(settings), thread_name_prefix="devhost-fn")
        self.keys = keys
        self._http = HttpFrontend(
            [f for f in self.functions if isinstance(f, HttpFunction)], config.route_prefix, self._executor, keys
        )
        # Resolved now so a missing connection setting fails before any port is opened.
        queue_functions = [f for f in self.functions if isinstance(f, QueueFunction)]
        self._connections = {f.name: storage.resolve(f.connection, "queue", settings) for f in queue_functions}
        self._site: Site | None = None
        self._clients: dict[storage.StorageConnection, QueueServiceClient] = {}

    @property
    def base_url(self) -> str:
        root = http_url(self.host, self.port)
        return f"{root}/{self.config.route_prefix}" if self.config.route_prefix else root

    async def start(self) -> HostRuntime:
        """Open the HTTP port and start every queue listener; undo everything on failure."""
        try:
            http = self._http.application()
            self._site = await start_site(http, self.host, self.port, shutdown_timeout=self.drain_timeout)
            self.port = self._site.port
            for function in self.functions:
                if isinstance(function, QueueFunction):
                    await self._start_listener(function)
                elif isinstance(function, TimerFunction):
                    runner = TimerRunner(function, self._executor)
                    runner.start()
                    self.timers.append(runner)
                    logger.info("function %s scheduled %r (UTC)", function.name, function.schedule.expression)
        except BaseException:
            await self.stop()
            raise
        self._log_auth_levels()
        return self

    def _client_for(self, connection: storage.StorageConnection) -> QueueServiceClient:
        if connection not in self._clients:
            self._clients[connection] = storage.open_client(
                QueueServiceClient, connection, aio=True, **_STORAGE_RETRIES
            )
        return self._clients[connection]

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
        if keyed and self.keys is None:
            logger.info("auth levels are not enforced locally (as with Core Tools): %s", ", ".join(keyed))
        elif keyed:
            logger.info("auth levels are enforced with the given keys: %s", ", ".join(keyed))

    async def is_idle(self) -> bool:
        """True when no HTTP request is being served and every trigger queue is settled."""
        if self._http.in_flight:
            return False
        for listener in self.listeners:
            if not await listener.is_idle():
                return False
        if any(timer.running for timer in self.timers):
            return False
        return self._http.in_flight == 0  # a request may have arrived during the queue checks

    async def stop(self) -> None:
        """Stop polling, finish in-flight invocations and requests, then release every resource."""
        listeners, self.listeners = self.listeners, []
        timers, self.timers = self.timers, []
        await asyncio.gather(
            *(listener.stop(self.drain_timeout) for listener in listeners),
            *(timer.stop(self.drain_timeout) for timer in timers),
        )
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        clients, self._clients = self._clients, {}
        for connection, client in clients.items():
            await client.close()
            if connection.endpoint is not None:  # an identity-based client owns its token credential
                await client.credential.close()
        self._executor.shutdown(wait=False, cancel_futures=False)
