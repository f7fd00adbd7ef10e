"""Replay: parked commands from the poison queue back to the work queue, filtered and counted; and
commands derived again from the raw event archive (:func:`replay_archive`, at the end).

The one implementation behind ``vlsync replay poison`` and the admin function
``POST /api/ops/replay/poison``. Each parked message is looked at once and has one outcome:

- ``replayed``: a valid command that matches the filter. It goes back to the work queue as it was
  sent, minus ``lastError`` and ``deferrals`` (the worker starts its attempts and its Retry-After
  budget afresh), and is then deleted from the poison queue. Its ``eventTime`` is kept, so the
  worker's ledger decides again: a command older than what Graph already has is skipped, never
  applied over the newer state.
- ``skipped``: a valid command that the filter leaves out; it stays parked.
- ``unreplayable``: a message that is not a command (not Base64 text, not JSON, not a valid
  ``ContentCommand``: the worker parked it as ``malformed``). It is never replayed, whatever the
  filter (its source and times cannot be trusted); it stays parked for an operator to read.

The time window (``since`` inclusive, ``until`` exclusive) is on the time the command was parked by
default: ``lastError.at``, or for a message without it (copied to the poison queue by the Functions
host) the time it entered the poison queue. That is the time an operator knows ("Graph was down
from 10:00 to 10:40"). ``time_field="event"`` compares the command's ``eventTime`` instead.

Safe to run twice: a replayed command has left the poison queue, so a second run finds less or
nothing; a crash between the send and the delete leaves a duplicate, which the ledger skips.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared import intake, telemetry
from shared.archive import ArchivedDelivery, ArchiveUnreadable
from shared.models import ContentCommand, parse_rfc3339
from shared.queue import QueueUnavailable, SentMessage, StoredMessage, message_ids
from shared.settings import Settings, SourcesError

logger = logging.getLogger(__name__)

T = TypeVar("T")
TimeField = Literal["parked", "event"]
# Each move is two storage calls (send, delete); this many fit well inside the 230 s an HTTP request
# may take on Azure (the front end's idle timeout), so automation calls again while ``complete`` is false.
HTTP_DEFAULT_LIMIT = 1000
HTTP_MAX_LIMIT = 5000
PREVIEW_CHARS = 200  # of an unreplayable message's text, enough to recognise it


class ReplayOutcome(StrEnum):
    REPLAYED = "replayed"
    SKIPPED = "skipped"
    UNREPLAYABLE = "unreplayable"


@dataclass(frozen=True)
class ReplayFilter:
    """Which parked commands to replay; every field given must match (none given: all of them)."""

    source: str | None = None
    external_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    time_field: TimeField = "parked"

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")

    def skips(self, command: ContentCommand, parked_at: datetime | None) -> str | None:
        """Why the filter leaves ``command`` out, or ``None`` when it matches."""
        if self.source is not None and command.source != self.source:
            return "source"
        if self.external_id is not None and command.external_id != self.external_id:
            return "externalId"
        when = command.event_time if self.time_field == "event" else parked_at
        if self.since is not None and (when is None or when < self.since):
            return "since"
        if self.until is not None and (when is None or when >= self.until):
            return "until"
        return None

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "externalId": self.external_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "timeField": self.time_field,
        }


@dataclass(frozen=True)
class ReplayItem:
    """One parked message and what replay did (or, in a dry run, would do) with it."""

    message_id: str
    outcome: ReplayOutcome
    parked_at: datetime | None
    command: ContentCommand | None = None
    reason: str | None = None  # why skipped (the filter field) or unreplayable
    preview: str | None = None  # the start of an unreplayable message's text

    def view(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "messageId": self.message_id,
            "outcome": self.outcome.value,
            "parkedAt": self.parked_at.isoformat() if self.parked_at else None,
        }
        if self.command is not None:
            command = self.command
            doc |= {
                "source": command.source,
                "tenantId": command.tenant_id,
                "registrationId": command.registration_id,
                "externalId": command.external_id,
                "op": command.op,
                "eventTime": command.event_time.isoformat(),
                "sourceEventId": command.source_event_id,
                "correlationId": command.correlation_id,
                "lastError": command.last_error.model_dump(mode="json", by_alias=True, exclude_none=True)
                if command.last_error
                else None,
            }
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.preview is not None:
            doc["preview"] = self.preview
        return doc


@dataclass
class ReplayReport:
    dry_run: bool
    filter: ReplayFilter
    queue: str
    items: list[ReplayItem] = field(default_factory=list)
    complete: bool = True  # False: stopped at the limit, more may match

    def counts(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in ReplayOutcome}
        for item in self.items:
            counts[item.outcome.value] += 1
        return counts

    def listed(self, outcome: ReplayOutcome) -> list[ReplayItem]:
        return [item for item in self.items if item.outcome is outcome]

    def view(self) -> dict[str, Any]:
        """The JSON answer: counts by outcome, and the commands replayed (in a dry run: that would be)."""
        return {
            "dryRun": self.dry_run,
            "queue": self.queue,
            "filter": self.filter.view(),
            "counts": self.counts(),
            "complete": self.complete,
            "replayed": [item.view() for item in self.listed(ReplayOutcome.REPLAYED)],
            "unreplayable": [item.view() for item in self.listed(ReplayOutcome.UNREPLAYABLE)],
        }


class PoisonPort(Protocol):
    """The queue operations replay needs (``shared.queue.StorageCommandQueue``)."""

    @property
    def poison_name(self) -> str: ...

    def move_back(
        self,
        role: Literal["poison", "held"],
        decide: Callable[[StoredMessage], str | None],
        *,
        limit: int | None = None,
    ) -> bool: ...


def judge(message: StoredMessage, flt: ReplayFilter) -> ReplayItem:
    """The outcome of one parked message under ``flt`` (pure)."""
    if message.text is None:
        return ReplayItem(message.message_id, ReplayOutcome.UNREPLAYABLE, message.inserted_on, reason="not Base64 text")
    try:
        command = ContentCommand.model_validate_json(message.text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = "/".join(map(str, first["loc"]))
        return ReplayItem(
            message.message_id,
            ReplayOutcome.UNREPLAYABLE,
            message.inserted_on,
            reason=f"not a content command: {where + ': ' if where else ''}{first['msg']}",
            preview=message.text[:PREVIEW_CHARS],
        )
    parked_at = command.last_error.at if command.last_error else message.inserted_on
    skipped = flt.skips(command, parked_at)
    if skipped is not None:
        return ReplayItem(message.message_id, ReplayOutcome.SKIPPED, parked_at, command, reason=skipped)
    return ReplayItem(message.message_id, ReplayOutcome.REPLAYED, parked_at, command)


def replayed_text(command: ContentCommand) -> str:
    """The command as it goes back to the work queue: as sent, with no error and no deferral spent."""
    return command.model_copy(update={"last_error": None, "deferrals": 0}).to_json()


def replay_poison(
    queue: PoisonPort, flt: ReplayFilter, *, dry_run: bool = False, limit: int | None = None
) -> ReplayReport:
    """Move the parked commands that ``flt`` matches back to the work queue (``dry_run``: none)."""
    report = ReplayReport(dry_run=dry_run, filter=flt, queue=queue.poison_name)
    replayed = 0

    def decide(message: StoredMessage) -> str | None:
        nonlocal replayed
        if limit is not None and replayed >= limit:  # a dry run stops where the real run would
            return None
        item = judge(message, flt)
        report.items.append(item)
        if item.outcome is not ReplayOutcome.REPLAYED or item.command is None:
            return None
        replayed += 1
        command = item.command
        logger.info(
            "%s %s %s reg=%s message=%s correlation=%s (parked %s: %s)",
            "would replay" if dry_run else "replaying",
            command.op,
            command.external_id,
            command.registration_id,
            message.message_id,
            command.correlation_id,
            item.parked_at.isoformat() if item.parked_at else "at an unknown time",
            command.last_error.kind if command.last_error else "no lastError",
        )
        return None if dry_run else replayed_text(command)

    report.complete = queue.move_back("poison", decide, limit=None if dry_run else limit)
    if limit is not None and replayed >= limit:
        report.complete = False
    return report


# -- the admin function's request and answer ---------------------------------------------------------


class ReplayRequest(BaseModel):
    """The JSON body of ``POST /api/ops/replay/poison``; every field optional, unknown ones refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    source: str | None = Field(default=None, min_length=1)
    external_id: str | None = Field(default=None, alias="externalId", min_length=1)
    since: str | None = None
    until: str | None = None
    time_field: TimeField = Field(default="parked", alias="timeField")
    dry_run: bool = Field(default=False, alias="dryRun")
    limit: int = Field(default=HTTP_DEFAULT_LIMIT, ge=1, le=HTTP_MAX_LIMIT)

    @field_validator("since", "until")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rfc3339(value)
        return value

    def to_filter(self) -> ReplayFilter:
        return ReplayFilter(
            source=self.source,
            external_id=self.external_id,
            since=parse_rfc3339(self.since) if self.since else None,
            until=parse_rfc3339(self.until) if self.until else None,
            time_field=self.time_field,
        )


