"""Which setting a queue binding's ``connection`` refers to."""

from __future__ import annotations

import asyncio

import pytest

from local.devhost.queue_connection import (
    ConnectionSettingError,
    ConnectionString,
    ServiceUri,
    create_service_client,
    resolve_queue_connection,
)

CS = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;QueueEndpoint=http://127.0.0.1:1/a;"


def test_empty_connection_means_azure_web_jobs_storage() -> None:
    assert resolve_queue_connection("", {"AzureWebJobsStorage": CS}) == ConnectionString("AzureWebJobsStorage", CS)


def test_connection_is_a_setting_prefix() -> None:
    settings = {"Store": CS, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    assert resolve_queue_connection("Store", settings) == ConnectionString("Store", CS)


def test_azure_web_jobs_prefixed_setting_is_a_fallback() -> None:
    assert resolve_queue_connection("Store", {"AzureWebJobsStore": CS}) == ConnectionString("AzureWebJobsStore", CS)


def test_development_storage_is_normalised_for_the_sdk() -> None:
    found = resolve_queue_connection("Store", {"Store": "UseDevelopmentStorage=True"})
    assert found == ConnectionString("Store", "UseDevelopmentStorage=true")


def test_identity_based_connection() -> None:
    settings = {
        "Store__queueServiceUri": "https://acct.queue.core.windows.net",
        "Store__credential": "managedidentity",
        "Store__clientId": "cid",
    }
    assert resolve_queue_connection("Store", settings) == ServiceUri(
        "Store__queueServiceUri", "https://acct.queue.core.windows.net", "managedidentity", "cid"
    )
    assert resolve_queue_connection("S", {"S__serviceUri": "https://x"}) == ServiceUri("S__serviceUri", "https://x")


def test_account_name_shortcut_only_for_azure_web_jobs_storage() -> None:
    found = resolve_queue_connection("", {"AzureWebJobsStorage__accountName": "acct"})
    assert found == ServiceUri("AzureWebJobsStorage__accountName", "https://acct.queue.core.windows.net")
    with pytest.raises(ConnectionSettingError):
        resolve_queue_connection("Store", {"Store__accountName": "acct"})


def test_missing_connection_names_the_settings_to_set() -> None:
    with pytest.raises(ConnectionSettingError, match=r"'Store'.*Store__queueServiceUri"):
        resolve_queue_connection("Store", {})


@pytest.mark.parametrize("credential", [None, "managedidentity"])
def test_identity_clients_can_be_built_and_closed_without_azure(credential: str | None) -> None:
    async def build() -> None:
        client, token_credential = create_service_client(
            ServiceUri("S__queueServiceUri", "https://acct.queue.core.windows.net", credential, "cid")
        )
        assert client.url.startswith("https://acct.queue.core.windows.net")
        assert token_credential is not None
        await client.close()
        await token_credential.close()

    asyncio.run(build())
