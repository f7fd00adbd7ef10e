"""The reconcile timer's work (``shared.scheduled_reconcile``) against the Graph emulator and Azurite:
off until ``RECONCILE_CATALOGS`` names a catalog; then each source's NDJSON blob is streamed and its
registration made equal to it, with the worker's own Graph client and ledger."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from shared import scheduled_reconcile
from shared.ledger import Ledger
from shared.settings import Settings, SettingsError
from tests.graph.conftest import GraphSide, make_graph
from tests.vlsync_runner import content_line


def timer_settings(settings: Settings, registration_id: str, catalogs: dict[str, Any]) -> Settings:
    sources = {
        "lms": {"kind": "cloudevents", "registrationId": registration_id, "secretSetting": "TEST_WEBHOOK_SECRET"}
    }
    return settings.model_copy(
        update={
            "sources_json": json.dumps(sources),
            "reconcile_catalogs_json": json.dumps(catalogs) if catalogs else "",
        }
    )


def blob_service(settings: Settings) -> BlobServiceClient:
    assert settings.storage_connection_string is not None
    return BlobServiceClient.from_connection_string(settings.storage_connection_string)


async def test_the_timer_is_off_until_a_catalog_is_named(
    graph_side: GraphSide, http: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    (await http.delete(f"{graph_side.url}/_emulator/requests")).raise_for_status()
    off = timer_settings(settings, graph_side.registration_id, {})
    assert await scheduled_reconcile.run(off, make_graph(graph_side, http), ledger, blob_service(settings)) == []
    assert (await http.get(f"{graph_side.url}/_emulator/requests")).json()["value"] == []


async def test_the_timer_makes_each_registration_equal_its_catalog_blob(
    graph_side: GraphSide, http: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    registration_id = graph_side.registration_id
    for stale in ("old-1", "old-2"):  # in Graph, no longer in the LMS's catalog
        await graph.upsert_content(registration_id, json.loads(content_line(stale)))
    container = f"catalogs{uuid.uuid4().hex[:8]}"
    blobs = blob_service(settings)
    blobs.create_container(container)
    lines = [content_line(f"cat-{n}", title=f"Ünïcode {n}") for n in range(30)]
    blobs.get_blob_client(container, "lms.ndjson").upload_blob(("\n".join(lines) + "\n").encode("utf-8"))
    configured = timer_settings(settings, registration_id, {"lms": {"blob": f"{container}/lms.ndjson"}})

    runs = await scheduled_reconcile.run(configured, graph, ledger, blobs)

    assert [r.view()["create"] for r in runs] == [30]
    assert runs[0].tally.pushed == 32  # 30 created, 2 deactivated
    assert graph_side.get_content("cat-29").json()["title"] == "Ünïcode 29"
    assert graph_side.get_content("old-1").json()["isActive"] is False
    last = ledger.last_push(registration_id, "cat-0")
    assert last is not None
    assert last.pushed_by == "reconcile"
    again = await scheduled_reconcile.run(configured, graph, ledger, blobs)
    assert (again[0].view()["create"], again[0].view()["update"], again[0].view()["remove"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("catalogs", "message"),
    [
        ('{"nope": "c/x.ndjson"}', "not a source"),
        ('{"lms": "x.ndjson"}', "blob"),
        ('{"lms": {"blob": "c1c/x.ndjson", "removal": "purge"}}', "removal"),
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_catalog_setting_says_what_is_wrong(settings: Settings, catalogs: str, message: str) -> None:
    configured = timer_settings(settings, "reg-1", {}).model_copy(update={"reconcile_catalogs_json": catalogs})
    with pytest.raises(SettingsError, match=message):
        _ = configured.reconcile_catalogs
