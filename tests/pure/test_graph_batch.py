"""The batch writer (``shared.graph_batch``) against an in-memory Graph: inner 429s retried alone after
their own Retry-After, inner 4xx reported per item, the shared budget told of inner 429/503, and the
fallback to single requests when a batch is refused as a whole."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared.graph import Deadline, GraphClient, GraphPermanentError, GraphTransientError
from shared.graph_batch import BatchRequestError, BatchWriter

ROOT = "https://graph.example/v1.0"


class StaticCredential:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", 2**31)


class RecordingBudget:
    def __init__(self) -> None:
        self.acquired: list[int] = []
        self.answers: list[tuple[int | None, float | None]] = []

    async def acquire(self, cost: int, deadline: Deadline | None) -> None:
        self.acquired.append(cost)

    async def settled(self, status: int | None, retry_after: float | None) -> None:
        self.answers.append((status, retry_after))


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def item(external_id: str) -> dict[str, Any]:
    return {"externalId": external_id, "title": "T", "contentWebUrl": "https://x/1", "languageTag": "en-us"}


def graph_with(
    handler: Callable[[httpx.Request], httpx.Response], budget: RecordingBudget | None = None
) -> GraphClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = GraphClient(http, StaticCredential(), root=ROOT, scope="s", sleep=Sleeps(), budget=budget)
    return client


def external_id_of(url: str) -> str:
    return url.split("externalId='")[1].split("'")[0]


async def write_all(writer: BatchWriter, ids: list[str]) -> list[Any]:
    async with writer:
        results: list[Any] = await asyncio.gather(*(writer.upsert("reg", item(i)) for i in ids), return_exceptions=True)
        return results


async def test_an_inner_429_is_retried_alone_after_its_retry_after() -> None:
    batches: list[list[str]] = []
    throttled = {"b-3"}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1.0/$batch"
        requests = json.loads(request.content)["requests"]
        batches.append([external_id_of(r["url"]) for r in requests])
        responses = []
        for r in requests:
            eid = external_id_of(r["url"])
            assert r["method"] == "PATCH"
            assert r["body"]["isActive"] is True  # the worker's full upsert body
            if eid in throttled:
                throttled.discard(eid)
                responses.append(
                    {
                        "id": r["id"],
                        "status": 429,
                        "headers": {"Retry-After": "7"},
                        "body": {"error": {"code": "tooManyRequests", "message": "slow down"}},
                    }
                )
            else:
                responses.append({"id": r["id"], "status": 200, "body": {"id": f"g-{eid}", "externalId": eid}})
        return httpx.Response(200, json={"responses": list(reversed(responses))})  # any order

    budget = RecordingBudget()
    sleeps = Sleeps()
    writer = BatchWriter(graph_with(handler, budget), sleep=sleeps, linger_seconds=0.05)
    results = await write_all(writer, [f"b-{i}" for i in range(1, 6)])

    assert [r["id"] for r in results] == [f"g-b-{i}" for i in range(1, 6)]
    assert sorted(batches[0]) == [f"b-{i}" for i in range(1, 6)]
    assert batches[1:] == [["b-3"]]
    assert sleeps.waits == [7.0]
    assert (429, 7.0) in budget.answers
    assert budget.acquired[:2] == [5, 1]  # a batch spends one unit per request inside it
    assert writer.stats.inner_retries == 1


async def test_an_inner_4xx_fails_that_item_only() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requests = json.loads(request.content)["requests"]
        return httpx.Response(
            200,
            json={
                "responses": [
                    {"id": r["id"], "status": 400, "body": {"error": {"code": "badRequest", "message": "no"}}}
                    if external_id_of(r["url"]) == "bad"
                    else {"id": r["id"], "status": 200, "body": {}}
                    for r in requests
                ]
            },
        )

    results = await write_all(BatchWriter(graph_with(handler), sleep=Sleeps()), ["ok-1", "bad", "ok-2"])
    assert results[0] == {}
    assert results[2] == {}
    assert isinstance(results[1], GraphPermanentError)
    assert (results[1].status, results[1].code) == (400, "badRequest")


async def test_an_inner_503_is_retried_and_gives_up_after_its_attempts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requests = json.loads(request.content)["requests"]
        return httpx.Response(200, json={"responses": [{"id": r["id"], "status": 503} for r in requests]})

    budget = RecordingBudget()
    results = await write_all(BatchWriter(graph_with(handler, budget), sleep=Sleeps()), ["x"])
    assert isinstance(results[0], GraphTransientError)
    assert results[0].status == 503
    assert budget.answers.count((503, None)) == 8  # every attempt's 503 told to the shared budget


@pytest.mark.parametrize(
    "refusal",
    [
        httpx.Response(400, json={"error": {"code": "BadRequest", "message": "Invalid batch payload format."}}),
        httpx.Response(404, json={"error": {"code": "RequestBroker--ParseUri", "message": "no segment '$batch'"}}),
        httpx.Response(405, json={"error": {"code": "MethodNotAllowed", "message": "no"}}),
        httpx.Response(501, json={"error": {"code": "NotImplemented", "message": "no"}}),
    ],
    ids=["400", "404", "405", "501"],
)
async def test_a_batch_refused_as_a_whole_falls_back_to_single_requests_once(refusal: httpx.Response) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path.split('/')[-1][:9]}")
        if request.url.path.endswith("/$batch"):
            return httpx.Response(refusal.status_code, json=refusal.json())
        return httpx.Response(200, json={"externalId": "x"})

    told: list[str] = []
    writer = BatchWriter(graph_with(handler), sleep=Sleeps(), on_fallback=told.append, linger_seconds=0.05)
    results = await write_all(writer, [f"f-{i}" for i in range(30)])
    assert all(r == {"externalId": "x"} for r in results)
    assert len(told) == 1
    assert seen.count("POST $batch") == 1  # the refusal is learned once, then single PATCHes
    assert sum(1 for s in seen if s.startswith("PATCH")) == 30
    assert writer.stats.view()["singleRequests"] == 30


async def test_every_inner_answer_saying_not_supported_falls_back() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/$batch"):
            requests = json.loads(request.content)["requests"]
            return httpx.Response(200, json={"responses": [{"id": r["id"], "status": 501} for r in requests]})
        return httpx.Response(200, json={"ok": True})

    told: list[str] = []
    results = await write_all(BatchWriter(graph_with(handler), sleep=Sleeps(), on_fallback=told.append), ["a", "b"])
    assert results == [{"ok": True}, {"ok": True}]
    assert len(told) == 1


async def test_the_batch_keeps_the_earliest_deadline_and_marks_every_item_unsettled() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    writer = BatchWriter(graph_with(handler), sleep=Sleeps(), linger_seconds=0.05)
    clock = [0.0]
    deadlines = [Deadline(30.0, lambda: clock[0]), Deadline(60.0, lambda: clock[0])]
    async with writer:
        results = await asyncio.gather(
            *(writer.upsert("reg", item(f"d-{i}"), deadline=d) for i, d in enumerate(deadlines)),
            return_exceptions=True,
        )
    assert all(isinstance(r, GraphTransientError) for r in results)
    assert all(d.unsettled for d in deadlines)  # Graph may still apply the batch: leases are held


# -- in flight, the budget's burst, a batch failing as a whole -------------------------------------------


def held_graph(entered: asyncio.Event, release: asyncio.Event, budget: Any = None) -> GraphClient:
    """A Graph whose batches are answered (200 each) only once ``release`` is set."""

    async def handler(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        requests = json.loads(request.content)["requests"]
        return httpx.Response(200, json={"responses": [{"id": r["id"], "status": 200, "body": {}} for r in requests]})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return GraphClient(http, StaticCredential(), root=ROOT, scope="s", sleep=Sleeps(), budget=budget)


async def test_an_item_is_unsettled_while_its_batch_is_on_its_way() -> None:
    """A caller that gives up while the request is out (a cancelled run) sees the item unsettled, so its
    lease is kept for the landing margin; an answer settles it again."""
    entered, release = asyncio.Event(), asyncio.Event()
    deadline = Deadline.after(60)
    async with BatchWriter(held_graph(entered, release), linger_seconds=0) as writer:
        pending = asyncio.create_task(writer.upsert("reg", item("a"), deadline=deadline))
        await entered.wait()
        assert deadline.unsettled is True
        release.set()
        await pending
    assert deadline.unsettled is False


async def test_a_batch_still_out_when_the_writer_closes_leaves_its_items_unsettled() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    deadline = Deadline.after(60)
    writer = BatchWriter(held_graph(entered, release), linger_seconds=0)
    async with writer:
        caller = asyncio.create_task(writer.upsert("reg", item("a"), deadline=deadline))
        await entered.wait()
        caller.cancel()  # the run is cancelled: its caller goes, the writer's request is still out
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert deadline.unsettled is True
    assert deadline.unsettled is True  # closed before any answer: it may still land


async def test_a_single_request_is_unsettled_while_out_too() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        entered.set()
        await release.wait()
        return httpx.Response(200, json={})

    graph = GraphClient(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)), StaticCredential(), root=ROOT, scope="s"
    )
    deadline = Deadline.after(60)
    async with BatchWriter(graph, batching=False) as writer:
        pending = asyncio.create_task(writer.upsert("reg", item("a"), deadline=deadline))
        await entered.wait()
        assert deadline.unsettled is True
        release.set()
        await pending
    assert deadline.unsettled is False


class BurstBudget(RecordingBudget):
    burst = 5


async def test_batches_hold_no_more_than_the_budgets_burst() -> None:
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests = json.loads(request.content)["requests"]
        sizes.append(len(requests))
        return httpx.Response(200, json={"responses": [{"id": r["id"], "status": 200, "body": {}} for r in requests]})

    budget = BurstBudget()
    writer = BatchWriter(graph_with(handler, budget), batch_size=20)
    assert writer.batch_size == 5
    results = await write_all(writer, [f"i{n}" for n in range(12)])
    assert not [r for r in results if isinstance(r, BaseException)]
    assert max(sizes) <= 5
    assert sum(sizes) == 12
    assert budget.acquired == sizes  # each batch spends what it holds


async def test_a_batch_failing_as_a_whole_is_no_answer_for_its_items() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": {"code": "Forbidden", "message": "no permission"}})

    results = await write_all(BatchWriter(graph_with(handler)), ["a", "b"])
    assert all(isinstance(r, BatchRequestError) for r in results)
    assert {r.status for r in results} == {403}
