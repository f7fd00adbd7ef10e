"""GraphClient rules that need no server: an in-memory httpx transport stands in for Graph (issue 8, point 5)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared.graph import GraphClient, GraphPermanentError, GraphTransientError, required_permission

ROOT = "https://graph.example/v1.0"
REPO = Path(__file__).resolve().parents[2]


class StaticCredential:
    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("t", 2**31)


async def no_sleep(_: float) -> None:
    return None


def client_with(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[GraphClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    return GraphClient(http, StaticCredential(), root=ROOT, scope="s", sleep=no_sleep), seen


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example/v1.0/next?$skip=1",
        "http://graph.example/v1.0/next",
        "https://graph.example:8443/v1.0/next",
    ],
    ids=["host", "scheme", "port"],
)
async def test_a_next_link_to_another_origin_is_not_followed_with_the_token(foreign: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host != "graph.example" or request.url.scheme != "https" or request.url.port:
            return httpx.Response(200, json={"value": [{"externalId": "stolen"}]})  # the last page: no loop
        return httpx.Response(200, json={"value": [{"externalId": "a"}], "@odata.nextLink": foreign})

    client, seen = client_with(handler)
    items: list[dict[str, Any]] = []

    async def read_all() -> None:
        async for item in client.list_contents("reg"):
            items.append(item)

    with pytest.raises(GraphPermanentError) as info:
        await read_all()
    assert items == [{"externalId": "a"}]
    assert "nextLink" in info.value.message
    assert [str(r.url) for r in seen] == [f"{ROOT}/employeeExperience/learningProviders/reg/learningContents"]


async def test_a_next_link_on_the_same_origin_is_followed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "skip" in str(request.url):
            return httpx.Response(200, json={"value": [{"externalId": "b"}]})
        return httpx.Response(200, json={"value": [{"externalId": "a"}], "@odata.nextLink": f"{ROOT}/x?$skip=1"})

    client, _ = client_with(handler)
    assert [i["externalId"] async for i in client.list_contents("reg")] == ["a", "b"]


async def test_a_post_whose_connection_failed_before_sending_is_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(201, json={"id": "p-1"})

    client, _ = client_with(handler)
    assert (await client.create_provider({"displayName": "x"}))["id"] == "p-1"
    assert len(calls) == 2


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped"), httpx.ReadError("reset")],
    ids=["read-timeout", "dropped", "reset"],
)
async def test_a_post_that_may_have_reached_graph_is_not_retried(failure: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    client, seen = client_with(handler)
    with pytest.raises(GraphTransientError) as info:
        await client.create_provider({"displayName": "x"})
    assert info.value.may_have_applied is True
    assert len(seen) == 1


async def test_an_idempotent_call_after_a_read_timeout_is_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(202, json={"externalId": "x"})

    client, _ = client_with(handler)
    await client.upsert_content("reg", {"externalId": "x", "title": "t", "contentWebUrl": "u", "languageTag": "en"})
    assert len(calls) == 2


async def test_last_server_date_comes_from_every_answer_even_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, headers={"Date": "Tue, 01 Dec 2026 10:11:12 GMT"}, json={"error": {"code": "x"}})

    client, _ = client_with(handler)
    assert client.last_server_date is None
    with pytest.raises(GraphPermanentError):
        await client.get_provider("p")
    assert client.last_server_date == datetime(2026, 12, 1, 10, 11, 12, tzinfo=UTC)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def test_the_permission_table_matches_the_documented_one() -> None:
    """``shared/graph.py`` keeps its own copy (the deployed app never reads ``local/``)."""
    table = json.loads((REPO / "local/graph_metadata/learning-paths.derived.json").read_text(encoding="utf-8"))
    checked = 0
    for entry in table["paths"]:
        if not entry["path"].startswith("/employeeExperience/learningProviders") or "CourseActivities" in entry["path"]:
            continue
        for method, spec in entry["methods"].items():
            documented = re.search(r"(?:Application|Delegated) (Learning\w+\.\w+(?:\.All)?)", spec["perm"])
            assert documented is not None, spec
            assert documented.group(1) in required_permission(method, _concrete(entry["path"])), (method, entry)
            checked += 1
    assert checked == 12
