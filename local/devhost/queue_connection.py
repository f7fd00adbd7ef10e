"""Which storage account a queue binding's ``connection`` points at, and a client for it.

``connection`` is a setting *prefix*, as in the extension: the setting ``<prefix>`` (or
``AzureWebJobs<prefix>``) holds a connection string, or ``<prefix>__queueServiceUri`` /
``<prefix>__serviceUri`` name an endpoint for identity-based access. An empty connection means
``AzureWebJobsStorage``. ``UseDevelopmentStorage=true`` means Azurite on its default ports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.storage.queue.aio import QueueServiceClient

DEFAULT_CONNECTION = "AzureWebJobsStorage"
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"


class ConnectionSettingError(ValueError):
    """No setting provides the connection a binding names."""


@dataclass(frozen=True)
class ConnectionString:
    setting: str
    value: str


@dataclass(frozen=True)
class ServiceUri:
    setting: str
    uri: str
    credential: str | None = None  # "managedidentity" or None (DefaultAzureCredential)
    client_id: str | None = None


QueueConnection = ConnectionString | ServiceUri


def resolve_queue_connection(connection: str, settings: Mapping[str, str]) -> QueueConnection:
    """Find what a binding's ``connection`` prefix refers to in the app settings."""
    prefix = connection or DEFAULT_CONNECTION
    for name in (prefix, f"AzureWebJobs{prefix}"):
        value = settings.get(name, "").strip()
        if value:
            if value.replace(" ", "").lower().startswith(DEVELOPMENT_STORAGE.lower()):
                value = DEVELOPMENT_STORAGE  # the SDK only recognises this exact spelling
            return ConnectionString(name, value)
    for suffix in ("queueServiceUri", "serviceUri"):
        uri = settings.get(f"{prefix}__{suffix}", "").strip()
        if uri:
            return ServiceUri(
                f"{prefix}__{suffix}",
                uri,
                credential=settings.get(f"{prefix}__credential") or None,
                client_id=settings.get(f"{prefix}__clientId") or None,
            )
    account = settings.get(f"{prefix}__accountName", "").strip()
    if account and prefix == DEFAULT_CONNECTION:
        return ServiceUri(f"{prefix}__accountName", f"https://{account}.queue.core.windows.net")
    raise ConnectionSettingError(
        f"connection {connection or '(empty)'!r}: set {prefix!r} to a connection string "
        f"(e.g. {DEVELOPMENT_STORAGE}) or {prefix}__queueServiceUri for an identity-based connection"
    )


# The SDK's default retry waits 15 s and more between attempts; locally, fail fast and say why.
_RETRY_TOTAL, _INITIAL_BACKOFF, _INCREMENT_BASE = 2, 1, 2


def create_service_client(connection: QueueConnection) -> tuple[QueueServiceClient, Any]:
    """Return the async service client and the credential to close with it (or None).

    Clients never encode or decode message text: the listener handles ``messageEncoding``
    itself so it can spot a body that is not valid base64.
    """
    if isinstance(connection, ConnectionString):
        client = QueueServiceClient.from_connection_string(
            connection.value,
            retry_total=_RETRY_TOTAL,
            initial_backoff=_INITIAL_BACKOFF,
            increment_base=_INCREMENT_BASE,
        )
        return client, None
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    credential: Any
    if (connection.credential or "").lower() == "managedidentity":
        credential = ManagedIdentityCredential(client_id=connection.client_id)
    else:
        credential = DefaultAzureCredential(managed_identity_client_id=connection.client_id)
    client = QueueServiceClient(
        connection.uri,
        credential=credential,
        retry_total=_RETRY_TOTAL,
        initial_backoff=_INITIAL_BACKOFF,
        increment_base=_INCREMENT_BASE,
    )
    return client, credential
