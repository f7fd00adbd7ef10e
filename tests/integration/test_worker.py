"""The worker's decisions with real parts: Graph emulator, identity endpoint and Azurite poison queue."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from azure.identity.aio import ManagedIdentityCredential
from azure.storage.queue import QueueClient

from shared.graph import GraphClient, GraphTransientError
from shared.models import ContentCommand
from shared.queue import QueueUnavailable, StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, process
from tests.conftest import READ_ONLY_CLIENT_ID, UAMI_CLIENT_ID, GraphSide
from tests.webhooks import content

INFO = MessageInfo(message_id="m-1", dequeue_count=1)


async def no_sleep(_: float) -> None:
    return None


def make_graph(graph_side: GraphSide, http: httpx.AsyncClient, client_id: str = UAMI_CLIENT_ID) -> GraphClient:
    credential = ManagedIdentityCredential(client_id=client_id)
    CREDENTIALS.append(credential)
    return GraphClient(
        http,
        credential,
        root=f"{graph_side.url}/v1.0",
        scope="https://graph.microsoft.com/.default",
        max_inline_retry_seconds=5,
        sleep=no_sleep,
    )


CREDENTIALS: list[ManagedIdentityCredential] = []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client
    while CREDENTIALS:
        await CREDENTIALS.pop().close()


@pytest.fixture
def queue(settings: Settings) -> StorageCommandQueue:
    q = StorageCommandQueue.from_settings(settings)
    q.ensure_queues()
    return q


def poison(settings: Settings) -> list[str]:
    client = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.poison_queue_name)
    return [base64.b64decode(m.content).decode() for m in client.peek_messages(max_messages=32)]


def command(op: str, external_id: str, registration_id: str, **data: Any) -> bytes:
    return (
        ContentCommand(
            op=op,  # type: ignore[arg-type]
            registrationId=registration_id,
            externalId=external_id,
            content=content(external_id, **data) if op == "upsert" else None,  # type: ignore[arg-type]
            source="demo",
            sourceEventId="evt-1",
            eventTime=datetime(2026, 11, 27, tzinfo=UTC),
            correlationId="corr-w",
        )
        .to_json()
        .encode()
    )


async def test_upsert_then_delete_then_repeat(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    reg = graph_side.registration_id
    assert await process(command("upsert", "w-1", reg, level="beginner"), INFO, graph, queue.park) is Outcome.UPSERTED
    assert graph_side.get_content("w-1").json()["level"] == "beginner"
    # At-least-once delivery: the same message again changes nothing and fails nothing.
    assert await process(command("upsert", "w-1", reg, level="beginner"), INFO, graph, queue.park) is Outcome.UPSERTED
    assert await process(command("delete", "w-1", reg), INFO, graph, queue.park) is Outcome.DELETED
    assert await process(command("delete", "w-1", reg), INFO, graph, queue.park) is Outcome.ALREADY_ABSENT
    assert graph_side.get_content("w-1").status_code == 404
    assert poison(settings) == []


async def test_unknown_registration_is_parked_with_reason(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    body = command("upsert", "w-2", "no-such-registration")
    assert await process(body, INFO, graph, queue.park) is Outcome.PARKED
    [parked] = poison(settings)
    doc = json.loads(parked)
    assert doc["externalId"] == "w-2"
    assert doc["lastError"]["kind"] == "permanent"
    assert doc["lastError"]["status"] == 400
    assert doc["lastError"]["requestId"]


async def test_missing_permission_403_is_parked_at_once(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    graph = make_graph(graph_side, http, client_id=READ_ONLY_CLIENT_ID)
    body = command("upsert", "w-3", graph_side.registration_id)
    assert await process(body, INFO, graph, queue.park) is Outcome.PARKED
    [parked] = poison(settings)
    assert json.loads(parked)["lastError"]["status"] == 403


async def test_malformed_message_is_parked_unchanged(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    for body in (b"not json", b'{"v": 2, "op": "upsert"}', b'{"v":1,"op":"upsert","registrationId":"r"}'):
        assert await process(body, INFO, graph, queue.park) is Outcome.PARKED
    assert poison(settings) == ["not json", '{"v": 2, "op": "upsert"}', '{"v":1,"op":"upsert","registrationId":"r"}']


async def test_throttling_beyond_budget_is_raised_for_redelivery(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 120}])
    with pytest.raises(GraphTransientError):
        await process(command("upsert", "w-4", graph_side.registration_id), INFO, graph, queue.park)
    assert poison(settings) == []
    # The redelivery succeeds once Graph is healthy again.
    assert (
        await process(command("upsert", "w-4", graph_side.registration_id), INFO, graph, queue.park) is Outcome.UPSERTED
    )


async def test_parking_failure_is_raised_not_swallowed(graph_side: GraphSide, http: httpx.AsyncClient) -> None:
    graph = make_graph(graph_side, http)

    def broken_park(_: str) -> str:
        raise QueueUnavailable("poison queue down")

    with pytest.raises(QueueUnavailable):
        await process(command("upsert", "w-5", "no-such-registration"), INFO, graph, broken_park)