@dataclass(frozen=True)
class ReplayAnswer:
    status: int
    body: dict[str, Any]
    content_type: str = "application/json"


def _problem(status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None) -> ReplayAnswer:
    # "about:blank": a plain HTTP error (RFC 9457 4.2.1); the urn:vlsync:problem: catalogue is the webhooks'.
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return ReplayAnswer(status, body, "application/problem+json")


def parse_request(body: bytes) -> tuple[ReplayRequest, ReplayFilter] | ReplayAnswer:
    """The request and its filter, or the 400 answer that says what is wrong with the body."""

    def read(document: dict[str, Any]) -> tuple[ReplayRequest, ReplayFilter]:
        request = ReplayRequest.model_validate(document)
        return request, request.to_filter()

    return _parsed(body, read, "a replay")


def _parsed(body: bytes, read: Callable[[dict[str, Any]], T], what: str) -> T | ReplayAnswer:
    """``read`` applied to a request body's JSON object, or the 400 answer that says what is wrong with it."""
    try:
        document = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _problem(400, "Bad Request", "the body is not JSON")
    if not isinstance(document, dict):
        return _problem(400, "Bad Request", "the body must be a JSON object")
    try:
        return read(document)
    except ValidationError as exc:
        errors = [
            {"pointer": "/" + "/".join(map(str, e["loc"])), "detail": e["msg"].removeprefix("Value error, ")}
            for e in exc.errors(include_url=False)
        ]
        return _problem(400, "Bad Request", f"the body does not describe {what}", errors)
    except ValueError as exc:  # since >= until
        return _problem(400, "Bad Request", str(exc))


