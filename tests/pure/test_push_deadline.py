"""One deadline bounds a whole push, and the lease outlasts it (issue 9, point 2). An in-memory httpx
transport stands in for Graph, and a fake monotonic clock for time: a request that Graph never answers
"takes" exactly its timeout, every back-off wait its length, so the worst case is measured, not waited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared import graph as graph_module
from shared.graph import Deadline, GraphClient, GraphTransientError
from shared.ledger import MIN_LEASE_MARGIN_SECONDS, PushTiming, push_timing
from shared.settings import Settings

ROOT = "https://graph.example/v1.0"
BODY = {"externalId": "x", "title": "t", "contentWebUrl": "https://lms.example/x", "languageTag": "en"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowCredential:
    """A token fetch that takes ``seconds`` of fake time (an uncached token: identity endpoint, Entra)."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.clock.now += self.seconds
        return AccessToken("t", 2**31)


def client(
    handler: Callable[[httpx.Request], httpx.Response],
    clock: FakeClock,
    *,
    timeout: float = 30.0,
    budget: float = 10.0,
    token_seconds: float = 0.0,
) -> GraphClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=timeout)
    return GraphClient(
        http,
        SlowCredential(clock, token_seconds),
        root=ROOT,
        scope="s",
        max_inline_retry_seconds=budget,
        sleep=clock.sleep,
    )


