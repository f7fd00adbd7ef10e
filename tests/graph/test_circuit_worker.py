"""The worker with the Graph circuit breaker (issue 9 point 8): an outage of any length drains nothing
into poison; commands wait in the queue without spending attempts, and one probe closes the circuit."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
from azure.data.tables import TableServiceClient

from shared.circuit import FAILURES_TO_OPEN, FIRST_COOLDOWN, CircuitBreaker, TableCircuitStore
from shared.graph import GraphTransientError
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.graph.conftest import GraphSide, make_graph
from tests.graph.test_worker import command, poison
from tests.queues import peek_messages


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def graph_calls(graph_side: GraphSide) -> int:
    body: Any = graph_side.admin("GET", "/requests").json()
    return len(body.get("value", body) if isinstance(body, dict) else body)


def with_breaker(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> tuple[Clock, CircuitBreaker, WorkerPorts]:
    """The worker's ports with a breaker on the ledger table, read fresh every time, on a clock the test moves."""
    clock = Clock()
    table = TableServiceClient.from_connection_string(settings.storage_connection_string or "").get_table_client(
        settings.ledger_table_name
    )
    breaker = CircuitBreaker(TableCircuitStore(table), clock=clock, cache_seconds=0)
    return clock, breaker, WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger, circuit=breaker)


