"""Fixtures for the dev host tests: Azurite (the session one from tests/conftest.py), fresh queues."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from local.azurite import AzuriteEndpoints

# Fast polling so queue tests settle in well under a second; everything else at its default.
FAST_QUEUES: dict[str, Any] = {"maxPollingInterval": "00:00:00.1"}


def host_json(**queues: Any) -> dict[str, Any]:
    """A host.json document with fast polling plus the given ``extensions.queues`` overrides."""
    return {"version": "2.0", "extensions": {"queues": {**FAST_QUEUES, **queues}}}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.02)


@pytest.fixture
def storage(azurite: AzuriteEndpoints) -> dict[str, str]:
    """Settings pointing the default connection (and the ``Store`` prefix) at Azurite."""
    return {"AzureWebJobsStorage": azurite.connection_string, "Store": azurite.connection_string}


@pytest.fixture
def queue_client(azurite: AzuriteEndpoints) -> Iterator[Callable[[str], QueueClient]]:
    """A raw client (no message encoding) for sending and peeking; closed after the test."""
    clients: list[QueueClient] = []

    def make(name: str) -> QueueClient:
        client = QueueClient.from_connection_string(azurite.connection_string, name)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def peek_all(client: QueueClient) -> list[str]:
    return [m.content for m in client.peek_messages(max_messages=32)]