def handle(body: bytes, queue: PoisonPort) -> ReplayAnswer:
    """``POST /api/ops/replay/poison``: parse, replay, answer the report (503 when storage fails)."""
    parsed = parse_request(body)
    if isinstance(parsed, ReplayAnswer):
        return parsed
    request, flt = parsed
    try:
        report = replay_poison(queue, flt, dry_run=request.dry_run, limit=request.limit)
    except QueueUnavailable as exc:
        logger.error("replay failed: %s", exc)
        return _problem(503, "Service Unavailable", "queue storage unavailable; nothing was lost, call again")
    return ReplayAnswer(200, report.view())


# -- the raw event archive ---------------------------------------------------------------------------
#
# ``vlsync replay archive`` and ``POST /api/ops/replay/archive``: every delivery the archive received in
# a window is derived again by today's sources and normalisers (``intake.rederive``: the adapters'
# trusted path stands in for the masked credential) and its commands go to the work queue with their
# original ``sourceEventId``, ``eventTime`` and ``correlationId``. The worker's ledger decides as for
# any delivery: an event already applied is skipped by its ``sourceEventId``, an older state never
# overwrites a newer one. So a replay is safe to run twice, and a window wider than the outage is
# harmless. Deliveries are read oldest first (by receipt), so one item's commands are queued in order.

# Each delivery is one blob read and a send per command; this many fit inside the 230 s an HTTP
# request may take on Azure. Automation continues from ``nextSince`` while ``complete`` is false.
ARCHIVE_HTTP_DEFAULT_LIMIT = 500
ARCHIVE_HTTP_MAX_LIMIT = 2000


class ArchiveOutcome(StrEnum):
    """What became of one archived delivery (the JSON counts' keys)."""

    DERIVED = "derived"  # one command or more, enqueued (in a dry run: would be)
    NO_COMMANDS = "noCommands"  # no course event in it (ignored events, a handshake)
    DUPLICATE = "duplicate"  # a redelivery the intake answered as one; its first delivery is replayed
    UNKNOWN_SOURCE = "unknownSource"  # its source is no longer configured
    REDACTED = "redacted"  # the archive masked part of the content: nothing derived
    INVALID = "invalid"  # today's rules refuse it (the problem's title)


_OUTCOMES: dict[intake.RederiveOutcome, ArchiveOutcome] = {
    "derived": ArchiveOutcome.DERIVED,
    "duplicate": ArchiveOutcome.DUPLICATE,
    "unknown-source": ArchiveOutcome.UNKNOWN_SOURCE,
    "redacted": ArchiveOutcome.REDACTED,
    "invalid": ArchiveOutcome.INVALID,
}


