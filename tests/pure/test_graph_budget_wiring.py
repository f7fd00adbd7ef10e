"""GraphClient spends from its WriteBudget (issue 11 point 3): before every attempt of a write, with
each of Graph's answers reported back (a 429's Retry-After included); reads spend nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shared.graph import Deadline, GraphClient, GraphTransientError
from shared.ratebudget import RATE_BUDGET
from tests.pure.test_graph_client_offline import ROOT, StaticCredential, no_sleep


class RecordingBudget:
    def __init__(self, refuse: bool = False) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.refuse = refuse

    async def acquire(self, cost: int, deadline: Deadline | None) -> None:
        self.events.append(("acquire", cost))
        if self.refuse:
            raise GraphTransientError(None, RATE_BUDGET, "spent", retry_after=42.0)

    async def settled(self, status: int | None, retry_after: float | None) -> None:
        self.events.append(("settled", status, retry_after))


def client(handler: Callable[[httpx.Request], httpx.Response], budget: RecordingBudget) -> GraphClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return GraphClient(http, StaticCredential(), root=ROOT, scope="s", sleep=no_sleep, budget=budget)


async def test_each_attempt_of_a_write_is_budgeted_and_each_answer_reported() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"code": "tooManyRequests"}})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(202, json={}))

    budget = RecordingBudget()
    await client(handler, budget).call("PATCH", "/x", json={})
    assert budget.events == [("acquire", 1), ("settled", 429, 2.0), ("acquire", 1), ("settled", 202, None)]


async def test_a_viva_body_hint_reaches_the_budget_and_reads_spend_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={})
        body = {"error": {"code": "serviceUnavailable", "message": "Retry after 3 minutes"}}
        return httpx.Response(503, json=body)

    budget = RecordingBudget()
    graph = client(handler, budget)
    await graph.call("GET", "/x")
    assert budget.events == []
    with pytest.raises(GraphTransientError):
        await graph.call("DELETE", "/x")  # 180 s is beyond the inline budget: raised at once
    assert budget.events == [("acquire", 1), ("settled", 503, 180.0)]


async def test_a_batch_spends_its_cost_and_a_lost_answer_is_reported_as_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    budget = RecordingBudget()
    with pytest.raises(GraphTransientError):
        await client(handler, budget).call("POST", "/$batch", json={"requests": []}, cost=20)
    assert budget.events == [("acquire", 20), ("settled", None, None)]


async def test_a_refusing_budget_is_raised_as_it_is_and_nothing_is_sent() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json={})

    with pytest.raises(GraphTransientError) as raised:
        await client(handler, RecordingBudget(refuse=True)).call("PATCH", "/x", json={})
    assert raised.value.code == RATE_BUDGET
    assert raised.value.retry_after == 42.0
    assert sent == []


async def test_with_budget_is_a_copy_that_shares_the_rest() -> None:
    graph = client(lambda request: httpx.Response(202, json={}), RecordingBudget())
    other = RecordingBudget()
    bound = graph.with_budget(other)
    assert bound is not graph
    assert bound.budget is other
    assert graph.with_budget(graph.budget) is graph
    await bound.call("PATCH", "/x", json={})
    assert other.events == [("acquire", 1), ("settled", 202, None)]
    tenant = "11111111-1111-4111-8111-111111111111"
    assert bound.for_tenant(tenant).budget is other
    assert graph.for_tenant(tenant).budget is graph.budget  # the plain client's copies are not rebound
