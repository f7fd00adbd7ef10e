"""``DevHost``: the dev host on a background thread with its own event loop, for tests and tools.

    with DevHost.start(app, host_json={...}, settings={...}, port=0) as host:
        httpx.post(host.base_url + "/webhooks/moodle", ...)
        host.wait_until_idle(timeout=10)

Indexing happens on the caller's thread, so an unsupported binding raises right there.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from azure.functions.decorators.function_app import FunctionRegister

from local.serving import LoopThread

from .host_config import HostConfig, load_host_config
from .indexing import IndexedFunction, index_app
from .keys import HostKeys
from .triggers import HostRuntime

T = TypeVar("T")

logger = logging.getLogger(__name__)


class DevHost:
    """A running dev host; use :meth:`start` to create one and :meth:`stop` (or ``with``) to end it."""

    def __init__(self, runtime: HostRuntime, thread: LoopThread) -> None:
        self._runtime = runtime
        self._thread = thread
        self._stopped = False

    @classmethod
    def start(
        cls,
        app: FunctionRegister,
        *,
        host_json: Path | str | Mapping[str, Any] | HostConfig | None = None,
        settings: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        drain_timeout: float = 10.0,
        startup_timeout: float = 30.0,
        keys: HostKeys | None = None,
    ) -> DevHost:
        """Index ``app`` and serve it until :meth:`stop`.

        ``settings`` overlay ``os.environ`` for binding expressions and connections (the process
        environment is left untouched); ``host_json`` is a path, a parsed document or a
        ``HostConfig``. ``port=0`` picks a free port. ``keys``: enforce auth levels with these keys
        (as Azure does); without them nothing is enforced (as with Core Tools).
        """
        effective: Mapping[str, str] = collections.ChainMap(dict(settings or {}), os.environ)
        config = host_json if isinstance(host_json, HostConfig) else load_host_config(host_json)
        functions = index_app(app, effective)
        runtime = HostRuntime(
            functions, config, effective, host=host, port=port, drain_timeout=drain_timeout, keys=keys
        )
        thread = LoopThread("devhost-loop")
        try:
            thread.call(runtime.start(), startup_timeout)
        except BaseException:
            thread.close()
            raise
        logger.info("dev host listening on %s", runtime.base_url)
        return cls(runtime, thread)

    @property
    def base_url(self) -> str:
        """``http://host:port/<routePrefix>`` (no trailing slash)."""
        return self._runtime.base_url

    @property
    def port(self) -> int:
        return self._runtime.port

    @property
    def functions(self) -> list[IndexedFunction]:
        return list(self._runtime.functions)

    @property
    def runtime(self) -> HostRuntime:
        return self._runtime

    def wait_until_idle(self, timeout: float = 10.0, *, poll_interval: float = 0.05) -> None:
        """Block until every trigger queue is empty and nothing is in flight.

        A message waiting out its ``visibilityTimeout`` still counts as queued, so this also waits
        for retries to finish. Raises ``TimeoutError`` otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"dev host not idle after {timeout}s")
            if self._thread.call(self._runtime.is_idle(), remaining):
                return
            time.sleep(poll_interval)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the host's event loop (where the app's clients live) and return its result,
        e.g. closing those clients before :meth:`stop` ends the loop."""
        return self._thread.call(coro, timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop polling, finish in-flight work, close the port and end the loop thread."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._thread.call(self._runtime.stop(), timeout)
        finally:
            self._thread.close()

    def __enter__(self) -> DevHost:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