class ArchiveReader(Protocol):
    """The archive as replay reads it (``shared.archive.EventArchive``)."""

    def list(self, since: datetime, until: datetime, source: str | None = None) -> Iterable[ArchivedDelivery]: ...


class CommandSender(Protocol):
    """The work queue as replay writes it (``shared.queue.StorageCommandQueue``)."""

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]: ...


@dataclass(frozen=True)
class ArchiveWindow:
    """The deliveries to replay: received in ``[since, until)``, of one source or all."""

    since: datetime
    until: datetime
    source: str | None = None

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("since and until must carry a time zone")
        if self.since >= self.until:
            raise ValueError("since must be before until")

    def view(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "source": self.source}


@dataclass(frozen=True)
class ArchivedItem:
    """One archived delivery and what replay did (in a dry run: would do) with it."""

    source: str
    received_at: datetime
    correlation_id: str
    outcome: ArchiveOutcome
    commands: list[ContentCommand] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)  # as sent; none in a dry run
    problem: str | None = None
    detail: str | None = None

    def command_views(self) -> list[dict[str, Any]]:
        views = []
        for index, command in enumerate(self.commands):
            view: dict[str, Any] = {
                "op": command.op,
                "externalId": command.external_id,
                "registrationId": command.registration_id,
                "tenantId": command.tenant_id,
                "eventTime": command.event_time.isoformat(),
                "sourceEventId": command.source_event_id,
                "source": command.source,
                "correlationId": command.correlation_id,
                "receivedAt": self.received_at.isoformat(),
            }
            if index < len(self.message_ids):
                view["messageId"] = self.message_ids[index]
            views.append(view)
        return views

    def refusal_view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "receivedAt": self.received_at.isoformat(),
            "correlationId": self.correlation_id,
            "outcome": self.outcome.value,
            "problem": self.problem,
            "detail": self.detail,
        }


@dataclass
class ArchiveReport:
    dry_run: bool
    window: ArchiveWindow
    queue: str
    items: list[ArchivedItem] = field(default_factory=list)
    complete: bool = True  # False: stopped at the limit; run again from ``next_since``
    next_since: datetime | None = None

    def counts(self) -> dict[str, int]:
        """Deliveries by outcome (``read`` is their sum) and ``enqueued``, the commands sent (would be)."""
        counts = {"read": len(self.items), **{outcome.value: 0 for outcome in ArchiveOutcome}}
        for item in self.items:
            counts[item.outcome.value] += 1
        counts["enqueued"] = sum(len(item.commands) for item in self.items)
        return counts

    def listed(self, *outcomes: ArchiveOutcome) -> list[ArchivedItem]:
        return [item for item in self.items if item.outcome in outcomes]

    def view(self) -> dict[str, Any]:
        """The JSON answer: counts, the commands enqueued (in a dry run: that would be), the refusals."""
        refused = (ArchiveOutcome.UNKNOWN_SOURCE, ArchiveOutcome.REDACTED, ArchiveOutcome.INVALID)
        return {
            "dryRun": self.dry_run,
            "queue": self.queue,
            "window": self.window.view(),
            "counts": self.counts(),
            "complete": self.complete,
            "nextSince": self.next_since.isoformat() if self.next_since else None,
            "commands": [view for item in self.listed(ArchiveOutcome.DERIVED) for view in item.command_views()],
            "refused": [item.refusal_view() for item in self.listed(*refused)],
        }


def replay_archive(
    archive: ArchiveReader,
    queue: CommandSender,
    settings: Settings,
    window: ArchiveWindow,
    *,
    queue_name: str,
    dry_run: bool = False,
    limit: int | None = None,
) -> ArchiveReport:
    """Derive the commands of every archived delivery in ``window`` again and enqueue them (``dry_run``:
    none). ``limit`` caps the deliveries read; the report's ``next_since`` says where to go on.

    Raises ``SourcesError`` (the ``SOURCES`` setting), ``ArchiveUnreadable`` (a blob that is not an
    archived delivery: the archive's reader stops there rather than skip it), ``QueueUnavailable`` and
    the storage SDK's errors; what was enqueued before stays enqueued, and a second run is harmless.
    """
    settings.sources()  # an invalid SOURCES setting fails the replay at once, not every delivery
    report = ArchiveReport(dry_run=dry_run, window=window, queue=queue_name)
    trace_context = telemetry.inject() or None
    for delivery in archive.list(window.since, window.until, window.source):
        if limit is not None and len(report.items) >= limit:
            report.complete, report.next_since = False, delivery.received_at
            break
        result = intake.rederive(delivery, settings)
        outcome = _OUTCOMES[result.outcome]
        if outcome is ArchiveOutcome.DERIVED and not result.commands:
            outcome = ArchiveOutcome.NO_COMMANDS
        commands = [c.model_copy(update={"trace_context": trace_context}) for c in result.commands]
        sent: list[str] = []
        if commands and not dry_run:
            sent = message_ids(queue.send_all([c.to_json() for c in commands]))
        _log(delivery, outcome, commands, result, dry_run)
        report.items.append(
            ArchivedItem(
                delivery.source,
                delivery.received_at,
                delivery.correlation_id,
                outcome,
                commands,
                sent,
                result.problem,
                result.detail,
            )
        )
    return report


