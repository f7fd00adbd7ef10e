"""Replay on real queue storage (Azurite): parked commands, some malformed, back to the work queue."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.queue import QueueClient

from shared.models import CommandError, ContentCommand
from shared.queue import QueueUnavailable, StorageCommandQueue
from shared.replay import ReplayFilter, replay_poison
from shared.settings import Settings
from tests.queues import peek_json, peek_messages
from tests.webhooks import content

T0 = datetime(2026, 11, 27, 10, tzinfo=UTC)


def command(external_id: str, source: str = "lms-a", parked_at: datetime | None = T0, **extra: Any) -> ContentCommand:
    return ContentCommand.model_validate(
        {
            "op": "upsert",
            "registrationId": "reg-1",
            "externalId": external_id,
            "content": content(external_id),
            "source": source,
            "sourceEventId": f"evt-{external_id}",
            "eventTime": datetime(2026, 11, 27, 9, tzinfo=UTC),
            "correlationId": f"corr-{external_id}",
            "deferrals": 2,
            "lastError": None
            if parked_at is None
            else CommandError(kind="transient", status=503, message="Graph down", at=parked_at, attempts=5),
            **extra,
        }
    )


@pytest.fixture
def queue(settings: Settings) -> StorageCommandQueue:
    q = StorageCommandQueue.from_settings(settings)
    q.ensure_queues()
    return q


def where(settings: Settings, name: str) -> tuple[str, str]:
    return settings.storage_connection_string or "", name


def poison_ids(settings: Settings) -> list[str]:
    return sorted(m.id for m in peek_messages(*where(settings, settings.poison_queue_name)))


def work(settings: Settings) -> list[dict[str, Any]]:
    return peek_json(*where(settings, settings.content_queue_name))


def park_mixed(queue: StorageCommandQueue, settings: Settings) -> None:
    """Two valid commands of two sources, a malformed one as the worker parks it, and one that is not
    Base64 at all (a producer that wrote raw text, copied to poison by the host)."""
    queue.park(command("c-1", "lms-a").to_json())
    queue.park(command("c-2", "lms-b").to_json())
    queue.park("not json")
    with QueueClient.from_connection_string(*where(settings, settings.poison_queue_name)) as raw:
        raw.send_message("%% raw text, not base64 %%")


def test_a_dry_run_counts_and_lists_but_moves_nothing(queue: StorageCommandQueue, settings: Settings) -> None:
    park_mixed(queue, settings)
    before = poison_ids(settings)
    report = replay_poison(queue, ReplayFilter(source="lms-a"), dry_run=True)
    assert report.counts() == {"replayed": 1, "skipped": 1, "unreplayable": 2}
    assert [item["externalId"] for item in report.view()["replayed"]] == ["c-1"]
    reasons = sorted(item["reason"] for item in report.view()["unreplayable"])
    assert reasons[0] == "not Base64 text"
    assert reasons[1].startswith("not a content command")
    assert work(settings) == []
    # Every message is back and visible at once, not hidden until the scan's lease ends.
    assert poison_ids(settings) == before


def test_replay_moves_what_matches_and_is_safe_to_run_twice(queue: StorageCommandQueue, settings: Settings) -> None:
    park_mixed(queue, settings)
    first = replay_poison(queue, ReplayFilter(source="lms-a"))
    assert first.counts() == {"replayed": 1, "skipped": 1, "unreplayable": 2}
    assert first.complete is True
    [sent] = work(settings)
    original = json.loads(command("c-1", "lms-a").to_json())
    assert "lastError" not in sent
    assert sent.get("deferrals", 0) == 0
    assert {k: v for k, v in sent.items() if k != "deferrals"} == {
        k: v for k, v in original.items() if k not in ("lastError", "deferrals")
    }
    ContentCommand.model_validate(sent)  # what the worker will read
    assert len(poison_ids(settings)) == 3

    again = replay_poison(queue, ReplayFilter(source="lms-a"))
    assert again.counts() == {"replayed": 0, "skipped": 1, "unreplayable": 2}
    assert len(work(settings)) == 1  # nothing sent twice

    rest = replay_poison(queue, ReplayFilter())
    assert rest.counts() == {"replayed": 1, "skipped": 0, "unreplayable": 2}
    assert sorted(m["externalId"] for m in work(settings)) == ["c-1", "c-2"]
    # The malformed ones stay parked, as they were, for an operator to read.
    raw = [m.content for m in peek_messages(*where(settings, settings.poison_queue_name))]
    assert sorted(raw) == sorted(["%% raw text, not base64 %%", base64.b64encode(b"not json").decode()])


def test_the_window_is_on_the_time_the_command_was_parked(queue: StorageCommandQueue, settings: Settings) -> None:
    for minutes in (0, 30, 60):
        queue.park(command(f"t-{minutes}", parked_at=T0 + timedelta(minutes=minutes)).to_json())
    queue.park(command("host-copied", parked_at=None).to_json())  # entered poison just now
    report = replay_poison(queue, ReplayFilter(since=T0 + timedelta(minutes=30), until=T0 + timedelta(minutes=60)))
    assert report.counts() == {"replayed": 1, "skipped": 3, "unreplayable": 0}
    assert [m["externalId"] for m in work(settings)] == ["t-30"]
    recent = replay_poison(queue, ReplayFilter(since=datetime.now(UTC) - timedelta(minutes=5)))
    assert [item.command.external_id for item in recent.items if item.command and item.outcome == "replayed"] == [
        "host-copied"
    ]


def test_external_id_and_event_time_filters(queue: StorageCommandQueue, settings: Settings) -> None:
    queue.park(command("O'Brien/#1").to_json())
    queue.park(command("other", eventTime=datetime(2026, 11, 1, tzinfo=UTC)).to_json())
    assert replay_poison(queue, ReplayFilter(external_id="O'Brien/#1"), dry_run=True).counts()["replayed"] == 1
    by_event = replay_poison(
        queue, ReplayFilter(until=datetime(2026, 11, 2, tzinfo=UTC), time_field="event"), dry_run=True
    )
    assert [i["externalId"] for i in by_event.view()["replayed"]] == ["other"]


def test_a_limit_stops_early_and_a_second_run_takes_the_rest(queue: StorageCommandQueue, settings: Settings) -> None:
    for index in range(5):
        queue.park(command(f"l-{index}").to_json())
    first = replay_poison(queue, ReplayFilter(), limit=2)
    assert (first.counts()["replayed"], first.complete) == (2, False)
    assert len(work(settings)) == 2
    assert len(poison_ids(settings)) == 3  # the rest visible again at once
    second = replay_poison(queue, ReplayFilter())
    assert (second.counts()["replayed"], second.complete) == (3, True)
    assert sorted(m["externalId"] for m in work(settings)) == [f"l-{i}" for i in range(5)]


def test_an_empty_or_missing_poison_queue_replays_nothing(settings: Settings) -> None:
    queue = StorageCommandQueue.from_settings(settings)  # queues not created yet
    report = replay_poison(queue, ReplayFilter())
    assert (report.counts(), report.complete) == ({"replayed": 0, "skipped": 0, "unreplayable": 0}, True)


def test_a_failed_send_leaves_the_command_parked(queue: StorageCommandQueue, settings: Settings) -> None:
    """Enqueue first, delete after: when the work queue refuses, nothing has left the poison queue."""
    queue.park(command("c-1").to_json())
    before = poison_ids(settings)

    class WorkQueueDown(StorageCommandQueue):
        def _send(self, client: QueueClient, text: str) -> Any:
            raise ServiceRequestError("work queue unreachable")

    queue.__class__ = WorkQueueDown
    with pytest.raises(QueueUnavailable, match="after 0 message"):
        replay_poison(queue, ReplayFilter())
    assert poison_ids(settings) == before  # still parked, and visible again at once
    assert work(settings) == []
