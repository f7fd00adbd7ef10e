"""The reconcile timer's work (``shared.scheduled_reconcile``) against the Graph emulator and Azurite:
off until ``RECONCILE_CATALOGS`` names a catalog; then each source's NDJSON blob is streamed and its
registration made equal to it, with the worker's own Graph client and ledger."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from shared import scheduled_reconcile
from shared.ledger import Ledger, LedgerEntry
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


def shared_settings(settings: Settings, registration_id: str, catalogs: dict[str, Any]) -> Settings:
    """Two sources in one registration: "moodle" owns the ids starting "moodle-", "lms" has no prefix."""
    sources = {
        "moodle": {
            "kind": "moodle",
            "registrationId": registration_id,
            "secretSetting": "TEST_WEBHOOK_SECRET",
            "externalIdPrefix": "moodle-",
        },
        "lms": {"kind": "cloudevents", "registrationId": registration_id, "secretSetting": "TEST_WEBHOOK_SECRET"},
    }
    return settings.model_copy(
        update={"sources_json": json.dumps(sources), "reconcile_catalogs_json": json.dumps(catalogs)}
    )


def upload(blobs: BlobServiceClient, ids: list[str], exported_at: datetime | None = None) -> str:
    container = f"catalogs{uuid.uuid4().hex[:8]}"
    blobs.create_container(container)
    metadata = {"exportedAt": exported_at.isoformat()} if exported_at else None
    lines = "".join(content_line(i) + "\n" for i in ids)
    blobs.get_blob_client(container, "export.ndjson").upload_blob(lines.encode("utf-8"), metadata=metadata)
    return f"{container}/export.ndjson"


async def test_a_source_reconciles_only_its_prefix_of_a_shared_registration(
    graph_side: GraphSide, http: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    registration_id = graph_side.registration_id
    for external_id in ("moodle-1", "moodle-old", "other-1"):
        await graph.upsert_content(registration_id, json.loads(content_line(external_id)))
    blobs = blob_service(settings)
    configured = shared_settings(settings, registration_id, {"moodle": upload(blobs, ["moodle-1", "moodle-2"])})

    [run] = await scheduled_reconcile.run(configured, graph, ledger, blobs)

    assert (run.view()["create"], run.view()["remove"], run.view()["outsidePrefix"]) == (1, 1, 1)
    assert graph_side.get_content("moodle-old").json()["isActive"] is False
    assert graph_side.get_content("other-1").json()["isActive"] is True  # the other source's: untouched
    assert graph_side.get_content("moodle-2").status_code == 200


async def test_a_source_without_a_prefix_in_a_shared_registration_removes_nothing(
    graph_side: GraphSide, http: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    graph = make_graph(graph_side, http)
    registration_id = graph_side.registration_id
    for external_id in ("moodle-1", "other-1"):
        await graph.upsert_content(registration_id, json.loads(content_line(external_id)))
    blobs = blob_service(settings)
    configured = shared_settings(settings, registration_id, {"lms": upload(blobs, ["other-1", "other-2"])})

    with pytest.raises(scheduled_reconcile.ReconcileFailed, match="lms"):
        await scheduled_reconcile.run(configured, graph, ledger, blobs)

    assert graph_side.get_content("moodle-1").json()["isActive"] is True  # not this source's to remove
    assert graph_side.get_content("other-2").status_code == 200  # creates and updates still go


async def test_the_export_time_orders_the_catalog_before_later_webhook_events(
    graph_side: GraphSide, http: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    """An item a webhook created after the export (but before the upload) is not in the export: it is
    kept, since the export's time (``exportedAt``), not the upload's, orders the removal."""
    graph = make_graph(graph_side, http)
    registration_id = graph_side.registration_id
    exported_at = datetime.now(UTC) - timedelta(hours=1)
    await graph.upsert_content(registration_id, json.loads(content_line("moodle-new")))
    webhook = LedgerEntry(
        registration_id, "moodle-new", "upsert", exported_at + timedelta(minutes=10), exported_at, "worker"
    )
    assert ledger.record(webhook)
    blobs = blob_service(settings)
    configured = shared_settings(settings, registration_id, {"moodle": upload(blobs, ["moodle-1"], exported_at)})

    [run] = await scheduled_reconcile.run(configured, graph, ledger, blobs)

    assert run.as_of == exported_at
    assert run.view()["remove"] == 1
    assert run.tally.stale == 1  # the webhook's event is newer than the export: the removal loses
    assert graph_side.get_content("moodle-new").json()["isActive"] is True
    assert ledger.last_push(registration_id, "moodle-new") == webhook
