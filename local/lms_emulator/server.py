"""Running the LMS emulator on a background thread, for tests: ``with run_in_thread(secret="s") as lms: lms.url``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from local.serving import serve_in_thread

from .app import create_app
from .config import DEFAULT_OPENEDX_CLIENT_ID, DEFAULT_THINKIFIC_SUBDOMAIN, LmsConfig, Platform
from .context import STATE
from .state import LmsState


@dataclass(frozen=True)
class RunningLms:
    """A started emulator; ``url`` has no trailing slash. ``root(platform)`` is a source's ``apiBaseUrl``."""

    url: str
    port: int
    config: LmsConfig
    state: LmsState

    def root(self, platform: Platform) -> str:
        return f"{self.url}/{platform}"


@contextlib.contextmanager
def run_in_thread(
    *,
    secret: str,
    openedx_client_id: str = DEFAULT_OPENEDX_CLIENT_ID,
    thinkific_subdomain: str = DEFAULT_THINKIFIC_SUBDOMAIN,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
) -> Iterator[RunningLms]:
    """Serve on a private event loop in a daemon thread for the ``with`` block."""
    config = LmsConfig(secret=secret, openedx_client_id=openedx_client_id, thinkific_subdomain=thinkific_subdomain)
    app = create_app(config)
    with serve_in_thread(app, name="lms-emulator", host=host, port=port, startup_timeout=startup_timeout) as site:
        yield RunningLms(site.url, site.port, config, app[STATE])
