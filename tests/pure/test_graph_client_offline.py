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


def ref_only_graph(request: httpx.Request) -> httpx.Response:
    """Graph as documented: only .../$ref deletes; registration 'unknown' does not exist."""
    path = request.url.raw_path.decode()
    if "/learningProviders/unknown/" in path:
        status = 400 if path.endswith("/$ref") else 404
        return httpx.Response(status, json={"error": {"code": "badRequest", "message": "no such provider"}})
    if request.method == "DELETE":
        return httpx.Response(204) if path.endswith("/$ref") else httpx.Response(405, json={"error": {}})
    return httpx.Response(404, json={"error": {"code": "notFound", "message": "gone"}})


async def test_a_delete_that_learns_nothing_does_not_decide_the_form() -> None:
    client, seen = client_with(ref_only_graph)
    # An unknown registration: 400 on /$ref, 404 on the plain form, 404 on the GET. Absent, but
    # nothing was learnt about the form, so the next delete still starts with /$ref.
    assert await client.delete_content("unknown", "c-1") is False
    seen.clear()
    assert await client.delete_content("reg-1", "c-2") is True
    assert [(r.method, r.url.raw_path.decode().endswith("/$ref")) for r in seen] == [("DELETE", True)]


async def test_a_form_that_answers_404_for_an_item_that_exists_is_a_refused_form() -> None:
    def plain_only(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if request.method == "DELETE":
            return (
                httpx.Response(404, json={"error": {"code": "notFound"}})
                if path.endswith("/$ref")
                else httpx.Response(204)
            )
        return httpx.Response(200, json={"id": "x", "externalId": "c-1"})  # the GET still finds it

    client, seen = client_with(plain_only)
    assert await client.delete_content("reg-1", "c-1") is True
    assert [r.method for r in seen] == ["DELETE", "GET", "DELETE"]
    seen.clear()
    assert await client.delete_content("reg-1", "c-2") is True  # the plain form is now known
    assert [(r.method, r.url.raw_path.decode().endswith("/$ref")) for r in seen] == [("DELETE", False)]


def test_per_tenant_clients_share_what_the_client_learned_about_graph() -> None:
    """One copy per tenant, kept; the delete form and Graph's clock are Graph's, learned once."""
    import httpx as _httpx

    from shared.graph import GraphClient

    client = GraphClient(_httpx.AsyncClient(), object(), root="https://graph.example/v1.0", scope="s")  # type: ignore[arg-type]
    a = client.for_tenant("t1")
    assert client.for_tenant("t1") is a
    assert client.for_tenant(None) is client
    a._remember_delete_form("plain", None)
    assert client._delete_form == client.for_tenant("t2")._delete_form == "plain"


async def test_aclose_closes_the_connections_and_the_credential_shared_by_every_copy() -> None:
    class ClosingCredential(StaticCredential):
        closed = 0

        async def close(self) -> None:
            self.closed += 1

    credential = ClosingCredential()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(204)))
    graph = GraphClient(http, credential, root="https://graph.example/v1.0", scope="s/.default")
    assert graph.for_tenant("other")._http is http  # copies share them: one close serves all
    await graph.aclose()
    assert http.is_closed
    assert credential.closed == 1
