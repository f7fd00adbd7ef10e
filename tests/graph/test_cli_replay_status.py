"""``vlsync replay poison`` and ``vlsync status`` in-process against Azurite, and the worker applying
what was replayed against the emulator: the newest state wins, an older replayed state is skipped."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import httpx
from azure.storage.queue import QueueClient

from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.conftest import TENANT_ID
from tests.graph.conftest import CliSide, make_graph
from tests.queues import peek_json
from tests.webhooks import content


def app_settings(cli_side: CliSide) -> Settings:
    env = cli_side.env
    return Settings(
        storage_connection_string=env["LearningSyncStorage"],
        content_queue_name=env["CONTENT_QUEUE_NAME"],
        ledger_table_name=env["LEDGER_TABLE_NAME"],
        registration_state_cache_seconds=0,
        tenant_id=TENANT_ID,
    )


def command(cli_side: CliSide, external_id: str, title: str, hour: int, source: str = "lms-a") -> str:
    return ContentCommand.model_validate(
        {
            "op": "upsert",
            "registrationId": cli_side.registration_id,
            "externalId": external_id,
            "content": content(external_id, title=title),
            "source": source,
            "sourceEventId": f"evt-{title}",
            "eventTime": datetime(2026, 11, 27, hour, tzinfo=UTC),
            "correlationId": f"corr-{title}",
            "lastError": {"kind": "transient", "status": 503, "message": "outage", "at": datetime.now(UTC)},
        }
    ).to_json()


def take_work(settings: Settings) -> list[bytes]:
    """Receive (and delete) every message of the work queue, as the worker would get them."""
    client = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.content_queue_name)
    bodies = []
    for message in client.receive_messages(messages_per_page=32, max_messages=32):
        bodies.append(base64.b64decode(message.content))
        client.delete_message(message)
    return bodies


async def test_dry_run_then_replay_then_the_worker_applies_only_the_newest(
    cli_side: CliSide, http: httpx.AsyncClient
) -> None:
    settings = app_settings(cli_side)
    queue = StorageCommandQueue.from_settings(settings)
    queue.ensure_queues()
    queue.park(command(cli_side, "r-1", "Parked in the outage", 10))
    queue.park(command(cli_side, "r-2", "Other source", 10, source="lms-b"))
    queue.park("not json")

    # vlsync runs its own event loop (asyncio.run), so it runs on a thread beside this test's loop.
    dry = await asyncio.to_thread(cli_side.run, "replay", "poison", "--source", "lms-a", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert dry.stderr.splitlines()[0].startswith("target: Graph not called")
    assert "would replay 1, skipped 1 (filter), unreplayable 1" in dry.stdout
    assert "(dry run: nothing moved)" in dry.stdout
    assert "r-1" in dry.stdout  # the list of what it would move
    assert "unreplayable" in dry.stderr
    assert take_work(settings) == []

    done = await asyncio.to_thread(cli_side.json, "replay", "poison", "--source", "lms-a")
    assert done["counts"] == {"replayed": 1, "skipped": 1, "unreplayable": 1}
    assert done["dryRun"] is False
    assert done["target"] == {
        "graph": "not called (the function app's worker pushes)",
        "tenant": "any",
        "registrationId": "any",
        "storage": "devstoreaccount1",
    }
    assert [item["externalId"] for item in done["replayed"]] == ["r-1"]
    again = await asyncio.to_thread(cli_side.json, "replay", "poison", "--source", "lms-a")
    assert again["counts"] == {"replayed": 0, "skipped": 1, "unreplayable": 1}

    [body] = take_work(settings)
    ports = WorkerPorts(graph=make_graph(cli_side.graph, http), queue=queue, ledger=Ledger.from_settings(settings))
    assert await process(body, MessageInfo("replayed-1", 1), ports) is Outcome.UPSERTED
    assert cli_side.graph.get_content("r-1").json()["title"] == "Parked in the outage"

    # A newer event wins; an older one parked meanwhile and replayed is skipped by the ledger.
    newer = command(cli_side, "r-1", "Newest", 12).encode()
    assert await process(newer, MessageInfo("newer", 1), ports) is Outcome.UPSERTED
    queue.park(command(cli_side, "r-1", "Stale", 11))
    replayed = await asyncio.to_thread(cli_side.json, "replay", "poison", "--external-id", "r-1")
    assert replayed["counts"]["replayed"] == 1
    [stale] = take_work(settings)
    assert await process(stale, MessageInfo("stale", 1), ports) is Outcome.SKIPPED_STALE
    assert cli_side.graph.get_content("r-1").json()["title"] == "Newest"


def test_usage_errors_move_nothing(cli_side: CliSide) -> None:
    settings = app_settings(cli_side)
    StorageCommandQueue.from_settings(settings).park(command(cli_side, "u-1", "Parked", 10))
    for args in (
        ["--since", "yesterday"],
        ["--since", "2026-11-27T10:00:00"],  # no offset
        ["--since", "2026-11-27T11:00:00Z", "--until", "2026-11-27T10:00:00Z"],
        ["--time-field", "received"],
        ["--limit", "0"],
    ):
        result = cli_side.run("replay", "poison", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
    assert len(peek_json(settings.storage_connection_string or "", settings.poison_queue_name)) == 1


def test_status_reports_queues_sources_and_the_circuit(cli_side: CliSide) -> None:
    settings = app_settings(cli_side)
    queue = StorageCommandQueue.from_settings(settings)
    queue.park(command(cli_side, "s-1", "Parked", 10))
    report = cli_side.json("status")
    assert report["status"] == "degraded"
    assert report["queues"]["poison"]["approximateCount"] == 1
    assert report["queues"]["poison"]["name"] == settings.poison_queue_name
    assert [s["source"] for s in report["sources"]] == ["lms-a"]
    assert report["sources"][0]["lastFailureKind"] == "transient"
    assert report["circuit"] == "closed"

    human = cli_side.run("status")
    assert human.exit_code == 0, human.stderr
    assert "status: degraded" in human.stdout
    assert f"1 parked command(s) in {settings.poison_queue_name}" in human.stdout
    assert "circuit: closed" in human.stdout

    assert cli_side.json("replay", "poison")["counts"]["replayed"] == 1
    take_work(settings)
    assert cli_side.json("status")["status"] == "up"


def test_status_without_storage_is_a_usage_error(cli_side: CliSide) -> None:
    from tests.vlsync_runner import make_runner

    env = {k: v for k, v in cli_side.env.items() if k != "LearningSyncStorage"}
    result = make_runner(env)("status")
    assert result.exit_code == 2
    assert "no storage" in result.stderr
