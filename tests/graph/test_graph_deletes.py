"""Deletes against the emulator under each delete form it may accept (issue 8, point 1).

The docs show only ``…/$ref`` (learningprovider-delete-learningcontents.md); the official SDK sends the
form without it. The client sends the documented form first, falls back once Graph refuses the form
itself, and never reports "already absent" on a 404 until a GET by the same key agrees.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.graph import GraphClient, GraphPermanentError
from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.graph.conftest import GraphSide, worker_credential
from tests.webhooks import content

DELETE_FORMS = ["documented", "sdk", "both"]


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture
async def client(graph_side: GraphSide) -> AsyncIterator[GraphClient]:
    credential = worker_credential(graph_side)
    async with httpx.AsyncClient(timeout=5) as http:
        yield GraphClient(
            http,
            credential,
            root=f"{graph_side.url}/v1.0",
            scope="https://graph.microsoft.com/.default",
            sleep=no_sleep,
        )
    await credential.close()


def use_delete_forms(graph_side: GraphSide, forms: str) -> None:
    """The setting lasts until the next reset (each test's ``graph_side`` resets the emulator)."""
    response = graph_side.admin("PATCH", "/settings", json={"deleteForms": forms})
    assert response.status_code == 200, response.text
    assert response.json()["deleteForms"] == forms


def graph_log(graph_side: GraphSide) -> list[tuple[str, str, int | None]]:
    """(method, path without the provider prefix, status) of every Graph request since the last clear."""
    prefix = f"/v1.0/employeeExperience/learningProviders/{graph_side.registration_id}/learningContents"
    entries = graph_side.admin("GET", "/requests").json()["value"]
    return [(e["method"], e["path"].replace(prefix, "…"), e["status"]) for e in entries]


@pytest.mark.parametrize("forms", DELETE_FORMS)
async def test_delete_by_external_id_sends_the_documented_form_first(
    client: GraphClient, graph_side: GraphSide, forms: str
) -> None:
    use_delete_forms(graph_side, forms)
    reg = graph_side.registration_id
    await client.upsert_content(reg, content("d-1"))
    graph_side.admin("DELETE", "/requests")

    assert await client.delete_content(reg, "d-1") is True
    assert graph_side.get_content("d-1").status_code == 404
    expected = [("DELETE", "…(externalId='d-1')/$ref", 204)]
    if forms == "sdk":
        expected = [("DELETE", "…(externalId='d-1')/$ref", 400), ("DELETE", "…(externalId='d-1')", 204)]
    assert graph_log(graph_side)[: len(expected)] == expected


@pytest.mark.parametrize("forms", DELETE_FORMS)
async def test_delete_by_id_sends_the_documented_form_first(
    client: GraphClient, graph_side: GraphSide, forms: str
) -> None:
    use_delete_forms(graph_side, forms)
    reg = graph_side.registration_id
    content_id = (await client.upsert_content(reg, content("d-2")))["id"]
    graph_side.admin("DELETE", "/requests")

    assert await client.delete_content_by_id(reg, content_id) is True
    assert graph_side.get_content("d-2").status_code == 404
    first = graph_log(graph_side)[0]
    assert first[:2] == ("DELETE", f"…/{content_id}/$ref")
    assert first[2] == (400 if forms == "sdk" else 204)


@pytest.mark.parametrize("forms", DELETE_FORMS)
async def test_the_honoured_form_is_remembered_and_logged_once(
    client: GraphClient, graph_side: GraphSide, forms: str, caplog: pytest.LogCaptureFixture
) -> None:
    use_delete_forms(graph_side, forms)
    reg = graph_side.registration_id
    for external_id in ("r-1", "r-2", "r-3"):
        await client.upsert_content(reg, content(external_id))
    caplog.set_level(logging.INFO, logger="shared.graph")
    assert await client.delete_content(reg, "r-1") is True
    graph_side.admin("DELETE", "/requests")

    assert await client.delete_content(reg, "r-2") is True
    assert await client.delete_content(reg, "r-3") is True
    suffix = "" if forms == "sdk" else "/$ref"
    assert graph_log(graph_side) == [
        ("DELETE", f"…(externalId='r-2'){suffix}", 204),
        ("DELETE", f"…(externalId='r-3'){suffix}", 204),
    ]
    fallbacks = [r for r in caplog.records if "delete form" in r.getMessage()]
    assert len(fallbacks) == (1 if forms == "sdk" else 0)


@pytest.mark.parametrize("forms", DELETE_FORMS)
async def test_absent_is_reported_only_after_a_get_confirms_it(
    client: GraphClient, graph_side: GraphSide, forms: str
) -> None:
    use_delete_forms(graph_side, forms)
    reg = graph_side.registration_id
    graph_side.admin("DELETE", "/requests")

    assert await client.delete_content(reg, "never-there") is False
    log = graph_log(graph_side)
    assert log[-1] == ("GET", "…(externalId='never-there')", 404)
    assert [entry[0] for entry in log[:-1]] == ["DELETE"] * (2 if forms == "sdk" else 1)


@pytest.mark.parametrize("forms", DELETE_FORMS)
async def test_a_404_while_the_item_still_exists_is_permanent(
    client: GraphClient, graph_side: GraphSide, forms: str
) -> None:
    use_delete_forms(graph_side, forms)
    reg = graph_side.registration_id
    await client.upsert_content(reg, content("still-here"))
    # Whatever answers 404 for the delete (a form the service does not route, a proxy), the item stays.
    graph_side.script_faults([{"status": 404, "match": {"methods": ["DELETE"]}}] * 2)

    with pytest.raises(GraphPermanentError) as info:
        await client.delete_content(reg, "still-here")
    assert info.value.status == 404
    assert "still exists" in info.value.message
    assert graph_side.get_content("still-here").status_code == 200


async def test_unknown_registration_is_permanent_not_a_form_refusal(client: GraphClient) -> None:
    # The 400 names the registration, not the form: the other form is tried once, nothing is remembered.
    with pytest.raises(GraphPermanentError) as info:
        await client.delete_content("00000000-0000-0000-0000-000000000000", "x")
    assert info.value.status == 400
    assert "registrationId" in info.value.message


async def test_worker_delete_reaches_the_emulator_first_as_the_documented_ref_form(
    graph_side: GraphSide, settings: Settings
) -> None:
    """The signed delete of ``a/b c'd%e`` in the dev stack: the first request on the wire."""
    reg = graph_side.registration_id
    queue = StorageCommandQueue.from_settings(settings)
    queue.ensure_queues()
    credential = worker_credential(graph_side)
    async with httpx.AsyncClient(timeout=5) as http:
        graph = GraphClient(
            http,
            credential,
            root=f"{graph_side.url}/v1.0",
            scope="https://graph.microsoft.com/.default",
            sleep=no_sleep,
        )
        await graph.upsert_content(reg, content("a/b c'd%e"))
        graph_side.admin("DELETE", "/requests")
        body = ContentCommand(
            op="delete",
            registrationId=reg,
            externalId="a/b c'd%e",
            source="demo",
            sourceEventId="evt-del",
            eventTime=datetime(2026, 12, 1, tzinfo=UTC),
            correlationId="corr-del",
        ).to_json()
        ports = WorkerPorts(graph=graph, queue=queue, ledger=Ledger.from_settings(settings))
        outcome = await process(body.encode(), MessageInfo("m-del", 1), ports)
    await credential.close()

    first: dict[str, Any] = graph_side.admin("GET", "/requests").json()["value"][0]
    assert first["method"] == "DELETE"
    assert first["path"] == (
        f"/v1.0/employeeExperience/learningProviders/{reg}/learningContents(externalId='a%252Fb%2520c''d%2525e')/$ref"
    )
    assert first["status"] == 204
    assert outcome is Outcome.DELETED
    assert graph_side.get_content("a/b c'd%e").status_code == 404
