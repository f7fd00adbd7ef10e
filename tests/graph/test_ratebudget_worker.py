"""The worker under the shared write budget (issue 11 point 3): a 429 pauses every instance through the
tenant's ``notBefore``, and a paused or spent budget sends commands back to the queue without spending
an attempt or a deferral, and without calling Graph."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient, TableServiceClient

from shared.ledger import Ledger, content_row_key
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.ratebudget import Policy, RateBudgets
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.clocks import VirtualClock
from tests.graph.conftest import GraphSide, make_graph
from tests.graph.test_circuit_worker import graph_calls
from tests.graph.test_worker import command, poison
from tests.queues import peek_messages


def ledger_table(settings: Settings) -> TableClient:
    service = TableServiceClient.from_connection_string(settings.storage_connection_string or "")
    return service.get_table_client(settings.ledger_table_name)


def budgets(settings: Settings, policy: Policy, clock: VirtualClock, max_wait_seconds: float = 5.0) -> RateBudgets:
    """One instance's budgets: its own table client on the shared ledger table, on the test's clock (the
    waits the worker is told are then exact, however loaded the machine)."""
    return RateBudgets(
        ledger_table(settings),
        policy,
        home_tenant=settings.home_tenant(),
        max_wait_seconds=max_wait_seconds,
        clock=clock,
        sleep=clock.sleep,
    )


class Deferrals:
    """Records what the worker sends back to the queue (and sends it)."""

    def __init__(self, queue: StorageCommandQueue) -> None:
        self.sent: list[tuple[ContentCommand, float]] = []
        self._defer = queue.defer

    def __call__(self, text: str, delay_seconds: float) -> str:
        self.sent.append((ContentCommand.model_validate_json(text), delay_seconds))
        return self._defer(text, delay_seconds)


def visible(settings: Settings) -> list[Any]:
    return peek_messages(settings.storage_connection_string or "", settings.content_queue_name)


async def test_a_429_pauses_every_instance_and_the_others_wait_without_spending_attempts(
    graph_side: GraphSide,
    http: httpx.AsyncClient,
    queue: StorageCommandQueue,
    ledger: Ledger,
    settings: Settings,
    monkeypatch: Any,
) -> None:
    deferrals = Deferrals(queue)
    monkeypatch.setattr(queue, "defer", deferrals)
    policy = Policy(ceiling=100.0, burst=20)
    graph = make_graph(graph_side, http)
    clock = VirtualClock()
    first = WorkerPorts(graph=graph, queue=queue, ledger=ledger, budgets=budgets(settings, policy, clock))
    second = WorkerPorts(graph=graph, queue=queue, ledger=ledger, budgets=budgets(settings, policy, clock))
    reg = graph_side.registration_id
    # Graph throttles the first write, with the hint only in the body, as the Viva error tables show it.
    graph_side.script_faults([{"status": 429, "retryAfterMinutesInBody": 1}])

    assert await process(command("upsert", "nb-1", reg), MessageInfo("m-1", 1), first) is Outcome.DEFERRED
    [(refused, wait)] = deferrals.sent
    assert refused.deferrals == 1  # the refused command itself: Graph's Retry-After, as before
    assert wait == 60
    calls = graph_calls(graph_side)

    # Another instance, on its final attempt: back to the queue for the pause, nothing spent, no call.
    final = MessageInfo("m-2", dequeue_count=5)
    assert await process(command("upsert", "nb-2", reg), final, second) is Outcome.DEFERRED
    waiting, paused_for = deferrals.sent[-1]
    assert waiting.external_id == "nb-2"
    assert waiting.deferrals == 0
    assert paused_for == pytest.approx(60)  # the whole pause: no time passed on the test's clock
    assert graph_calls(graph_side) == calls
    assert poison(settings) == []
    assert visible(settings) == []  # hidden until the pause ends


async def test_a_spent_budget_sends_commands_back_before_the_lease(
    graph_side: GraphSide,
    http: httpx.AsyncClient,
    queue: StorageCommandQueue,
    ledger: Ledger,
    settings: Settings,
    monkeypatch: Any,
) -> None:
    deferrals = Deferrals(queue)
    monkeypatch.setattr(queue, "defer", deferrals)
    # One write per 10 s, no burst: the second command would wait 10 s, longer than the inline 5 s.
    ports = WorkerPorts(
        graph=make_graph(graph_side, http),
        queue=queue,
        ledger=ledger,
        budgets=budgets(settings, Policy(ceiling=0.1, burst=1), VirtualClock()),
        max_inline_retry_seconds=5,
    )
    reg = graph_side.registration_id
    assert await process(command("upsert", "sp-1", reg), MessageInfo("s-1", 1), ports) is Outcome.UPSERTED
    calls = graph_calls(graph_side)
    assert await process(command("upsert", "sp-2", reg), MessageInfo("s-2", 5), ports) is Outcome.DEFERRED
    [(waiting, wait)] = deferrals.sent
    assert (waiting.external_id, waiting.deferrals) == ("sp-2", 0)
    assert wait == pytest.approx(10)  # the next write's slot, one 10 s interval on
    assert graph_calls(graph_side) == calls
    assert poison(settings) == []
    # Sent back before the lease: the item's ledger row was never claimed, only its event announced
    # (coalescing: the item's older commands waiting with it skip their writes).
    row = content_row_key("sp-2")
    [entity] = ledger_table(settings).query_entities("RowKey eq @row", parameters={"row": row})
    assert (entity.get("leaseOwner"), "pushedAt" in entity, "announcedTime" in entity) == (None, False, True)


async def test_a_budget_that_cannot_wait_inside_the_push_defers_it_and_frees_the_item(
    graph_side: GraphSide,
    http: httpx.AsyncClient,
    queue: StorageCommandQueue,
    ledger: Ledger,
    settings: Settings,
    monkeypatch: Any,
) -> None:
    """The pre-check allows waits up to the worker's inline budget (30 s here) but the budget itself
    waits at most 5 s: the client's acquire raises RateBudget inside the push, under the lease."""
    deferrals = Deferrals(queue)
    monkeypatch.setattr(queue, "defer", deferrals)
    ports = WorkerPorts(
        graph=make_graph(graph_side, http),
        queue=queue,
        ledger=ledger,
        budgets=budgets(settings, Policy(ceiling=0.1, burst=1), VirtualClock(), max_wait_seconds=5.0),
        max_inline_retry_seconds=30,
    )
    reg = graph_side.registration_id
    assert await process(command("upsert", "in-1", reg), MessageInfo("i-1", 1), ports) is Outcome.UPSERTED
    calls = graph_calls(graph_side)
    assert await process(command("upsert", "in-2", reg), MessageInfo("i-2", 5), ports) is Outcome.DEFERRED
    [(waiting, wait)] = deferrals.sent
    assert (waiting.external_id, waiting.deferrals) == ("in-2", 0)
    assert wait == pytest.approx(10)  # the next write's slot, one 10 s interval on
    assert graph_calls(graph_side) == calls
    # The item's lease was released: another command for it is not told "busy".
    ports_now = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    assert await process(command("upsert", "in-2", reg), MessageInfo("i-3", 1), ports_now) is Outcome.UPSERTED
