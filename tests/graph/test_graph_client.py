"""The Graph client against the Graph emulator, with tokens from the real aio ManagedIdentityCredential."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken

from shared.graph import GraphClient, GraphPermanentError, GraphTransientError
from tests.graph.conftest import GraphSide, worker_credential
from tests.webhooks import content


class Sleeps:
    """Records the waits instead of sleeping them, so retry tests are fast and exact."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def client(graph_side: GraphSide, sleeps: Sleeps) -> AsyncIterator[GraphClient]:
    credential = worker_credential(graph_side)
    async with httpx.AsyncClient(timeout=5) as http:
        yield GraphClient(
            http,
            credential,
            root=f"{graph_side.url}/v1.0",
            scope="https://graph.microsoft.com/.default",
            max_inline_retry_seconds=10,
            sleep=sleeps,
        )
    await credential.close()


def emulator_log(graph_side: GraphSide) -> list[dict[str, Any]]:
    body = graph_side.admin("GET", "/requests").json()
    return list(body.get("value", body) if isinstance(body, dict) else body)


async def test_upsert_creates_then_replaces(client: GraphClient, graph_side: GraphSide) -> None:
    created = await client.upsert_content(graph_side.registration_id, content("c-1", description="first"))
    assert created["externalId"] == "c-1"
    await client.upsert_content(graph_side.registration_id, content("c-1", title="Renamed"))
    stored = graph_side.get_content("c-1").json()
    assert stored["title"] == "Renamed"
    assert stored.get("description") is None  # replace, not merge


@pytest.mark.parametrize("external_id", ["O'Brien", "a/b/c", "c++ & #1", "100%", "with space", "Ünïcødé-курс", "''"])
async def test_hostile_external_ids_round_trip(client: GraphClient, graph_side: GraphSide, external_id: str) -> None:
    await client.upsert_content(graph_side.registration_id, content(external_id))
    got = await client.get_content(graph_side.registration_id, external_id)
    assert got["externalId"] == external_id
    assert await client.delete_content(graph_side.registration_id, external_id) is True
    assert graph_side.get_content(external_id).status_code == 404


async def test_delete_of_absent_content_is_not_an_error(client: GraphClient, graph_side: GraphSide) -> None:
    assert await client.delete_content(graph_side.registration_id, "never-existed") is False


async def test_429_with_retry_after_is_honoured_then_succeeds(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps
) -> None:
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 3}])
    await client.upsert_content(graph_side.registration_id, content("c-429"))
    assert sleeps.calls == [3.0]
    assert graph_side.get_content("c-429").status_code == 200


async def test_503_then_dropped_connection_then_success(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps
) -> None:
    graph_side.script_faults([{"status": 503}, {"drop": True}])
    await client.upsert_content(graph_side.registration_id, content("c-flaky"))
    assert len(sleeps.calls) == 2
    assert graph_side.get_content("c-flaky").status_code == 200


async def test_retry_after_beyond_budget_is_raised_as_transient(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps
) -> None:
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 60}])
    with pytest.raises(GraphTransientError) as info:
        await client.upsert_content(graph_side.registration_id, content("c-slow"))
    assert info.value.status == 429
    assert info.value.retry_after == 60
    assert sleeps.calls == []


async def test_validation_error_is_permanent_with_graph_code(client: GraphClient, graph_side: GraphSide) -> None:
    with pytest.raises(GraphPermanentError) as info:
        await client.upsert_content(graph_side.registration_id, {**content("c-bad"), "level": "expert"})
    assert info.value.status == 400
    assert info.value.code
    assert info.value.request_id


async def test_unknown_registration_is_permanent(client: GraphClient) -> None:
    with pytest.raises(GraphPermanentError):
        await client.upsert_content("00000000-0000-0000-0000-000000000000", content("c-x"))


async def test_token_endpoint_failure_is_transient(
    client: GraphClient, graph_side: GraphSide, identity_server: Any, sleeps: Sleeps
) -> None:
    # A refusal (not a 5xx, which azure-core retries with real back-off) on every attempt.
    identity_server.inject_faults([{"status": 400}] * 10)
    with pytest.raises(GraphTransientError) as info:
        await client.upsert_content(graph_side.registration_id, content("c-token"))
    assert info.value.code == "TokenUnavailable"
    assert sleeps.calls == [1.0, 2.0, 4.0]  # then 8 s would pass the 10 s budget
    identity_server.clear_faults()


