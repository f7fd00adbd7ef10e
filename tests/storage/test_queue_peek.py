"""``tests.queues`` against Azurite: a queue that was never created reads as empty, every other
failure is raised, and messages are read as the app writes them (Base64 JSON)."""

from __future__ import annotations

import binascii
import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from local.azurite import ACCOUNT, AzuriteEndpoints
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from tests.queues import peek_json, peek_messages, peek_texts


def test_a_queue_that_does_not_exist_reads_as_empty(azurite: AzuriteEndpoints) -> None:
    name = f"never-{uuid.uuid4().hex[:10]}"
    assert peek_messages(azurite.connection_string, name) == []
    assert peek_texts(azurite.connection_string, name) == []
    assert peek_json(azurite.connection_string, name) == []


def test_messages_are_read_as_the_app_writes_them(settings: Settings) -> None:
    StorageCommandQueue.from_settings(settings).send_all(['{"externalId": "Ünïcødé"}', "[1]"])
    connection = settings.storage_connection_string or ""
    assert peek_json(connection, settings.content_queue_name) == [{"externalId": "Ünïcødé"}, [1]]
    assert peek_texts(connection, settings.content_queue_name) == ['{"externalId": "Ünïcødé"}', "[1]"]


def test_another_not_found_is_raised(azurite: AzuriteEndpoints) -> None:
    """A wrong account answers 404 too, with ResourceNotFound rather than QueueNotFound."""
    wrong_account = azurite.connection_string.replace(f"/{ACCOUNT};", "/otheraccount;")
    with pytest.raises(ResourceNotFoundError) as info:
        peek_json(wrong_account, "content-commands", retry_total=0)
    assert info.value.error_code != "QueueNotFound"


def test_refused_credentials_are_raised(azurite: AzuriteEndpoints) -> None:
    wrong_key = azurite.connection_string.replace("AccountKey=Eby8", "AccountKey=Xby8")
    with pytest.raises(ClientAuthenticationError):
        peek_json(wrong_key, "content-commands", retry_total=0)


def test_an_invalid_queue_name_is_raised(azurite: AzuriteEndpoints) -> None:
    with pytest.raises(HttpResponseError):
        peek_json(azurite.connection_string, "Bad--Name", retry_total=0)


def test_a_message_that_is_not_base64_is_raised(azurite: AzuriteEndpoints) -> None:
    name = f"raw-{uuid.uuid4().hex[:10]}"
    with QueueClient.from_connection_string(azurite.connection_string, name) as client:
        client.create_queue()
        client.send_message("not base64!")
    with pytest.raises(binascii.Error):
        peek_texts(azurite.connection_string, name)