def never_answers(clock: FakeClock, seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """Graph takes the request and never answers: the client's read timeout ends it."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        clock.now += request.extensions["timeout"]["read"]
        raise httpx.ReadTimeout("no answer", request=request)

    return handler


def default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, float)
    return value


async def test_a_push_to_a_graph_that_never_answers_ends_before_its_lease() -> None:
    # The worker's defaults: GRAPH_TIMEOUT_SECONDS 30, GRAPH_MAX_INLINE_RETRY_SECONDS 10. Before the
    # deadline, 4 attempts x 30 s + 7 s of back-off took 127 s against a 120 s lease.
    timeout, budget = default("graph_timeout_seconds"), default("graph_max_inline_retry_seconds")
    timing = push_timing(timeout, budget)
    clock, seen = FakeClock(), list[httpx.Request]()
    graph = client(never_answers(clock, seen), clock, timeout=timeout, budget=budget, token_seconds=timeout)
    started = clock()
    deadline = Deadline.after(timing.deadline_seconds, clock)

    with pytest.raises(GraphTransientError) as info:
        await graph.upsert_content("reg", BODY, deadline=deadline)

    took = clock() - started
    assert took <= timing.deadline_seconds
    assert timing.lease_seconds - took >= timing.margin_seconds
    assert info.value.code in ("Deadline", "Timeout")
    assert len(seen) >= 2  # the deadline leaves room for a retry, not for every retry
    assert deadline.unsettled  # requests without an answer: Graph may still apply them


def test_the_lease_is_the_deadline_plus_one_graph_timeout() -> None:
    # The defaults: 3 x 30 s + 10 s of waits; a request given up on gets 30 s more to land.
    assert push_timing(30.0, 10.0) == PushTiming(deadline_seconds=100.0, lease_seconds=130.0)
    assert push_timing(30.0, 10.0).margin_seconds == 30.0
    # vlsync's own budget (120 s of waits) gives its writes a longer deadline, and a longer lease.
    assert push_timing(30.0, 120.0) == PushTiming(deadline_seconds=210.0, lease_seconds=240.0)
    assert push_timing(1.0, 0.0).margin_seconds == MIN_LEASE_MARGIN_SECONDS
    with pytest.raises(ValueError, match="outlast"):
        PushTiming(deadline_seconds=10.0, lease_seconds=10.0)


async def test_each_request_gets_at_most_the_time_left() -> None:
    clock, seen = FakeClock(), list[httpx.Request]()
    graph = client(never_answers(clock, seen), clock, timeout=30.0)
    deadline = Deadline.after(12.0, clock)

    with pytest.raises(GraphTransientError):
        await graph.upsert_content("reg", BODY, deadline=deadline)

    assert seen[0].extensions["timeout"] == {"connect": 12.0, "read": 12.0, "write": 12.0, "pool": 12.0}
    assert clock() - (deadline.at - 12.0) <= 12.0


async def test_no_wait_begins_that_would_leave_the_retry_no_time() -> None:
    clock, seen = FakeClock(), list[httpx.Request]()

    def throttled(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(429, headers={"Retry-After": "8"}, json={"error": {"code": "tooMany", "message": "m"}})

    graph = client(throttled, clock, budget=10.0)
    deadline = Deadline.after(9.0, clock)  # 8 s of waiting would leave 1 s for the retry

    with pytest.raises(GraphTransientError) as info:
        await graph.upsert_content("reg", BODY, deadline=deadline)

    assert len(seen) == 1
    assert clock() == deadline.at - 9.0  # it did not wait
    # The deadline error keeps Graph's answer, so the worker still defers a long Retry-After.
    assert (info.value.code, info.value.status, info.value.retry_after) == ("Deadline", 429, 8.0)
    assert not deadline.unsettled  # a 429 is an answer: the request was refused


async def test_no_attempt_starts_with_less_than_the_minimum_left() -> None:
    clock, seen = FakeClock(), list[httpx.Request]()
    graph = client(never_answers(clock, seen), clock)
    with pytest.raises(GraphTransientError) as info:
        await graph.upsert_content("reg", BODY, deadline=Deadline.after(graph_module.MIN_ATTEMPT_SECONDS / 2, clock))
    assert info.value.code == "Deadline"
    assert seen == []


async def test_a_slow_token_counts_against_the_deadline() -> None:
    clock, seen = FakeClock(), list[httpx.Request]()
    graph = client(never_answers(clock, seen), clock, token_seconds=25.0)
    deadline = Deadline.after(40.0, clock)
    with pytest.raises(GraphTransientError):
        await graph.upsert_content("reg", BODY, deadline=deadline)
    assert seen[0].extensions["timeout"]["read"] == 15.0  # what the token left of the 40 s


@pytest.mark.parametrize(
    ("answer", "unsettled"),
    [
        (httpx.ConnectError("refused"), False),  # never on the wire
        (httpx.RemoteProtocolError("dropped"), True),  # sent; the connection died before the answer
        (httpx.Response(504, json={"error": {"code": "GatewayTimeout", "message": "m"}}), True),
        (httpx.Response(502, json={"error": {"code": "BadGateway", "message": "m"}}), True),
        (httpx.Response(503, json={"error": {"code": "Unavailable", "message": "m"}}), False),
        (httpx.Response(429, json={"error": {"code": "tooMany", "message": "m"}}), False),
    ],
    ids=["connect-error", "dropped", "504", "502", "503", "429"],
)
async def test_a_request_graph_may_still_apply_marks_the_deadline(
    answer: httpx.Response | Exception, unsettled: bool
) -> None:
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    deadline = Deadline.after(30.0, clock)
    with pytest.raises(GraphTransientError):
        await client(handler, clock, budget=0.0).upsert_content("reg", BODY, deadline=deadline)
    assert deadline.unsettled is unsettled


async def test_an_answer_that_never_completes_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's timeouts bound each phase, not the whole exchange; the deadline bounds it all (real time)."""
    monkeypatch.setattr(graph_module, "MIN_ATTEMPT_SECONDS", 0.05)

    async def hangs(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    http = httpx.AsyncClient(transport=httpx.MockTransport(hangs), timeout=30.0)
    graph = GraphClient(http, SlowCredential(FakeClock(), 0.0), root=ROOT, scope="s", max_inline_retry_seconds=0.0)
    deadline = Deadline.after(0.2)
    with pytest.raises(GraphTransientError) as info:
        await asyncio.wait_for(graph.upsert_content("reg", BODY, deadline=deadline), timeout=10)
    assert info.value.code == "Timeout"
    assert deadline.unsettled


async def test_a_token_that_never_comes_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph_module, "MIN_ATTEMPT_SECONDS", 0.05)

    class Hanging:
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    seen: list[httpx.Request] = []

    def answers(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    http = httpx.AsyncClient(transport=httpx.MockTransport(answers))
    graph = GraphClient(http, Hanging(), root=ROOT, scope="s", max_inline_retry_seconds=0.0)
    with pytest.raises(GraphTransientError) as info:
        await asyncio.wait_for(graph.upsert_content("reg", BODY, deadline=Deadline.after(0.2)), timeout=10)
    assert info.value.code == "Deadline"
    assert seen == []
