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
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

logger = logging.getLogger(__name__)
T = TypeVar("T")


def http_url(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


@dataclass(frozen=True)
class Site:
    """A started server; ``url`` has no trailing slash. ``tls_port`` is its HTTPS listener, if it has one."""

    runner: web.AppRunner
    host: str
    port: int
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def tls_url(self) -> str | None:
        return None if self.tls_port is None else http_url(self.host, self.tls_port, tls=True)

    async def stop(self) -> None:
        await self.runner.cleanup()  # stops every listener of the runner


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 2.0,
    tls: ssl.SSLContext | None = None,
    tls_port: int = 0,
) -> Site:
    """Serve ``app`` until ``Site.stop``, which lets requests in flight finish for ``shutdown_timeout``.

    With ``tls`` the same app also listens on ``tls_port`` over HTTPS (one runner, two sites, so both
    share the app's state and stop together).

    The sockets are bound here rather than by aiohttp because with port 0 and a name such as
    ``localhost`` aiohttp would bind one free port per address, and there would be no one port to report.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    socks: list[socket.socket] = []
    try:
        socks.append(_bind(host, port))
        if tls is not None:
            socks.append(_bind(host, tls_port))
        await runner.setup()
        await web.SockSite(runner, socks[0]).start()
        if tls is not None:
            await web.SockSite(runner, socks[1], ssl_context=tls).start()
    except BaseException:
        await runner.cleanup()
        for sock in socks:
            sock.close()
        raise
    bound_tls = int(socks[1].getsockname()[1]) if tls is not None else None
    return Site(runner, host, int(socks[0].getsockname()[1]), bound_tls)


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
    app: web.Application,
    *,
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    tls: ssl.SSLContext | None = None,
    tls_port: int = 0,
) -> Iterator[Site]:
    """Serve ``app`` on a :class:`LoopThread` named ``name`` for the ``with`` block; start-up errors raise here.

    ``tls``/``tls_port`` add an HTTPS listener, as in :func:`start_site`.
    """
    thread = LoopThread(name)
    try:
        site = thread.call(start_site(app, host, port, tls=tls, tls_port=tls_port), startup_timeout)
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
