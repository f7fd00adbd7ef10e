"""``vlsync replay archive`` in-process against Azurite, and the worker applying what it queued against
the emulator: a Graph outage parks a command, the queues are lost, and the replay of the event archive
restores the newest state of every course; a second replay changes nothing (issue 9, point 10)."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from azure.storage.queue import QueueClient

from shared import intake
from shared.archive import EventArchive
from shared.dedupe import TableDeliveryDedupe
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.signatures import sign
from shared.sources import WebhookRequest
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.conftest import SECRET, TENANT_ID
from tests.graph.conftest import CliSide, make_graph
from tests.queues import peek_json
from tests.vlsync_runner import Vlsync, make_runner
from tests.webhooks import content, event, signed

SECRET_SETTING = "REPLAY_ARCHIVE_SECRET"


def sources(registration_id: str, *names: str) -> str:
    return json.dumps(
        {
            name: {"kind": "cloudevents", "registrationId": registration_id, "secretSetting": SECRET_SETTING}
            for name in names
        }
    )


def app_settings(cli_side: CliSide, container: str) -> Settings:
    """The function app's settings as the CLI side names them, with two sources, one since retired."""
    env = cli_side.env
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        storage_connection_string=env["LearningSyncStorage"],
        content_queue_name=env["CONTENT_QUEUE_NAME"],
        ledger_table_name=env["LEDGER_TABLE_NAME"],
        registration_state_cache_seconds=0,
        tenant_id=TENANT_ID,
        sources_json=sources(cli_side.registration_id, "lms-a", "retired"),
        dedupe_table_name=f"deliveries{suffix}",
        event_archive_container=container,
    )


def cli(cli_side: CliSide, container: str) -> Vlsync:
    """vlsync with the app's SOURCES of today (the retired source is gone) and no secret at all."""
    return make_runner(
        {**cli_side.env, "SOURCES": sources(cli_side.registration_id, "lms-a"), "EVENT_ARCHIVE_CONTAINER": container}
    )


def post(
    settings: Settings,
    source: str,
    external_id: str,
    at: datetime,
    *,
    title: str = "",
    op: str = "updated",
    webhook_id: str | None = None,
) -> tuple[WebhookRequest, intake.IntakeResponse]:
    data = content(external_id, title=title) if op != "deleted" else {"externalId": external_id}
    body, headers = signed(
        event(f"com.lms.course.{op}", data, id=f"evt-{external_id}-{title or op}", time=at.isoformat()), SECRET
    )
    if webhook_id is not None:  # a redelivery: the sender's same message
        headers = {**headers, **sign(body, SECRET, webhook_id=webhook_id, timestamp=int(datetime.now(UTC).timestamp()))}
    request = intake.make_request(source, headers, body)
    response = intake.receive(
        request,
        settings,
        lambda: StorageCommandQueue.from_settings(settings),
        dedupe=lambda: TableDeliveryDedupe.from_settings(settings),
        archive=lambda: EventArchive.from_settings(settings),
    )
    assert response.status == 202, response.body
    return request, response


def take_work(settings: Settings) -> list[tuple[str, bytes]]:
    """Receive (and delete) every message of the work queue, oldest first, as the worker gets them."""
    client = QueueClient.from_connection_string(settings.storage_connection_string or "", settings.content_queue_name)
    taken = []
    for message in client.receive_messages(messages_per_page=32, max_messages=32):
        taken.append((message.id, base64.b64decode(message.content)))
        client.delete_message(message)
    return taken


