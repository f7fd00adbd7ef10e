"""Replay's and health's decisions, without storage: which parked message is replayed, skipped or
unreplayable; what goes back to the queue; the admin request; the health rule and its answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import replay, status
from shared.models import CommandError, ContentCommand
from shared.queue import QueueRole, QueueSnapshot, QueueUnavailable, StoredMessage
from tests.webhooks import content

PARKED_AT = datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
INSERTED = datetime(2026, 11, 27, 10, 31, tzinfo=UTC)


def command(**overrides: Any) -> ContentCommand:
    values: dict[str, Any] = {
        "op": "upsert",
        "registrationId": "reg-1",
        "externalId": "c-1",
        "content": content("c-1"),
        "source": "lms-a",
        "sourceEventId": "evt-1",
        "eventTime": datetime(2026, 11, 27, 9, tzinfo=UTC),
        "correlationId": "corr-1",
        "traceContext": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "deferrals": 3,
        "lastError": CommandError(
            kind="transient", status=503, code="serviceUnavailable", message="down", at=PARKED_AT
        ),
    }
    values.update(overrides)
    if values["externalId"] != "c-1" and values["op"] == "upsert":
        values["content"] = content(values["externalId"])
    return ContentCommand.model_validate(values)


def parked(cmd: ContentCommand | None = None, text: str | None = None) -> StoredMessage:
    return StoredMessage("msg-1", INSERTED, text if cmd is None else cmd.to_json())


def outcome(message: StoredMessage, **filters: Any) -> tuple[str, str | None]:
    item = replay.judge(message, replay.ReplayFilter(**filters))
    return item.outcome.value, item.reason


# -- replay --------------------------------------------------------------------------------------------


def test_a_valid_parked_command_is_replayed_without_a_filter() -> None:
    assert outcome(parked(command())) == ("replayed", None)


@pytest.mark.parametrize("text", [None, "not json", '{"v": 2, "op": "upsert"}', "[]", ""])
def test_what_is_not_a_command_is_unreplayable_whatever_the_filter(text: str | None) -> None:
    assert outcome(parked(text=text))[0] == "unreplayable"
    assert outcome(parked(text=text), source="lms-a")[0] == "unreplayable"
    assert outcome(parked(text=text), since=PARKED_AT + timedelta(days=9))[0] == "unreplayable"


def test_the_filter_says_which_field_left_a_command_out() -> None:
    message = parked(command())
    assert outcome(message, source="lms-b") == ("skipped", "source")
    assert outcome(message, source="lms-a") == ("replayed", None)
    assert outcome(message, external_id="c-2") == ("skipped", "externalId")
    assert outcome(message, source="lms-a", external_id="c-1") == ("replayed", None)


def test_the_window_is_on_the_parked_time_since_inclusive_until_exclusive() -> None:
    message = parked(command())
    assert outcome(message, since=PARKED_AT) == ("replayed", None)
    assert outcome(message, since=PARKED_AT + timedelta(seconds=1)) == ("skipped", "since")
    assert outcome(message, until=PARKED_AT) == ("skipped", "until")
    assert outcome(message, until=PARKED_AT + timedelta(seconds=1)) == ("replayed", None)
    # The event (09:00) is outside this window, the parking (10:30) inside: parked time decides.
    assert outcome(message, since=datetime(2026, 11, 27, 10, tzinfo=UTC)) == ("replayed", None)
    assert outcome(message, since=datetime(2026, 11, 27, 10, tzinfo=UTC), time_field="event") == ("skipped", "since")


def test_without_last_error_the_parked_time_is_when_it_entered_the_poison_queue() -> None:
    host_copied = parked(command(lastError=None))  # the Functions host moved it after maxDequeueCount
    assert replay.judge(host_copied, replay.ReplayFilter()).parked_at == INSERTED
    assert outcome(host_copied, since=INSERTED) == ("replayed", None)
    assert outcome(host_copied, until=INSERTED) == ("skipped", "until")


def test_since_must_be_before_until() -> None:
    with pytest.raises(ValueError, match="before"):
        replay.ReplayFilter(since=PARKED_AT, until=PARKED_AT)


def test_the_replayed_command_loses_its_error_and_deferrals_and_keeps_the_rest() -> None:
    original = command()
    sent = json.loads(replay.replayed_text(original))
    assert "lastError" not in sent
    assert sent.get("deferrals", 0) == 0
    expected = json.loads(original.to_json())
    del expected["lastError"], expected["deferrals"]
    assert {k: v for k, v in sent.items() if k != "deferrals"} == expected  # event time, ids, trace: as sent


class FakePoison:
    """The queue's move_back over a list: what a real scan would hand ``decide``, and what it moved."""

    poison_name = "cmd-poison"

    def __init__(self, messages: list[StoredMessage]) -> None:
        self.messages = messages
        self.sent: list[str] = []

    def move_back(self, role: str, decide: Any, *, limit: int | None = None) -> bool:
        assert role == "poison"
        kept = []
        for index, message in enumerate(self.messages):
            if limit is not None and len(self.sent) >= limit:
                kept.extend(self.messages[index:])
                self.messages = kept
                return False
            text = decide(message)
            if text is None:
                kept.append(message)
            else:
                self.sent.append(text)
        self.messages = kept
        return True


