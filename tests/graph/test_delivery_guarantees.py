"""The worker's delivery promise under failures and ties (issue 9, points 1, 2, 3 and 5): nothing
vanishes with the poison queue's 7-day time-to-live, an older push never lands over a newer one (nor
passes for a success when it may have), ties have one order, and a short Retry-After is not turned
into a new message."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared.graph import Deadline, GraphTransientError, WriteBudget
from shared.ledger import Ledger, LedgerEntry, PushTiming, content_row_key, partition_key, table_service
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import GraphPort, MessageInfo, Outcome, WorkerPorts, process
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


def lease_left(settings: Settings, registration_id: str, external_id: str) -> float:
    """Seconds until the item's lease ends (0: nobody holds it)."""
    table = table_service(settings).get_table_client(settings.ledger_table_name)
    row = table.get_entity(partition_key(settings.home_tenant(), registration_id), content_row_key(external_id))
    return float((row["leaseUntil"] - datetime.now(UTC)).total_seconds()) if row["leaseOwner"] else 0.0


async def test_a_push_graph_may_still_apply_holds_the_item_until_it_cannot_land(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """Graph takes the older PATCH but answers only after the push's deadline: the client gives up, and
    Graph applies it later. Before, the lease was released at once and a newer push could go first."""
    reg = graph_side.registration_id
    # Short numbers so the test waits seconds, not minutes: the request outlives the deadline (3.5 s of
    # latency against 2.5 s), and the lease outlives the request.
    ports = WorkerPorts(
        graph=make_graph(graph_side, http),
        queue=queue,
        ledger=ledger,
        timing=PushTiming(deadline_seconds=2.5, lease_seconds=6.0),
    )
    older = event("upsert", "g-5", reg, "e-old", T, title="Older")
    newer = event("upsert", "g-5", reg, "e-new", T + timedelta(minutes=1), title="Newer")
    graph_side.script_faults([{"latencyMs": 3500, "match": {"methods": ["PATCH"]}}])

    with pytest.raises(GraphTransientError):
        await process(older, MessageInfo("m-old", 1), ports)
    # The newer command waits (a new hidden message, no attempt spent) while the older PATCH may land.
    assert await process(newer, MessageInfo("m-new", 1), ports) is Outcome.DEFERRED

    await asyncio.sleep(lease_left(settings, reg, "g-5") + 0.2)
    assert graph_side.get_content("g-5").json()["title"] == "Older"  # it did land, after the client gave up
    assert await process(newer, MessageInfo("m-new-again", 1), ports) is Outcome.UPSERTED
    assert await process(older, MessageInfo("m-old", 2), ports) is Outcome.SKIPPED_STALE
    assert graph_side.get_content("g-5").json()["title"] == "Newer"


class NewerEventRecordedMeanwhile:
    """Graph as the worker sees it, while a newer event of the same item is pushed and recorded during
    the push: what happens when a lease ends under a push (a clock jump, a slow storage call)."""

    def __init__(self, graph: GraphPort, ledger: Ledger, newer: LedgerEntry) -> None:
        self.graph, self.ledger, self.newer = graph, ledger, newer

    async def upsert_content(
        self,
        registration_id: str,
        content: dict[str, Any],
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        await asyncio.to_thread(self.ledger.record, self.newer)
        return await self.graph.upsert_content(
            registration_id, content, correlation_id=correlation_id, deadline=deadline
        )

    async def delete_content(
        self,
        registration_id: str,
        external_id: str,
        *,
        correlation_id: str | None = None,
        deadline: Deadline | None = None,
    ) -> bool:
        raise AssertionError("not used")

    def for_tenant(self, tenant_id: str | None) -> GraphPort:
        return self

    def with_budget(self, budget: WriteBudget | None) -> GraphPort:
        return self


async def test_a_push_that_lands_after_a_newer_event_is_not_a_success(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    reg = graph_side.registration_id
    newer = LedgerEntry(reg, "g-6", "delete", T + timedelta(minutes=1), datetime.now(UTC), "worker", "demo", "e-new")
    graph = NewerEventRecordedMeanwhile(make_graph(graph_side, http), ledger, newer)
    ports = WorkerPorts(graph=graph, queue=queue, ledger=ledger)

    # Before, the worker logged a warning and reported "upserted" while Graph held the older state.
    assert await process(event("upsert", "g-6", reg, "e-old", T), MessageInfo("m-old", 1), ports) is Outcome.LEASE_LOST
    [marked] = ledger.needs_repair(reg)
    assert marked["externalId"] == "g-6"
    assert marked["lastPush"].source_event_id == "e-new"  # the event to apply again
    assert marked["stale"]["sourceEventId"] == "e-old"  # what Graph may hold instead
    assert graph_side.get_content("g-6").status_code == 200  # indeed: the delete's state is not in Graph


def content_patches(graph_side: GraphSide, external_id: str) -> int:
    records = graph_side.admin("GET", "/requests").json()["value"]
    return sum(1 for r in records if r["method"] == "PATCH" and external_id in r["path"] and r["status"] < 300)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_course_changed_ten_times_while_busy_costs_one_write_with_the_newest_state(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, seed: int
) -> None:
    """Issue 11: each command that finds the item busy announces its event as it goes back to the queue;
    when they come back, in any order, only the newest costs a Graph write, and Graph ends with it."""
    reg = graph_side.registration_id
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    assert ledger.claim(reg, "g-burst", T, "m-holder", 60)  # another message is pushing the item
    bodies = [
        (n, event("upsert", "g-burst", reg, f"e-{n:02d}", T + timedelta(seconds=n), title=f"rev {n}"))
        for n in range(1, 11)
    ]
    random.Random(seed).shuffle(bodies)
    first = [(n, body, await process(body, MessageInfo(f"m-{n}", 1), ports)) for n, body in bodies]
    # Busy: each goes back to wait, announced; one older than an event announced before it is skipped at once.
    assert {outcome for _, _, outcome in first} <= {Outcome.DEFERRED, Outcome.SKIPPED_STALE}
    assert (10, Outcome.DEFERRED) in {(n, outcome) for n, _, outcome in first}
    ledger.release(reg, "g-burst", "m-holder")
    waiting = [(n, body) for n, body, outcome in first if outcome is Outcome.DEFERRED]
    random.Random(seed + 100).shuffle(waiting)  # the deferred copies come back in another order
    outcomes = [await process(body, MessageInfo(f"m-back-{n}", 1), ports) for n, body in waiting]
    assert sorted(outcomes) == sorted([Outcome.UPSERTED] + [Outcome.SKIPPED_STALE] * (len(waiting) - 1))
    assert content_patches(graph_side, "g-burst") == 1
    assert graph_side.get_content("g-burst").json()["title"] == "rev 10"
    assert ledger.last_push(reg, "g-burst").source_event_id == "e-10"  # type: ignore[union-attr]


async def test_an_announced_event_never_holds_back_itself_or_a_newer_one(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger
) -> None:
    reg = graph_side.registration_id
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    assert ledger.announce(reg, "g-ann", T + timedelta(seconds=5), source_event_id="e-5")
    assert not ledger.announce(reg, "g-ann", T + timedelta(seconds=1), source_event_id="e-1")  # only forward
    older = event("upsert", "g-ann", reg, "e-1", T + timedelta(seconds=1), title="rev 1")
    assert await process(older, MessageInfo("m-1", 1), ports) is Outcome.SKIPPED_STALE
    same = event("upsert", "g-ann", reg, "e-5", T + timedelta(seconds=5), title="rev 5")
    assert await process(same, MessageInfo("m-5", 1), ports) is Outcome.UPSERTED
    newer = event("delete", "g-ann", reg, "e-9", T + timedelta(seconds=9))
    assert await process(newer, MessageInfo("m-9", 1), ports) is Outcome.DELETED
    assert not ledger.announce(reg, "g-ann", T + timedelta(seconds=7), source_event_id="e-7")  # recorded is newer
    assert graph_side.get_content("g-ann").status_code == 404