def lose(settings: Settings, queue_name: str) -> None:
    """The queue's messages are gone (a host's poison copy expired, a queue cleared by mistake)."""
    QueueClient.from_connection_string(settings.storage_connection_string or "", queue_name).clear_messages()


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_an_outage_a_lost_queue_and_replay_archive_restore_the_newest_state(
    cli_side: CliSide, http: httpx.AsyncClient, monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv(SECRET_SETTING, SECRET)
    container = f"archive-{uuid.uuid4().hex[:10]}"
    settings = app_settings(cli_side, container)
    queue = StorageCommandQueue.from_settings(settings)
    queue.ensure_queues()
    ports = WorkerPorts(graph=make_graph(cli_side.graph, http), queue=queue, ledger=Ledger.from_settings(settings))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)

    # Deliveries arrive out of order: the newest o-1 first, o-3's delete before its creation.
    first, _ = post(settings, "lms-a", "o-1", base + timedelta(hours=1), title="Newest")
    post(settings, "lms-a", "o-1", base, title="Old")
    post(settings, "lms-a", "o-2", base + timedelta(minutes=30), title="Only")
    post(settings, "lms-a", "o-3", base + timedelta(minutes=50), op="deleted")
    post(settings, "lms-a", "o-3", base + timedelta(minutes=40), title="Gone")
    post(settings, "retired", "o-9", base, title="Retired source")
    _, again = post(
        settings, "lms-a", "o-1", base + timedelta(hours=1), title="Newest", webhook_id=first.headers["webhook-id"]
    )
    assert again.body["duplicate"] is True
    since, until = first.received_at - timedelta(seconds=1), datetime.now(UTC) + timedelta(seconds=1)

    # The worker applies the first command; then Graph goes down and the next one is parked on its
    # last attempt; then both queues are lost with everything still in them.
    work = take_work(settings)
    assert len(work) == 6
    assert await process(work[0][1], MessageInfo(work[0][0], 1), ports) is Outcome.UPSERTED
    cli_side.graph.script_faults([{"status": 503}] * 50)
    assert await process(work[2][1], MessageInfo(work[2][0], 5, max_dequeue_count=5), ports) is Outcome.PARKED
    cli_side.graph.admin("DELETE", "/faults").raise_for_status()
    lose(settings, settings.poison_queue_name)
    assert peek_json(settings.storage_connection_string or "", settings.poison_queue_name) == []
    assert cli_side.graph.get_content("o-2").status_code == 404

    monkeypatch.delenv(SECRET_SETTING)  # the replay trusts the archive: no source's secret is needed
    vlsync = cli(cli_side, container)
    window = ["--since", rfc3339(since), "--until", rfc3339(until)]
    dry = await asyncio.to_thread(vlsync, "replay", "archive", *window, "--dry-run")
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert dry.stderr.splitlines()[0].startswith("target: Graph not called")
    assert (
        "would enqueue 5 command(s) from 5 of 7 archived deliveries; no commands 0, duplicate 1, unknown source 1, "
        "redacted 0, invalid 0" in dry.stdout
    )
    assert "(dry run: nothing enqueued)" in dry.stdout
    assert "o-3" in dry.stdout  # the table of what it would enqueue
    assert "unknownSource retired" in dry.stderr
    assert take_work(settings) == []

    done = await asyncio.to_thread(vlsync, "--json", "replay", "archive", *window)
    assert done.exit_code == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["counts"] == {
        "read": 7,
        "derived": 5,
        "noCommands": 0,
        "duplicate": 1,
        "unknownSource": 1,
        "redacted": 0,
        "invalid": 0,
        "enqueued": 5,
    }
    assert report["target"]["tenant"] == TENANT_ID
    assert [(c["externalId"], c["op"]) for c in report["commands"]] == [
        ("o-1", "upsert"),
        ("o-1", "upsert"),
        ("o-2", "upsert"),
        ("o-3", "delete"),
        ("o-3", "upsert"),
    ]

    # Graph is back: the ledger decides. o-1's newest was applied before (skipped by its event id),
    # o-1's old state is older, o-3's creation is older than its deletion.
    outcomes = [await process(body, MessageInfo(mid, 1), ports) for mid, body in take_work(settings)]
    assert outcomes[0] is Outcome.SKIPPED_STALE
    assert outcomes[1] is Outcome.SKIPPED_STALE
    assert outcomes[2] is Outcome.UPSERTED
    assert outcomes[3] in (Outcome.DELETED, Outcome.ALREADY_ABSENT)
    assert outcomes[4] is Outcome.SKIPPED_STALE
    assert cli_side.graph.get_content("o-1").json()["title"] == "Newest"
    assert cli_side.graph.get_content("o-2").json()["title"] == "Only"
    assert cli_side.graph.get_content("o-3").status_code == 404
    assert cli_side.graph.get_content("o-9").status_code == 404

    # Safe to run twice: the same commands again, and the ledger skips every one.
    sources_file = tmp_path / "sources.json"
    sources_file.write_text(sources(cli_side.registration_id, "lms-a"))
    twice = await asyncio.to_thread(vlsync, "--json", "replay", "archive", *window, "--sources", f"@{sources_file}")
    assert json.loads(twice.stdout)["counts"]["enqueued"] == 5
    outcomes = [await process(body, MessageInfo(mid, 1), ports) for mid, body in take_work(settings)]
    assert set(outcomes) == {Outcome.SKIPPED_STALE}
    assert cli_side.graph.get_content("o-1").json()["title"] == "Newest"
    assert cli_side.graph.get_content("o-3").status_code == 404


