"""How the ``LearningSyncStorage`` connection is made: one rule for queues and tables.

Locally the setting is a connection string (``UseDevelopmentStorage=true`` means Azurite on its
default ports); in Azure it is identity-based (``__queueServiceUri``/``__tableServiceUri`` with
``__credential=managedidentity`` and ``__clientId``), the same settings the queue trigger uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# Azurite's well-known development account and default ports (public values, not a secret); the
# storage SDKs, unlike the Functions host, do not understand ``UseDevelopmentStorage=true``.
DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class StorageNotConfigured(RuntimeError):
    """Neither a connection string nor an identity-based endpoint is set."""


def connection_string(settings: Settings) -> str | None:
    value = settings.storage_connection_string
    if value and value.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
        return DEV_STORAGE
    return value


def identity_credential(settings: Settings) -> TokenCredential:
    """The app's managed identity when the connection says so, else the developer's credentials."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if (settings.storage_credential or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    return DefaultAzureCredential()
