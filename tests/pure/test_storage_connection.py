"""The one storage-connection rule (``shared.storage``): which settings a connection prefix means,
for the app's queues and tables, the dev host's queue trigger and ``vlsync`` (clients are built,
nothing is called)."""

from __future__ import annotations

import asyncio
import os

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient
from azure.storage.queue.aio import QueueServiceClient as AsyncQueueServiceClient

from shared.ledger import table_service
from shared.queue import service_client
from shared.settings import Settings
from shared.storage import StorageConnection, StorageNotConfigured, environment_options, open_client, resolve

CS = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a;"


def test_empty_connection_means_azure_web_jobs_storage() -> None:
    assert resolve("", "queue", {"AzureWebJobsStorage": CS}) == StorageConnection("AzureWebJobsStorage", CS)


def test_connection_is_a_setting_prefix_with_an_azure_web_jobs_fallback() -> None:
    settings = {"Store": CS, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert resolve("Store", "queue", settings) == StorageConnection("Store", CS)
    assert resolve("Store", "queue", {"AzureWebJobsStore": CS}) == StorageConnection("AzureWebJobsStore", CS)


@pytest.mark.parametrize("value", ["UseDevelopmentStorage=true", "usedevelopmentstorage=TRUE;"])
def test_development_storage_means_azurite_on_its_default_ports_for_every_client(value: str) -> None:
    dev = Settings(storage_connection_string=value)
    assert service_client(dev).url.startswith("http://127.0.0.1:10001/devstoreaccount1")
    assert table_service(dev).url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    found = resolve("Store", "queue", {"Store": value})
    assert open_client(AsyncQueueServiceClient, found).url.startswith("http://127.0.0.1:10001/devstoreaccount1")


def test_identity_based_connection_per_service() -> None:
    settings = {
        "Store__queueServiceUri": "https://acct.queue.core.windows.net",
        "Store__tableServiceUri": "https://acct.table.core.windows.net",
        "Store__credential": "managedidentity",
        "Store__clientId": "cid",
    }
    assert resolve("Store", "queue", settings) == StorageConnection(
        "Store__queueServiceUri", None, "https://acct.queue.core.windows.net", "managedidentity", "cid"
    )
    assert resolve("Store", "table", settings).endpoint == "https://acct.table.core.windows.net"
    assert resolve("S", "queue", {"S__serviceUri": "https://x"}) == StorageConnection(
        "S__serviceUri", endpoint="https://x"
    )


def test_the_app_settings_use_the_same_rule() -> None:
    settings = Settings(
        storage_queue_service_uri="https://acct.queue.core.windows.net",
        storage_table_service_uri="https://acct.table.core.windows.net",
        storage_credential="managedidentity",
        storage_client_id="cid",
    )
    assert settings.storage("queue").setting == "LearningSyncStorage__queueServiceUri"
    assert settings.storage("table") == StorageConnection(
        "LearningSyncStorage__tableServiceUri", None, "https://acct.table.core.windows.net", "managedidentity", "cid"
    )
    assert service_client(settings).url.startswith("https://acct.queue.core.windows.net")
    assert table_service(settings).url.startswith("https://acct.table.core.windows.net")


def test_account_name_shortcut_only_for_azure_web_jobs_storage() -> None:
    found = resolve("", "queue", {"AzureWebJobsStorage__accountName": "acct"})
    assert found == StorageConnection(
        "AzureWebJobsStorage__accountName", endpoint="https://acct.queue.core.windows.net"
    )
    with pytest.raises(StorageNotConfigured):
        resolve("Store", "queue", {"Store__accountName": "acct"})


def test_missing_connection_names_the_settings_to_set() -> None:
    with pytest.raises(StorageNotConfigured, match=r"set Store .*Store__queueServiceUri"):
        resolve("Store", "queue", {})
    with pytest.raises(StorageNotConfigured, match=r"LearningSyncStorage__tableServiceUri"):
        table_service(Settings())


@pytest.mark.parametrize("credential", [None, "managedidentity"])
def test_identity_clients_own_a_closable_credential_sync_and_async(credential: str | None) -> None:
    connection = StorageConnection("S__queueServiceUri", endpoint="https://acct.queue.core.windows.net",
                                   credential=credential, client_id="cid")  # fmt: skip
    sync_client = open_client(QueueServiceClient, connection)
    assert sync_client.url.startswith("https://acct.queue.core.windows.net")
    sync_client.close()
    assert open_client(TableServiceClient, connection).url.startswith("https://acct.queue.core.windows.net")

    async def build() -> None:
        client = open_client(AsyncQueueServiceClient, connection, aio=True)
        assert client.credential is not None
        await client.close()
        await client.credential.close()

    asyncio.run(build())


@pytest.mark.parametrize(
    ("environ", "trusted", "verify"),
    [
        ({"PATH": "/bin", "SOURCES": "{}"}, False, True),
        ({"HTTPS_PROXY": "http://proxy:3128"}, True, True),
        ({"http_proxy": "http://proxy:3128"}, True, True),
        ({"NO_PROXY": "localhost"}, True, True),
        ({"REQUESTS_CA_BUNDLE": "/etc/ca.pem"}, False, "/etc/ca.pem"),
        ({"CURL_CA_BUNDLE": "/etc/curl.pem"}, False, "/etc/curl.pem"),
        ({"CURL_CA_BUNDLE": "/etc/curl.pem", "REQUESTS_CA_BUNDLE": "/etc/ca.pem"}, False, "/etc/ca.pem"),
        ({"REQUESTS_CA_BUNDLE": "/etc/ca.pem", "https_proxy": "http://proxy:3128"}, True, True),
    ],
)
def test_clients_read_the_environment_per_request_only_where_it_sets_a_proxy(
    environ: dict[str, str], trusted: bool, verify: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = environment_options(environ)
    assert options.get("use_env_settings", True) is trusted
    assert options.get("connection_verify", True) == verify  # a CA bundle still applies, read once
    for name in [n for n in os.environ if n.lower().endswith("_proxy") or n.lower().endswith("_ca_bundle")]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    client = open_client(QueueServiceClient, StorageConnection("S", connection_string=CS))
    assert client._pipeline._transport._use_env_settings is trusted  # the session's trust_env when it opens
    assert client._pipeline._transport.connection_config.verify == verify
    client.close()
    # aiohttp never read the bundle variables, and would build an SSL context from a path per request
    assert "connection_verify" not in environment_options(environ, aio=True)
    assert environment_options(environ, aio=True).get("use_env_settings", True) is trusted
