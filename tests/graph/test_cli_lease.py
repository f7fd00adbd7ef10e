"""``vlsync`` writes take the worker's lease protocol (issue 9, points 2 and 6): the same deadline and
lease rule, leases judged on Graph's clock, and a push that finds a newer event recorded after it is a
failure, not a success. In-process against the emulator, the identity endpoint and Azurite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared import ledger as ledger_module
from shared.graph import Deadline, GraphClient
from shared.ledger import Ledger, LedgerEntry, content_row_key, partition_key, table_service
from shared.settings import Settings
from tests.graph.conftest import GraphSide, make_graph
from tests.webhooks import content
from vlsync import operations


def lease_row(settings: Settings, registration_id: str, external_id: str) -> dict[str, Any]:
    table = table_service(settings).get_table_client(settings.ledger_table_name)
    return dict(table.get_entity(partition_key(settings.home_tenant(), registration_id), content_row_key(external_id)))


def skew_this_machine(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """This process's clock runs ``by`` off, for the CLI's code and the ledger's alike."""

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + by

    monkeypatch.setattr(operations, "datetime", Skewed)
    monkeypatch.setattr(ledger_module, "datetime", Skewed)


async def test_a_clock_ahead_does_not_see_a_workers_lease_end_early(
    graph_side: GraphSide, http: httpx.AsyncClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = graph_side.registration_id
    # A worker (on a right clock) pushes the item for another 30 s.
    assert ledger.claim(reg, "skew-1", datetime.now(UTC) - timedelta(hours=1), "worker/m-1", lease_seconds=30)
    # This machine runs 45 s ahead: within what vlsync tolerates, so its event times are corrected to
    # Graph's clock. Judged on its own clock, the worker's lease would look over already.
    skew_this_machine(monkeypatch, timedelta(seconds=45))
    monkeypatch.setattr(operations, "BUSY_ATTEMPTS", 1)

    outcome = await operations.upsert_all(
        make_graph(graph_side, http), reg, [content("skew-1")], concurrency=1, ledger=ledger
    )

    assert outcome.done == []
    assert outcome.failed[0]["code"] == "ItemBusy"
    assert graph_side.get_content("skew-1").status_code == 404


async def test_a_cli_push_has_a_deadline_its_lease_outlasts(
    graph_side: GraphSide, http: httpx.AsyncClient, ledger: Ledger, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = graph_side.registration_id
    graph = make_graph(graph_side, http)
    seen: list[tuple[Deadline | None, dict[str, Any]]] = []
    upsert = graph.upsert_content

    async def watched(registration_id: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        seen.append((kwargs.get("deadline"), lease_row(settings, reg, "dl-1")))
        return await upsert(registration_id, body, **kwargs)

    monkeypatch.setattr(graph, "upsert_content", watched)
    outcome = await operations.upsert_all(graph, reg, [content("dl-1")], concurrency=1, ledger=ledger)

    assert [d["externalId"] for d in outcome.done] == ["dl-1"]
    [(deadline, row)] = seen
    assert deadline is not None
    timing = operations.push_timing_of(graph)
    assert timing.deadline_seconds - 10 < deadline.remaining() <= timing.deadline_seconds
    lease_left = (row["leaseUntil"] - datetime.now(UTC)).total_seconds()
    assert lease_left - deadline.remaining() >= timing.margin_seconds - 1  # a Table round trip apart
    assert lease_row(settings, reg, "dl-1")["leaseOwner"] == ""  # recorded: the lease is over


async def test_a_cli_push_that_finds_a_newer_event_recorded_is_a_failure(
    graph_side: GraphSide, http: httpx.AsyncClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = graph_side.registration_id
    graph: GraphClient = make_graph(graph_side, http)
    upsert = graph.upsert_content
    newer = LedgerEntry(reg, "lost-1", "delete", datetime.now(UTC) + timedelta(minutes=5), datetime.now(UTC), "worker")

    async def newer_event_meanwhile(registration_id: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ledger.record(newer)  # a worker's newer event, recorded while this push is under way
        return await upsert(registration_id, body, **kwargs)

    monkeypatch.setattr(graph, "upsert_content", newer_event_meanwhile)
    outcome = await operations.upsert_all(graph, reg, [content("lost-1")], concurrency=1, ledger=ledger)

    # Before, the CLI reported it upserted while Graph held its older state over the worker's delete.
    assert outcome.done == []
    assert outcome.failed[0]["code"] == "LeaseLost"
    assert [m["externalId"] for m in ledger.needs_repair(reg)] == ["lost-1"]
