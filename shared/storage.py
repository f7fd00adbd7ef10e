"""How a storage connection named by a setting prefix is made: one rule for the app's queues and
tables, the queue trigger the dev host runs, and ``vlsync``.

The rule is the Functions storage extensions' own. The setting ``<prefix>`` (or
``AzureWebJobs<prefix>``) holds a connection string: locally ``UseDevelopmentStorage=true`` (Azurite
on its default ports) or Azurite's full string.
Otherwise ``<prefix>__<service>ServiceUri`` (or ``<prefix>__serviceUri``) names an endpoint for an
identity-based connection, with ``<prefix>__credential=managedidentity`` and ``<prefix>__clientId``
for a user-assigned identity, as in Azure. ``AzureWebJobsStorage__accountName`` is the extension's
shortcut for the default connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

Service = Literal["queue", "table", "blob"]
DEFAULT_CONNECTION = "AzureWebJobsStorage"
# The host accepts any letter case; the SDKs only the value "true" (with the key in any case).
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
# The CA bundle variables ``requests`` reads when its session trusts the environment, in its order.
_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class StorageNotConfigured(ValueError):
    """No setting provides the connection that a binding or the app names."""


@dataclass(frozen=True)
class StorageConnection:
    """Where one storage service is and how to authenticate to it; ``setting`` names the source."""

    setting: str
    connection_string: str | None = None
    endpoint: str | None = None
    credential: str | None = None  # "managedidentity", else DefaultAzureCredential
    client_id: str | None = None


def resolve(prefix: str, service: Service, settings: Mapping[str, str | None]) -> StorageConnection:
    """What the connection ``prefix`` (empty: ``AzureWebJobsStorage``) means for ``service``."""
    prefix = prefix or DEFAULT_CONNECTION
    for name in (prefix, f"AzureWebJobs{prefix}"):
        value = (settings.get(name) or "").strip()
        if value.replace(" ", "").rstrip(";").lower() == DEVELOPMENT_STORAGE.lower():
            value = DEVELOPMENT_STORAGE
        if value:
            return StorageConnection(name, connection_string=value)
    for suffix in (f"{service}ServiceUri", "serviceUri"):
        uri = (settings.get(f"{prefix}__{suffix}") or "").strip()
        if uri:
            return StorageConnection(
                f"{prefix}__{suffix}",
                endpoint=uri,
                credential=settings.get(f"{prefix}__credential") or None,
                client_id=settings.get(f"{prefix}__clientId") or None,
            )
    account = (settings.get(f"{prefix}__accountName") or "").strip()
    if account and prefix == DEFAULT_CONNECTION:
        return StorageConnection(f"{prefix}__accountName", endpoint=f"https://{account}.{service}.core.windows.net")
    raise StorageNotConfigured(
        f"no {service} connection: set {prefix} to a connection string (e.g. UseDevelopmentStorage=true) "
        f"or {prefix}__{service}ServiceUri for an identity-based connection"
    )


class _ServiceClient(Protocol):
    def __init__(self, account_url: str, credential: Any = ..., **kwargs: Any) -> None: ...

    @classmethod
    def from_connection_string(cls, conn_str: str, **kwargs: Any) -> Any: ...


C = TypeVar("C", bound=_ServiceClient)


def open_client(client_type: type[C], connection: StorageConnection, *, aio: bool = False, **options: Any) -> C:
    """A service client (``QueueServiceClient``, ``TableServiceClient``, sync or ``aio``) for the connection.

    An identity-based client owns its token credential; close the client, then ``client.credential``.
    """
    options = {**environment_options(aio=aio), **options}
    if connection.connection_string is not None:
        client: C = client_type.from_connection_string(connection.connection_string, **options)
        return client
    assert connection.endpoint is not None
    return client_type(connection.endpoint, credential=token_credential(connection, aio=aio), **options)


def environment_options(environ: Mapping[str, str] | None = None, *, aio: bool = False) -> dict[str, Any]:
    """The SDK transport's ``use_env_settings``: off where the environment sets no proxy.

    With it on (azure-core's default), ``requests`` scans the whole environment for ``*_proxy``
    variables on every request, twice: with the hundred-odd variables of a machine or an app's
    settings that was a quarter of the host's CPU in the webhook-path profile (``docs/benchmarks.md``),
    on every Storage call of every event. The scans can only find what was there at start (app
    settings change by restarting the app), so where no proxy variable is set they are skipped. The
    one other thing a trusting session reads, a CA bundle (``REQUESTS_CA_BUNDLE``, then
    ``CURL_CA_BUNDLE``), is read here once and passed as ``connection_verify``, so it still applies.
    Set a proxy variable and every request reads the environment as before. (The storage SDKs sign
    each request themselves, so ``~/.netrc``, which a trusting session would also read, never applied.)
    The ``aio`` clients' aiohttp never read those bundle variables, and builds a new SSL context from a
    ``connection_verify`` path on every request (40% of the dev host's CPU, measured), so they get none.
    """
    env = os.environ if environ is None else environ
    if any(name.lower().endswith("_proxy") for name in env):
        return {}
    options: dict[str, Any] = {"use_env_settings": False}
    bundle = next((env[name] for name in _CA_BUNDLE_VARIABLES if env.get(name)), None)
    if bundle and not aio:
        options["connection_verify"] = bundle
    return options


def token_credential(connection: StorageConnection, *, aio: bool = False) -> Any:
    """The app's managed identity when the connection says so, else the developer's credentials."""
    if aio:
        from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
    else:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential  # type: ignore[assignment]
    if (connection.credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=connection.client_id)
    return DefaultAzureCredential(managed_identity_client_id=connection.client_id)