async def test_correlation_id_is_sent_as_client_request_id(client: GraphClient, graph_side: GraphSide) -> None:
    await client.upsert_content(graph_side.registration_id, content("c-corr"), correlation_id="corr-77")
    response = graph_side.get_content("c-corr")
    assert response.status_code == 200
    log = emulator_log(graph_side)
    assert any("corr-77" in str(entry) for entry in log)


async def test_list_follows_next_links(client: GraphClient, graph_side: GraphSide) -> None:
    for i in range(120):
        await client.upsert_content(graph_side.registration_id, content(f"p-{i:03}"))
    items = [item async for item in client.list_contents(graph_side.registration_id)]
    assert sorted(i["externalId"] for i in items) == [f"p-{i:03}" for i in range(120)]


def test_beta_version_is_served_too(graph_side: GraphSide) -> None:
    assert graph_side.get_content("nothing", version="beta").status_code == 404


async def test_retry_after_zero_does_not_hot_loop(client: GraphClient, graph_side: GraphSide, sleeps: Sleeps) -> None:
    graph_side.script_faults([{"status": 429, "retryAfterSeconds": 0}] * 50)
    graph_side.admin("DELETE", "/requests")
    with pytest.raises(GraphTransientError):
        await client.upsert_content(graph_side.registration_id, content("c-zero"))
    assert sleeps.calls == [1.0, 2.0, 4.0]  # back-off floor; the next wait would pass the budget
    assert len(emulator_log(graph_side)) == 4


# -- issue 8: results that do not depend on Graph's reading, retries that never duplicate ----------


@pytest.mark.parametrize("semantics", ["merge", "replace"])
async def test_a_removed_description_disappears_under_merge_and_replace(
    client: GraphClient, graph_side: GraphSide, semantics: str
) -> None:
    response = graph_side.admin("PATCH", "/settings", json={"patchSemantics": semantics})
    assert response.status_code == 200, response.text
    reg = graph_side.registration_id
    await client.upsert_content(reg, content("clear-1", description="first", skillTags=["a"], isActive=False))
    await client.upsert_content(reg, content("clear-1"))
    stored = graph_side.get_content("clear-1").json()
    assert stored["description"] is None
    assert stored["skillTags"] == []
    assert stored["isActive"] is True  # the documented default, as a fresh create would have it


@pytest.mark.parametrize("status", [429, 503])
async def test_a_retry_hint_only_in_the_body_is_honoured(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps, status: int
) -> None:
    graph_side.script_faults([{"status": status, "retryAfterMinutesInBody": 2}])
    with pytest.raises(GraphTransientError) as info:
        await client.upsert_content(graph_side.registration_id, content("c-hint"))
    assert info.value.status == status
    assert info.value.retry_after == 120  # "Retry after 2 minutes", no Retry-After header
    assert sleeps.calls == []  # beyond the 10 s budget: raised for the queue to carry the wait
    assert "Retry after 2 minutes" in info.value.message


async def test_a_post_that_got_a_5xx_is_not_retried(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps, identity_server: Any
) -> None:
    delegated = DelegatedCredential(identity_server)
    async with httpx.AsyncClient(timeout=5) as http:
        provider_client = GraphClient(
            http, delegated, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default", sleep=sleeps
        )
        graph_side.script_faults([{"status": 503, "match": {"methods": ["POST"]}}])
        graph_side.admin("DELETE", "/requests")
        with pytest.raises(GraphTransientError) as info:
            await provider_client.create_provider(PROVIDER)
    assert info.value.may_have_applied is True
    assert sleeps.calls == []
    assert [e["method"] for e in emulator_log(graph_side)] == ["POST"]


