"""The worker's delivery promise under failures and ties (issue 9, points 1, 3 and 5): nothing
vanishes with the poison queue's 7-day time-to-live, ties have one order, and a short Retry-After
is not turned into a new message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared.graph import GraphTransientError
from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.graph.conftest import GraphSide, make_graph
from tests.queues import peek_texts
from tests.webhooks import content

T = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def event(op: str, external_id: str, registration_id: str, event_id: str, at: datetime = T, **data: Any) -> bytes:
    return (
        ContentCommand(
            op=op,  # type: ignore[arg-type]
            registrationId=registration_id,
            externalId=external_id,
            content=content(external_id, **data) if op == "upsert" else None,  # type: ignore[arg-type]
            source="demo",
            sourceEventId=event_id,
            eventTime=at,
            correlationId="corr-d",
        )
        .to_json()
        .encode()
    )


def parked(settings: Settings) -> list[dict[str, Any]]:
    return [
        json.loads(text) for text in peek_texts(settings.storage_connection_string or "", settings.poison_queue_name)
    ]


def queued_count(settings: Settings) -> int:
    client = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.content_queue_name)
    return int(client.get_queue_properties().approximate_message_count)


async def test_the_final_attempt_parks_the_command_itself_with_its_reason(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    body = event("upsert", "g-1", graph_side.registration_id, "e-1")
    graph_side.script_faults([{"status": 503}] * 20)  # an outage without Retry-After
    with pytest.raises(GraphTransientError):  # not the last attempt: the queue redelivers
        await process(body, MessageInfo("m-1", 4, max_dequeue_count=5), ports)
    assert parked(settings) == []
    # The last attempt: parked by the worker (never expires, says why), not left to the host's
    # poison copy with its 7-day time-to-live.
    assert await process(body, MessageInfo("m-1", 5, max_dequeue_count=5), ports) is Outcome.PARKED
    [doc] = parked(settings)
    assert doc["externalId"] == "g-1"
    assert doc["lastError"]["kind"] == "transient"
    assert doc["lastError"]["status"] == 503
    assert doc["lastError"]["attempts"] == 5


async def test_a_redelivered_upsert_of_the_same_second_never_undoes_a_delete(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    reg = graph_side.registration_id
    upsert, delete = event("upsert", "g-2", reg, "e-up"), event("delete", "g-2", reg, "e-del")
    assert await process(upsert, MessageInfo("m-up", 1), ports) is Outcome.UPSERTED
    assert await process(delete, MessageInfo("m-del", 1), ports) is Outcome.DELETED
    assert await process(upsert, MessageInfo("m-up", 2), ports) is Outcome.SKIPPED_STALE  # the redelivery
    assert graph_side.get_content("g-2").status_code == 404


async def test_ties_between_different_events_have_one_order(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    reg = graph_side.registration_id
    a = event("upsert", "g-3", reg, "evt-a", title="A")
    b = event("upsert", "g-3", reg, "evt-b", title="B")
    # Whatever order they arrive in, the one ordered last (by event id at equal times) stays.
    assert await process(b, MessageInfo("m-b", 1), ports) is Outcome.UPSERTED
    assert await process(a, MessageInfo("m-a", 1), ports) is Outcome.SKIPPED_STALE
    assert graph_side.get_content("g-3").json()["title"] == "B"


async def test_a_short_retry_after_is_not_turned_into_a_new_message(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    graph = make_graph(graph_side, http)
    ports = WorkerPorts(graph=graph, queue=queue, ledger=ledger, max_inline_retry_seconds=10)
    # Graph keeps asking for 3 s; the client's own budget runs out, but 3 s is within the inline
    # budget, so the queue's ordinary redelivery retries it: no deferred copy.
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 3}] * 20)
    with pytest.raises(GraphTransientError):
        await process(event("upsert", "g-4", graph_side.registration_id, "e-4"), MessageInfo("m-4", 1), ports)
    assert queued_count(settings) == 0