def test_usage_errors_enqueue_nothing(cli_side: CliSide) -> None:
    container = f"archive-{uuid.uuid4().hex[:10]}"
    vlsync = cli(cli_side, container)
    window = ["--since", "2026-11-27T10:00:00Z", "--until", "2026-11-27T11:00:00Z"]
    for args in (
        [],  # --since and --until are required
        ["--since", "2026-11-27T10:00:00Z"],
        ["--since", "2026-11-27T10:00:00", "--until", "2026-11-27T11:00:00Z"],  # no offset
        ["--since", "2026-11-27T11:00:00Z", "--until", "2026-11-27T10:00:00Z"],
        [*window, "--limit", "0"],
        [*window, "--sources", "{not json"],
        [*window, "--sources", "@/no/such/file.json"],
    ):
        result = vlsync("replay", "archive", *args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
    no_sources = make_runner({**cli_side.env, "EVENT_ARCHIVE_CONTAINER": container})("replay", "archive", *window)
    assert no_sources.exit_code == 2
    assert "no SOURCES" in no_sources.stderr
    assert peek_json(cli_side.env["LearningSyncStorage"], cli_side.env["CONTENT_QUEUE_NAME"]) == []


def test_an_empty_archive_replays_nothing_and_the_limit_says_where_to_go_on(
    cli_side: CliSide, monkeypatch: Any
) -> None:
    container = f"archive-{uuid.uuid4().hex[:10]}"
    vlsync = cli(cli_side, container)
    empty = vlsync("--json", "replay", "archive", "--since", "2026-11-27T10:00:00Z", "--until", "2026-11-27T11:00:00Z")
    assert empty.exit_code == 0, empty.stderr
    assert json.loads(empty.stdout)["counts"]["read"] == 0  # the container does not even exist

    monkeypatch.setenv(SECRET_SETTING, SECRET)
    settings = app_settings(cli_side, container)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    requests = [post(settings, "lms-a", f"l-{n}", base, title=f"T{n}")[0] for n in range(3)]
    take_work(settings)
    window = ["--since", rfc3339(requests[0].received_at), "--until", rfc3339(datetime.now(UTC) + timedelta(seconds=1))]
    limited = vlsync("replay", "archive", *window, "--limit", "2")
    assert limited.exit_code == 0, limited.stderr
    assert f"run again with --since {requests[2].received_at.isoformat()}" in limited.stderr
    assert sorted(
        m["externalId"] for m in peek_json(settings.storage_connection_string or "", settings.content_queue_name)
    ) == ["l-0", "l-1"]


def test_a_blob_that_is_not_an_archived_delivery_stops_the_replay(cli_side: CliSide) -> None:
    from azure.storage.blob import BlobServiceClient

    container = f"archive-{uuid.uuid4().hex[:10]}"
    service = BlobServiceClient.from_connection_string(cli_side.env["LearningSyncStorage"])
    service.create_container(container)
    name = "lms-a/2026/11/27/10/20261127T100000000000Z-junk.json"
    service.get_container_client(container).upload_blob(name, b'{"v": 2}')
    result = cli(cli_side, container)(
        "--json", "replay", "archive", "--since", "2026-11-27T10:00:00Z", "--until", "2026-11-27T11:00:00Z"
    )
    assert result.exit_code == 1
    assert name in json.loads(result.stderr.splitlines()[-1])["error"]["message"]
    assert peek_json(cli_side.env["LearningSyncStorage"], cli_side.env["CONTENT_QUEUE_NAME"]) == []