async def test_a_post_that_timed_out_reading_is_not_retried(
    graph_side: GraphSide, sleeps: Sleeps, identity_server: Any
) -> None:
    delegated = DelegatedCredential(identity_server)
    async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=0.2)) as http:
        provider_client = GraphClient(
            http, delegated, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default", sleep=sleeps
        )
        graph_side.script_faults([{"latencyMs": 1500, "match": {"methods": ["POST"]}}])
        with pytest.raises(GraphTransientError) as info:
            await provider_client.create_provider(PROVIDER)
        assert info.value.may_have_applied is True
        assert sleeps.calls == []
        # It did apply: the emulator finishes a request that arrived, as Graph would.
        assert await until_listed(provider_client, PROVIDER["displayName"])


async def until_listed(client: GraphClient, display_name: str) -> bool:
    """Wait (bounded, no timing asserted) for the slow create to finish on the emulator's side."""
    for _ in range(100):
        if any([p async for p in client.list_providers() if p["displayName"] == display_name]):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_post_that_was_throttled_is_retried(
    graph_side: GraphSide, sleeps: Sleeps, identity_server: Any
) -> None:
    delegated = DelegatedCredential(identity_server)
    async with httpx.AsyncClient(timeout=5) as http:
        provider_client = GraphClient(
            http, delegated, root=f"{graph_side.url}/v1.0", scope="https://graph.microsoft.com/.default", sleep=sleeps
        )
        graph_side.script_faults([{"status": 429, "retryAfterSeconds": 2, "match": {"methods": ["POST"]}}])
        created = await provider_client.create_provider(PROVIDER)
    assert created["displayName"] == PROVIDER["displayName"]
    assert sleeps.calls == [2.0]
    assert GraphTransientError(None, "x", "y").may_have_applied is False


async def test_a_401_gets_one_fresh_token_then_succeeds(
    client: GraphClient, graph_side: GraphSide, identity_server: Any, sleeps: Sleeps
) -> None:
    await client.upsert_content(graph_side.registration_id, content("c-401"))  # the token is now cached
    identity_server.clear_requests()
    graph_side.script_faults([{"status": 401}])
    await client.upsert_content(graph_side.registration_id, content("c-401", title="again"))
    # The app token's cache was bypassed exactly once (one exchange at the Entra route); the managed
    # identity's assertion in its own cache was still good, so the identity endpoint was not asked.
    assert len(identity_server.requests(identity_server.entra_token_path)) == 1
    assert identity_server.requests() == []
    assert sleeps.calls == []
    assert graph_side.get_content("c-401").json()["title"] == "again"


async def test_a_401_after_a_fresh_token_names_the_missing_permission(
    client: GraphClient, graph_side: GraphSide, sleeps: Sleeps
) -> None:
    graph_side.script_faults([{"status": 401}] * 5)
    graph_side.admin("DELETE", "/requests")
    with pytest.raises(GraphPermanentError) as info:
        await client.upsert_content(graph_side.registration_id, content("c-401-twice"))
    assert info.value.status == 401
    assert "LearningContent.ReadWrite.All" in info.value.message
    assert len(emulator_log(graph_side)) == 2
    assert sleeps.calls == []


async def test_last_server_date_follows_graph_clock(client: GraphClient, graph_side: GraphSide) -> None:
    assert client.last_server_date is None
    response = await client.call(
        "GET", f"/employeeExperience/learningProviders/{graph_side.registration_id}/learningContents"
    )
    assert client.last_server_date == email.utils.parsedate_to_datetime(response.headers["Date"])
    assert client.last_server_date is not None
    assert client.last_server_date.tzinfo is not None


PROVIDER: dict[str, Any] = {
    "displayName": "Retry-safe academy",
    "squareLogoWebUrlForDarkTheme": "https://lms.example/a.png",
    "longLogoWebUrlForDarkTheme": "https://lms.example/b.png",
    "squareLogoWebUrlForLightTheme": "https://lms.example/c.png",
    "longLogoWebUrlForLightTheme": "https://lms.example/d.png",
}


class DelegatedCredential:
    """A delegated token from the identity endpoint's ``/dev/token`` (providers take no app tokens)."""

    def __init__(self, identity_server: Any) -> None:
        self._identity = identity_server

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        body = self._identity.dev_token(scopes=["LearningProvider.ReadWrite"])
        return AccessToken(body["access_token"], int(time.time()) + 3600)