def _log(
    delivery: ArchivedDelivery,
    outcome: ArchiveOutcome,
    commands: list[ContentCommand],
    result: intake.Rederived,
    dry_run: bool,
) -> None:
    at = delivery.received_at.isoformat()
    where = f"source={delivery.source} received={at} correlation={delivery.correlation_id}"
    if outcome is ArchiveOutcome.DERIVED:
        verb = "would enqueue" if dry_run else "enqueuing"
        for command in commands:
            logger.info(
                "%s %s %s reg=%s event=%s at=%s %s",
                verb,
                command.op,
                command.external_id,
                command.registration_id,
                command.source_event_id,
                command.event_time.isoformat(),
                where,
            )
    elif outcome in (ArchiveOutcome.UNKNOWN_SOURCE, ArchiveOutcome.REDACTED, ArchiveOutcome.INVALID):
        title = f"{result.problem}: " if result.problem else ""
        logger.warning("archived delivery not replayed (%s) %s: %s%s", outcome.value, where, title, result.detail)


class ArchiveReplayRequest(BaseModel):
    """The JSON body of ``POST /api/ops/replay/archive``: a window (required) and options."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    since: str
    until: str
    source: str | None = Field(default=None, min_length=1)
    dry_run: bool = Field(default=False, alias="dryRun")
    limit: int = Field(default=ARCHIVE_HTTP_DEFAULT_LIMIT, ge=1, le=ARCHIVE_HTTP_MAX_LIMIT)

    @field_validator("since", "until")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        parse_rfc3339(value)
        return value

    def to_window(self) -> ArchiveWindow:
        return ArchiveWindow(parse_rfc3339(self.since), parse_rfc3339(self.until), self.source)


def parse_archive_request(body: bytes) -> tuple[ArchiveReplayRequest, ArchiveWindow] | ReplayAnswer:
    """The request and its window, or the 400 answer that says what is wrong with the body."""

    def read(document: dict[str, Any]) -> tuple[ArchiveReplayRequest, ArchiveWindow]:
        request = ArchiveReplayRequest.model_validate(document)
        return request, request.to_window()

    return _parsed(body, read, "an archive replay")


def handle_archive(
    body: bytes,
    settings: Settings,
    archive: Callable[[], ArchiveReader | None],
    queue: Callable[[], CommandSender],
) -> ReplayAnswer:
    """``POST /api/ops/replay/archive``: parse, replay, answer the report. 409 when the archive is off
    (``EVENT_ARCHIVE_RETENTION_DAYS`` 0), 503 when storage fails (run again: the ledger skips what is
    applied), 500 for an invalid ``SOURCES`` or an archive blob that is not an archived delivery."""
    parsed = parse_archive_request(body)
    if isinstance(parsed, ReplayAnswer):
        return parsed
    request, window = parsed
    reader = archive()
    if reader is None:
        return _problem(409, "Conflict", "the event archive is off (EVENT_ARCHIVE_RETENTION_DAYS is 0)")
    try:
        report = replay_archive(
            reader,
            queue(),
            settings,
            window,
            queue_name=settings.content_queue_name,
            dry_run=request.dry_run,
            limit=request.limit,
        )
    except (QueueUnavailable, AzureError) as exc:
        logger.error("archive replay failed: %s", exc)
        return _problem(503, "Service Unavailable", "storage unavailable; call again (what is applied is skipped)")
    except ArchiveUnreadable as exc:
        logger.error("archive replay stopped: %s", exc)
        return _problem(500, "Internal Server Error", f"an archive blob is not an archived delivery: {exc}")
    except SourcesError:
        logger.exception("archive replay: the SOURCES setting is invalid")
        return _problem(500, "Internal Server Error", "the SOURCES setting is invalid; see the function logs")
    return ReplayAnswer(200, report.view())