def test_a_dry_run_lists_what_would_move_and_moves_nothing() -> None:
    queue = FakePoison([parked(command()), parked(text="garbage"), parked(command(source="lms-b"))])
    report = replay.replay_poison(queue, replay.ReplayFilter(source="lms-a"), dry_run=True)
    assert report.counts() == {"replayed": 1, "skipped": 1, "unreplayable": 1}
    assert queue.sent == []
    assert len(queue.messages) == 3
    view = report.view()
    assert view["dryRun"] is True
    assert [i["externalId"] for i in view["replayed"]] == ["c-1"]
    assert view["replayed"][0]["lastError"]["kind"] == "transient"
    assert view["unreplayable"][0]["preview"] == "garbage"


def test_the_limit_stops_the_replay_and_says_so() -> None:
    queue = FakePoison([parked(command(externalId=f"c-{i}")) for i in range(5)])
    report = replay.replay_poison(queue, replay.ReplayFilter(), limit=2)
    assert len(queue.sent) == 2
    assert len(queue.messages) == 3
    assert report.counts()["replayed"] == 2
    assert report.complete is False
    again = replay.replay_poison(queue, replay.ReplayFilter())
    assert (again.counts()["replayed"], again.complete, queue.messages) == (3, True, [])


def test_the_admin_request_defaults_to_everything_within_the_http_limit() -> None:
    parsed = replay.parse_request(b"")
    assert not isinstance(parsed, replay.ReplayAnswer)
    request, flt = parsed
    assert (request.dry_run, request.limit, flt) == (False, replay.HTTP_DEFAULT_LIMIT, replay.ReplayFilter())
    parsed = replay.parse_request(
        json.dumps(
            {
                "source": "lms-a",
                "externalId": "c-1",
                "since": "2026-11-27T10:00:00Z",
                "until": "2026-11-27T12:00:00+01:00",
                "timeField": "event",
                "dryRun": True,
                "limit": 7,
            }
        ).encode()
    )
    assert not isinstance(parsed, replay.ReplayAnswer)
    request, flt = parsed
    assert (request.dry_run, request.limit) == (True, 7)
    assert flt == replay.ReplayFilter(
        source="lms-a",
        external_id="c-1",
        since=datetime(2026, 11, 27, 10, tzinfo=UTC),
        until=datetime(2026, 11, 27, 11, tzinfo=UTC),
        time_field="event",
    )


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b'{"sources": "lms-a"}', "/sources"),
        (b'{"since": "yesterday"}', "/since"),
        (b'{"since": "2026-11-27T10:00:00"}', "/since"),  # no offset
        (b'{"dryRun": "yes"}', "/dryRun"),
        (b'{"limit": 0}', "/limit"),
        (b'{"limit": 100000}', "/limit"),
        (b'{"timeField": "received"}', "/timeField"),
        (b'{"source": ""}', "/source"),
    ],
)
def test_a_bad_admin_request_is_a_400_naming_the_field(body: bytes, pointer: str) -> None:
    answer = replay.handle(body, FakePoison([parked(command())]))
    assert answer.status == 400
    assert answer.content_type == "application/problem+json"
    assert [e["pointer"] for e in answer.body["errors"]] == [pointer]


@pytest.mark.parametrize(
    "body", [b"{", b"[]", b'"x"', b"\xff\xfe", b'{"since": "2026-11-27T11:00:00Z", "until": "2026-11-27T10:00:00Z"}']
)
def test_a_body_that_is_no_request_is_a_400_and_nothing_moves(body: bytes) -> None:
    queue = FakePoison([parked(command())])
    answer = replay.handle(body, queue)
    assert (answer.status, answer.body["type"]) == (400, "about:blank")
    assert queue.sent == []


def test_storage_trouble_is_a_503_not_a_crash() -> None:
    class Down(FakePoison):
        def move_back(self, role: str, decide: Any, *, limit: int | None = None) -> bool:
            raise QueueUnavailable("no storage")

    answer = replay.handle(b"{}", Down([]))
    assert answer.status == 503


# -- health ----------------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def snapshot(role: QueueRole, count: int = 0, *ages_minutes: float, texts: list[str] | None = None) -> QueueSnapshot:
    texts = texts or [""] * len(ages_minutes)
    peeked = tuple(
        StoredMessage(f"m{i}", NOW - timedelta(minutes=age), text)
        for i, (age, text) in enumerate(zip(ages_minutes, texts, strict=True))
    )
    return QueueSnapshot(role, f"cmd-{role}", count, peeked)


def test_up_when_nothing_is_parked_and_nothing_waits_long() -> None:
    assert status.assess(snapshot("work", 3, 14.9, 1), snapshot("poison"), NOW) == ("up", [])


