"""The identity endpoint on a background thread, for tests: ``with run_in_thread(header="s") as idp: idp.endpoint``."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from local.serving import serve_in_thread

from . import tls
from .app import TOKEN_PATH, Fault, IdentityState, build_app, entra_token_path
from .config import DEFAULT_LIFETIME_SECONDS, DEFAULT_ROLES, AppRegistration, Identity, IdentityConfig


@dataclass(frozen=True)
class IdentityServer:
    """A running endpoint (see :func:`run_in_thread`).

    ``inject_faults``/``requests`` and the app methods act on the shared state directly, so tests
    need no HTTP round trip for setup; the HTTP control routes stay for other processes.
    """

    config: IdentityConfig
    state: IdentityState
    base_url: str
    authority_host: str  # the HTTPS listener, for ClientAssertionCredential(authority=...)
    ca_file: Path  # the CA that signed the HTTPS listener's certificate, for connection_verify=...

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

    @property
    def tenant_id(self) -> str:
        return self.config.tenant_id

    @property
    def entra_token_path(self) -> str:
        """The Entra token endpoint's path (as in the request log)."""
        return entra_token_path(self.config.tenant_id)

    @property
    def token_url(self) -> str:
        """The Entra token endpoint ``ClientAssertionCredential`` posts to."""
        return self.authority_host + self.entra_token_path

    def ca_bundle(self, path_out: str | Path) -> Path:
        """certifi's roots plus this endpoint's CA in one file (see :func:`local.identity.tls.ca_bundle`)."""
        return tls.ca_bundle(path_out, self.ca_file)

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

    def apps(self) -> list[AppRegistration]:
        return self.state.apps()

    def app(self, client_id: str) -> AppRegistration | None:
        return self.state.get_app(client_id)

    def put_app(self, app: AppRegistration) -> bool:
        """Add or replace an app registration (``PUT /_identity/apps/{clientId}``); ``True`` if it is new."""
        return self.state.put_app(app)

    def remove_app(self, client_id: str) -> AppRegistration | None:
        """Delete an app registration (``DELETE /_identity/apps/{clientId}``); the removed app, if any."""
        return self.state.delete_app(client_id)

    def reset_apps(self) -> None:
        """Back to the apps the server started with (``config.apps``)."""
        self.state.replace_apps(self.config.apps)

    def remove_federated_credentials(self, client_id: str) -> AppRegistration:
        """Remove the app's federated credentials; returns the app as it was, so ``put_app(it)`` restores them."""
        before = self.state.clear_federated_credentials(client_id)
        if before is None:
            raise KeyError(f"no app with client id {client_id}")
        return before

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
    apps: Iterable[AppRegistration] = (),
) -> IdentityConfig:
    """Config from simple values: client ids get ``roles``; pass ``Identity`` objects for anything else."""
    uamis = tuple(u if isinstance(u, Identity) else Identity.user(u, roles=tuple(roles)) for u in user_assigned)
    sys_identity = Identity.system(roles=tuple(roles if system_roles is None else system_roles)) if system else None
    return IdentityConfig(
        header=header,
        system=sys_identity,
        user_assigned=uamis,
        lifetime_seconds=lifetime,
        signing_key=signing_key,
        apps=tuple(apps),
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
    apps: Iterable[AppRegistration] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    tls_port: int = 0,
    tls_dir: str | Path | None = None,
) -> Iterator[IdentityServer]:
    """Serve on a background thread until the block exits (ports 0 by default, so tests never collide).

    The HTTPS listener's CA is written to ``tls_dir`` (default: a temporary directory removed on exit).
    """
    config = make_config(
        header=header,
        user_assigned=user_assigned,
        roles=roles,
        system_roles=system_roles,
        system=system,
        lifetime=lifetime,
        signing_key=signing_key,
        apps=apps,
    )
    state = IdentityState(config.apps)
    with contextlib.ExitStack() as stack:
        directory = (
            Path(tls_dir)
            if tls_dir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vlsync-identity-tls-")))
        )
        local_tls = tls.create(directory, [host])
        site = stack.enter_context(
            serve_in_thread(
                build_app(config, state),
                name="identity-endpoint",
                host=host,
                port=port,
                tls=local_tls.context,
                tls_port=tls_port,
            )
        )
        assert site.tls_url is not None  # serve_in_thread was given tls
        state.set_authority(site.tls_url, str(local_tls.ca_file))
        yield IdentityServer(config, state, site.url, site.tls_url, local_tls.ca_file)