async def test_an_outage_opens_the_circuit_and_nothing_is_parked(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    clock, breaker, ports = with_breaker(graph_side, http, queue, ledger, settings)
    reg = graph_side.registration_id
    graph_side.admin("PUT", "/faults", json={"serverErrorRatio": 1.0, "serverErrorStatus": 503}).raise_for_status()

    for n in range(FAILURES_TO_OPEN - 1):  # failures 1-4: the queue retries them as usual
        with pytest.raises(GraphTransientError):
            await process(command("upsert", f"cb-{n}", reg), MessageInfo(f"m-{n}", 1), ports)
    # The fifth failure opens the circuit: that command goes back hidden instead of spending an attempt.
    opened = await process(command("upsert", "cb-4", reg), MessageInfo("m-4", 1), ports)
    assert opened is Outcome.DEFERRED
    assert breaker.view()["state"] == "open"

    # While open: no Graph call, not even on a message's final attempt, and nothing parked.
    before = graph_calls(graph_side)
    final = MessageInfo(f"m-{uuid.uuid4().hex[:6]}", dequeue_count=5)
    assert await process(command("upsert", "cb-final", reg), final, ports) is Outcome.DEFERRED
    assert graph_calls(graph_side) == before
    assert poison(settings) == []
    assert len(peek_messages(settings.storage_connection_string or "", settings.content_queue_name)) == 0  # hidden

    # Graph is back and the cool-down is over: the next command is the probe, and it closes the circuit.
    graph_side.admin("DELETE", "/faults").raise_for_status()
    clock.now += FIRST_COOLDOWN
    assert await process(command("upsert", "cb-probe", reg), MessageInfo("m-probe", 1), ports) is Outcome.UPSERTED
    assert breaker.view()["state"] == "closed"
    assert graph_side.get_content("cb-probe").status_code == 200


async def test_throttling_does_not_open_the_circuit(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """A 429 is Graph answering, with its own Retry-After: deferral handles it, the circuit stays closed."""
    table = TableServiceClient.from_connection_string(settings.storage_connection_string or "").get_table_client(
        settings.ledger_table_name
    )
    breaker = CircuitBreaker(TableCircuitStore(table), cache_seconds=0)
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger, circuit=breaker)
    graph_side.admin("PUT", "/faults", json={"throttleRatio": 1.0, "retryAfterSeconds": 60}).raise_for_status()
    try:
        for n in range(FAILURES_TO_OPEN + 1):
            body = command("upsert", f"th-{n}", graph_side.registration_id)
            assert await process(body, MessageInfo(f"t-{n}", 1), ports) is Outcome.DEFERRED
    finally:
        graph_side.admin("DELETE", "/faults")
    assert breaker.view()["state"] == "closed"


async def test_a_probe_the_ledger_skips_hands_the_probe_to_the_next_command(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """Coalescing skips many queued commands; one of them drawn as the probe must not hold the circuit
    half-open for two minutes (the fault suite's 40-second outage then never drained)."""
    clock, breaker, ports = with_breaker(graph_side, http, queue, ledger, settings)
    reg = graph_side.registration_id
    newer = command("upsert", "cb-skip", reg, at=datetime(2026, 11, 28, tzinfo=UTC))
    assert await process(newer, MessageInfo("m-new", 1), ports) is Outcome.UPSERTED
    graph_side.admin("PUT", "/faults", json={"serverErrorRatio": 1.0, "serverErrorStatus": 503}).raise_for_status()
    for n in range(FAILURES_TO_OPEN - 1):
        with pytest.raises(GraphTransientError):
            await process(command("upsert", f"cb-s{n}", reg), MessageInfo(f"m-s{n}", 1), ports)
    assert await process(command("upsert", "cb-s4", reg), MessageInfo("m-s4", 1), ports) is Outcome.DEFERRED
    graph_side.admin("DELETE", "/faults").raise_for_status()
    clock.now += FIRST_COOLDOWN

    older = command("upsert", "cb-skip", reg)  # drawn as the probe, then skipped: the ledger holds a newer event
    assert await process(older, MessageInfo("m-old", 1), ports) is Outcome.SKIPPED_STALE
    assert breaker.view()["state"] == "open"  # the probe handed back, not held half-open
    assert await process(command("upsert", "cb-next", reg), MessageInfo("m-next", 1), ports) is Outcome.UPSERTED
    assert breaker.view()["state"] == "closed"


async def open_circuit(graph_side: GraphSide, ports: WorkerPorts, prefix: str) -> None:
    reg = graph_side.registration_id
    graph_side.admin("PUT", "/faults", json={"serverErrorRatio": 1.0, "serverErrorStatus": 503}).raise_for_status()
    for n in range(FAILURES_TO_OPEN - 1):
        with pytest.raises(GraphTransientError):
            await process(command("upsert", f"{prefix}-{n}", reg), MessageInfo(f"{prefix}-m{n}", 1), ports)
    assert await process(command("upsert", f"{prefix}-4", reg), MessageInfo(f"{prefix}-m4", 1), ports) is (
        Outcome.DEFERRED
    )
    graph_side.admin("DELETE", "/faults").raise_for_status()


async def test_a_probe_graph_answers_with_a_4xx_or_a_429_closes_the_circuit(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """Graph answering at all is what the probe asks. Reported by nobody, a probe parked for its own 404
    or deferred by a 429 held the circuit half-open for the probe's whole lease (two minutes)."""
    clock, breaker, ports = with_breaker(graph_side, http, queue, ledger, settings)
    await open_circuit(graph_side, ports, "p4")
    clock.now += FIRST_COOLDOWN
    unknown = command("upsert", "cb-404", str(uuid.uuid4()))  # no such registration: Graph answers 404
    assert await process(unknown, MessageInfo("m-404", 1), ports) is Outcome.PARKED
    assert breaker.view()["state"] == "closed"

    await open_circuit(graph_side, ports, "p9")
    clock.now += FIRST_COOLDOWN
    graph_side.admin("PUT", "/faults", json={"throttleRatio": 1.0, "retryAfterSeconds": 60}).raise_for_status()
    try:
        probe = command("upsert", "cb-429", graph_side.registration_id)
        assert await process(probe, MessageInfo("m-429", 1), ports) is Outcome.DEFERRED
    finally:
        graph_side.admin("DELETE", "/faults")
    assert breaker.view()["state"] == "closed"


async def test_a_probe_that_fails_before_graph_hands_the_probe_back(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """A probe whose command fails before any Graph call (here a bug: the ledger raises) says nothing
    about Graph: the probe goes back at once and the next command probes."""
    clock, breaker, ports = with_breaker(graph_side, http, queue, ledger, settings)
    await open_circuit(graph_side, ports, "pb")
    clock.now += FIRST_COOLDOWN

    class BrokenPush:
        """The ledger, except that taking the lease fails."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ledger, name)

        def pushing(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug before the push")

    broken = replace(ports, ledger=cast(Ledger, BrokenPush()))
    with pytest.raises(RuntimeError):
        await process(command("upsert", "cb-bug", graph_side.registration_id), MessageInfo("m-bug", 1), broken)
    assert breaker.view()["state"] == "open"  # handed back, not held half-open
    assert breaker.wait_seconds() == 0.0  # the next command probes now


async def test_a_failed_push_let_in_again_as_the_probe_hands_the_probe_back(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """Instance A still sees the circuit closed (its cache) when B opens it; after the cool-down, A's
    failed push reads the row, finds it open and over, and is let in again, as the probe. It calls Graph
    no more, so the probe goes back: left out, the circuit stayed half-open for the probe's lease."""
    clock, b_breaker, b_ports = with_breaker(graph_side, http, queue, ledger, settings)
    table = TableServiceClient.from_connection_string(settings.storage_connection_string or "").get_table_client(
        settings.ledger_table_name
    )
    a_breaker = CircuitBreaker(TableCircuitStore(table), clock=clock, cache_seconds=3600)
    assert a_breaker.wait_seconds() == 0.0  # A reads the row once: closed, and keeps that view
    a_ports = replace(b_ports, circuit=a_breaker)
    await open_circuit(graph_side, b_ports, "pa")  # B opens the circuit
    clock.now += FIRST_COOLDOWN

    graph_side.admin("PUT", "/faults", json={"serverErrorRatio": 1.0, "serverErrorStatus": 503}).raise_for_status()
    try:
        with pytest.raises(GraphTransientError):  # first attempt: back to the queue as a retry
            await process(command("upsert", "cb-a", graph_side.registration_id), MessageInfo("m-a", 1), a_ports)
    finally:
        graph_side.admin("DELETE", "/faults")
    assert b_breaker.view()["state"] == "open"  # handed back: the next command probes at once
    assert b_breaker.wait_seconds() == 0.0