def test_degraded_when_anything_is_parked() -> None:
    state, reasons = status.assess(snapshot("work"), snapshot("poison", 1, 1), NOW)
    assert state == "degraded"
    assert reasons == ["1 parked command(s) in cmd-poison"]


def test_degraded_when_the_oldest_visible_command_waited_too_long() -> None:
    state, reasons = status.assess(snapshot("work", 2, 1, 16), snapshot("poison"), NOW)
    assert state == "degraded"
    assert reasons == ["the oldest visible command in cmd-work has waited 16 min"]


class FakeQueues:
    def __init__(self, **snapshots: QueueSnapshot) -> None:
        self.snapshots = snapshots
        self.calls = 0
        self.down = False

    def snapshot(self, role: QueueRole) -> QueueSnapshot:
        self.calls += 1
        if self.down:
            raise QueueUnavailable("storage unreachable")
        return self.snapshots.get(role, snapshot(role))


def test_the_anonymous_answer_is_the_status_only_and_held_commands_do_not_degrade_it() -> None:
    queues = FakeQueues(held=snapshot("held", 40, 600))
    answer = status.health(queues, now=lambda: NOW, max_age=0)
    assert (answer.status, dict(answer.body)) == (200, {"status": "up"})
    queues.snapshots["poison"] = snapshot("poison", 2, 5)
    answer = status.health(queues, now=lambda: NOW, max_age=0)
    assert (answer.status, dict(answer.body)) == (200, {"status": "degraded"})


def test_down_is_a_503_and_says_nothing_more() -> None:
    queues = FakeQueues()
    queues.down = True
    answer = status.health(queues, now=lambda: NOW, max_age=0)
    assert (answer.status, dict(answer.body)) == (503, {"status": "down"})
    detailed = status.details(queues, None, [], now=lambda: NOW)
    assert detailed.status == 503
    assert detailed.body["reasons"] == ["storage unreachable"]


def test_the_anonymous_answer_is_cached_so_polling_cannot_drive_storage_calls() -> None:
    queues = FakeQueues()
    clock = iter([0.0, 5.0, 11.0, 11.0])  # stored at 0; asked at 5 (cached), at 11 (read again)
    first = status.health(queues, now=lambda: NOW, clock=lambda: next(clock))
    calls = queues.calls
    assert calls > 0
    assert status.health(queues, now=lambda: NOW, clock=lambda: next(clock)) is first
    assert queues.calls == calls
    status.health(queues, now=lambda: NOW, clock=lambda: next(clock))
    assert queues.calls == 2 * calls


def test_sources_merge_configuration_ledger_and_poison() -> None:
    older, newer = PARKED_AT, PARKED_AT + timedelta(minutes=5)
    texts = [
        command(lastError=CommandError(kind="transient", message="x", at=older)).to_json(),
        command(
            externalId="c-2", lastError=CommandError(kind="permanent", status=400, message="y", at=newer)
        ).to_json(),
        command(source="gone", lastError=None).to_json(),
        "malformed",
    ]
    poison = snapshot("poison", 4, 1, 2, 3, 4, texts=texts)
    ledger = status.LedgerScan({"lms-a": NOW - timedelta(hours=1), "lms-c": NOW}, rows_read=9, complete=True)
    sources = status.per_source(["lms-a", "lms-b"], ledger, poison)
    assert list(sources) == ["gone", "lms-a", "lms-b", "lms-c"]
    assert sources["lms-a"].view() == {
        "source": "lms-a",
        "configured": True,
        "lastSuccess": (NOW - timedelta(hours=1)).isoformat(),
        "lastFailure": newer.isoformat(),
        "lastFailureKind": "permanent",
        "parkedSeen": 2,
    }
    assert sources["lms-b"].view()["lastSuccess"] is None
    assert (sources["gone"].configured, sources["gone"].parked_seen, sources["gone"].last_failure) == (False, 1, None)
    assert sources["lms-c"].configured is False


def test_the_detailed_report_has_every_part_and_the_circuit_placeholder() -> None:
    queues = FakeQueues(work=snapshot("work", 1, 2), poison=snapshot("poison", 40, *([1] * 32)))
    report = status.details(queues, None, ["lms-a"], now=lambda: NOW)
    assert report.status == 200
    body = report.body
    assert body["status"] == "degraded"
    assert set(body["queues"]) == {"work", "poison", "held"}
    assert body["queues"]["work"] == {
        "name": "cmd-work",
        "approximateCount": 1,
        "oldestVisibleAt": (NOW - timedelta(minutes=2)).isoformat(),
        "oldestAgeSeconds": 120.0,
    }
    assert body["poisonScan"] == {"peeked": 32, "approximateCount": 40, "complete": False}
    assert body["ledgerScan"]["complete"] is False
    assert body["ledgerScan"]["error"]
    assert body["circuit"] == "unknown"
    assert [s["source"] for s in body["sources"]] == ["lms-a"]
