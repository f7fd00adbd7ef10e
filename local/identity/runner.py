"""Run the identity endpoint: in its own process (the launcher) or on a background thread (tests).

The socket is bound before the server starts so port 0 works and the real port is known when the
"listening" line is printed or the context manager yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import httpx
from aiohttp import web

from .app import TOKEN_PATH, Fault, IdentityState, build_app
from .config import DEFAULT_LIFETIME_SECONDS, DEFAULT_ROLES, Identity, IdentityConfig

logger = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT = 1.0


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start(
    config: IdentityConfig, host: str, port: int, state: IdentityState | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop) and the bound port."""
    sock = bind(host, port)
    runner = web.AppRunner(build_app(config, state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    return runner, int(sock.getsockname()[1])


async def serve(
    config: IdentityConfig,
    host: str,
    port: int,
    *,
    ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set (forever if not given); ``ready`` gets the token endpoint URL."""
    runner, bound = await start(config, host, port)
    try:
        if ready is not None:
            ready(base_url(host, bound) + TOKEN_PATH)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


class IdentityServer:
    """The endpoint on a background thread, for tests: ``with IdentityServer(config) as idp: idp.endpoint``.

    ``inject_faults``/``requests`` act on the shared state directly, so tests need no HTTP round trip
    for setup; the HTTP control routes stay for other processes.
    """

    def __init__(self, config: IdentityConfig, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.state = IdentityState()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    @property
    def endpoint(self) -> str:
        """The value for ``IDENTITY_ENDPOINT``."""
        return self.base_url + TOKEN_PATH

    @property
    def header(self) -> str:
        """The value for ``IDENTITY_HEADER`` (local-only; still never logged)."""
        return self.config.header

    @property
    def env(self) -> dict[str, str]:
        """The App Service variables that make ``ManagedIdentityCredential`` use this endpoint."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.config.header}

    def inject_faults(self, faults: Iterable[dict[str, Any]]) -> int:
        """Queue faults (same JSON shape as ``POST /_identity/faults/next``); returns how many are pending."""
        return self.state.add_faults([Fault.parse(f) for f in faults])

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def requests(self, path: str | None = TOKEN_PATH) -> list[dict[str, Any]]:
        """The request log, by default only ``/msi/token`` requests."""
        return [e for e in self.state.requests() if path is None or e["path"] == path]

    def clear_requests(self) -> None:
        self.state.clear_requests()

    def dev_token(self, **body: Any) -> dict[str, Any]:
        """Call ``POST /dev/token`` the way operator tooling will; returns the JSON response."""
        resp = httpx.post(
            self.base_url + "/dev/token", json=body, headers={"X-IDENTITY-HEADER": self.config.header}, timeout=10
        )
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def start(self, timeout: float = 10.0) -> IdentityServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="identity-endpoint", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"identity endpoint did not start within {timeout}s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError("identity endpoint failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> IdentityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start(); a thread has nobody else to tell
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runner, self.port = await start(self.config, self.host, self.port, self.state)
        logger.info("identity endpoint on %s (thread)", self.endpoint)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


def make_config(
    *,
    header: str,
    user_assigned: Iterable[str | Identity] = (),
    roles: Sequence[str] = DEFAULT_ROLES,
    system_roles: Sequence[str] | None = None,
    system: bool = True,
    lifetime: int = DEFAULT_LIFETIME_SECONDS,
    signing_key: str | None = None,
) -> IdentityConfig:
    """Config from simple values: client ids get ``roles``; pass ``Identity`` objects for anything else."""
    uamis = tuple(u if isinstance(u, Identity) else Identity.user(u, roles=tuple(roles)) for u in user_assigned)
    sys_identity = Identity.system(roles=tuple(roles if system_roles is None else system_roles)) if system else None
    return IdentityConfig(
        header=header, system=sys_identity, user_assigned=uamis, lifetime_seconds=lifetime, signing_key=signing_key
    )


@contextlib.contextmanager
def run_in_thread(
    *,
    header: str,
    user_assigned: Iterable[str | Identity] = (),
    roles: Sequence[str] = DEFAULT_ROLES,
    system_roles: Sequence[str] | None = None,
    system: bool = True,
    lifetime: int = DEFAULT_LIFETIME_SECONDS,
    signing_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[IdentityServer]:
    """Serve on a background thread until the block exits (port 0 by default, so tests never collide)."""
    config = make_config(
        header=header,
        user_assigned=user_assigned,
        roles=roles,
        system_roles=system_roles,
        system=system,
        lifetime=lifetime,
        signing_key=signing_key,
    )
    with IdentityServer(config, host=host, port=port) as server:
        yield server
