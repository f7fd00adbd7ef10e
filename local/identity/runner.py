"""The identity endpoint on a background thread, for tests: ``with run_in_thread(header="s") as idp: idp.endpoint``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from local.serving import serve_in_thread

from .app import TOKEN_PATH, Fault, IdentityState, build_app
from .config import DEFAULT_LIFETIME_SECONDS, DEFAULT_ROLES, Identity, IdentityConfig


@dataclass(frozen=True)
class IdentityServer:
    """A running endpoint (see :func:`run_in_thread`).

    ``inject_faults``/``requests`` act on the shared state directly, so tests need no HTTP round trip
    for setup; the HTTP control routes stay for other processes.
    """

    config: IdentityConfig
    state: IdentityState
    base_url: str

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
    state = IdentityState()
    with serve_in_thread(build_app(config, state), name="identity-endpoint", host=host, port=port) as site:
        yield IdentityServer(config, state, site.url)
