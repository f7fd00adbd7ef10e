"""Running the emulator on a background thread, for tests: ``with run_in_thread() as emu: emu.url``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from local.serving import serve_in_thread

from .app import create_app
from .context import (
    DEFAULT_PAGE_SIZE,
    RUNTIME,
    AppBinding,
    BatchMode,
    DeleteForms,
    EmulatorRuntime,
    Modes,
    PatchSemantics,
    Sleep,
)
from .faults import FaultConfig, FaultInjector
from .persistence import FsyncPolicy
from .requestlog import RequestLog
from .state import EmulatorState


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


@contextlib.contextmanager
def run_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    page_size: int = DEFAULT_PAGE_SIZE,
    snapshot: Path | str | None = None,
    signing_key: str | None = None,
    faults: FaultConfig | None = None,
    delete_forms: DeleteForms = "documented",
    patch_semantics: PatchSemantics = "merge",
    visibility_lag_ms: int = 0,
    app_binding: AppBinding = "strict-app",
    fsync: FsyncPolicy = "interval",
    batch: BatchMode = "on",
    latency_ms: int = 0,
    sleep: Sleep = asyncio.sleep,
    startup_timeout: float = 10.0,
) -> Iterator[RunningEmulator]:
    """Serve on a private event loop in a daemon thread; stop cleanly on exit.

    ``with run_in_thread(page_size=10) as emu: httpx.get(emu.url + "/_emulator/health")``. The four
    modes are the start-up settings (README "Emulator settings"); ``/_emulator/reset`` returns to them.
    """
    modes = Modes(
        deleteForms=delete_forms,
        patchSemantics=patch_semantics,
        visibilityLagMs=visibility_lag_ms,
        appBinding=app_binding,
        batch=batch,
        latencyMs=latency_ms,
    )
    state = EmulatorState(snapshot, fsync=fsync)
    app = create_app(state, page_size=page_size, signing_key=signing_key, faults=faults, modes=modes, sleep=sleep)
    try:
        with serve_in_thread(app, name="graph-emulator", host=host, port=port, startup_timeout=startup_timeout) as site:
            yield RunningEmulator(site.url, host, site.port, app[RUNTIME])
    finally:
        state.close()  # the server has stopped: fold the journal into the snapshot
