"""Serving the local stand-ins (Graph emulator, identity endpoint, dev host) over HTTP.

Tests and tools run a server on a daemon thread with its own event loop (:class:`LoopThread`,
:func:`serve_in_thread`), so it keeps answering while the caller blocks; the ``python -m`` entry
points serve in the foreground until SIGINT/SIGTERM (:func:`serve_until_signalled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

logger = logging.getLogger(__name__)
T = TypeVar("T")


def http_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class Site:
    """A started server; ``url`` has no trailing slash."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_site(app: web.Application, host: str, port: int, *, shutdown_timeout: float = 2.0) -> Site:
    """Serve ``app`` until ``Site.stop``, which lets requests in flight finish for ``shutdown_timeout``.

    The socket is bound here rather than by aiohttp because with port 0 and a name such as
    ``localhost`` aiohttp would bind one free port per address, and there would be no one port to report.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return Site(runner, host, int(sock.getsockname()[1]))


class LoopThread:
    """A private event loop running on a daemon thread until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop; its result, or its exception, comes back to the caller."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self._thread.name}: no result within {timeout}s") from None

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


@contextlib.contextmanager
def serve_in_thread(
    app: web.Application, *, name: str, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> Iterator[Site]:
    """Serve ``app`` on a :class:`LoopThread` named ``name`` for the ``with`` block; start-up errors raise here."""
    thread = LoopThread(name)
    try:
        site = thread.call(start_site(app, host, port), startup_timeout)
        try:
            yield site
        finally:
            thread.call(site.stop(), 10.0)
    finally:
        thread.close()


class Stoppable(Protocol):
    async def stop(self) -> None: ...


S = TypeVar("S", bound=Stoppable)


async def serve_until_signalled(start: Awaitable[S], ready: Callable[[S], str]) -> None:
    """Await ``start``, print ``ready(server)``, serve until SIGINT/SIGTERM, then stop the server.

    The stack launcher waits for the printed "listening on URL" line, so it goes to stdout, flushed.
    A second signal exits at once: stopping may be waiting on work in flight that never ends.
    """
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("second %s: exiting without waiting", name)
            os._exit(130)
        logger.info("%s received: stopping", name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt instead
            loop.add_signal_handler(signum, on_signal, signum)
    server = await start
    print(ready(server), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
