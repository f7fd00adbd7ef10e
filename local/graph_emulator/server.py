"""Running the emulator: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .app import create_app
from .faults import FaultConfig, FaultInjector
from .requestlog import RequestLog
from .runtime import DEFAULT_PAGE_SIZE, RUNTIME, EmulatorRuntime
from .state import EmulatorState

log = logging.getLogger("graph_emulator.server")

SHUTDOWN_TIMEOUT_SECONDS = 2.0


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def listening_line(host: str, port: int) -> str:
    """The line the stack launcher waits for; keep its wording stable."""
    return f"graph emulator listening on {_url(host, port)}"


@dataclass(frozen=True)
class RunningEmulator:
    """Handle to a started emulator; ``url`` has no trailing slash (append ``/v1.0/...``)."""

    url: str
    host: str
    port: int
    runtime: EmulatorRuntime

    @property
    def state(self) -> EmulatorState:
        return self.runtime.state

    @property
    def faults(self) -> FaultInjector:
        return self.runtime.faults

    @property
    def requests(self) -> RequestLog:
        return self.runtime.requests


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


@contextlib.contextmanager
def run_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
    snapshot: Path | str | None = None,
    signing_key: str | None = None,
    faults: FaultConfig | None = None,
    startup_timeout: float = 10.0,
) -> Iterator[RunningEmulator]:
    """Serve on a private event loop in a daemon thread; stop cleanly on exit.

    ``with run_in_thread(page_size=10) as emu: httpx.get(emu.url + "/_emulator/health")``
    """
    app = create_app(EmulatorState(snapshot), page_size=page_size, signing_key=signing_key, faults=faults)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    outcome: dict[str, object] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["runner"], outcome["port"] = loop.run_until_complete(_start(app, host, port))
        except BaseException as exc:
            outcome["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="graph-emulator", daemon=True)
    thread.start()
    if not started.wait(startup_timeout):
        raise RuntimeError("graph emulator did not start in time")
    if "error" in outcome:
        loop.close()
        raise RuntimeError("graph emulator failed to start") from outcome["error"]  # type: ignore[misc]
    runner = outcome["runner"]
    assert isinstance(runner, web.AppRunner)
    bound = int(str(outcome["port"]))
    try:
        yield RunningEmulator(_url(host, bound), host, bound, app[RUNTIME])
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(SHUTDOWN_TIMEOUT_SECONDS + 5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(SHUTDOWN_TIMEOUT_SECONDS + 5)
        loop.close()


async def serve_forever(
    *,
    host: str,
    port: int,
    page_size: int = DEFAULT_PAGE_SIZE,
    snapshot: Path | str | None = None,
    faults: FaultConfig | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; print the listening line once the socket is bound."""
    app = create_app(EmulatorState(snapshot), page_size=page_size, faults=faults)
    runner, bound = await _start(app, host, port)
    print(listening_line(host, bound), flush=True)
    log.info("serving host=%s port=%s page_size=%s snapshot=%s", host, bound, page_size, snapshot)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        log.info("stopped")
