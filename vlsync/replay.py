"""``vlsync replay poison``: parked commands back to the function app's work queue; ``vlsync replay
archive``: the commands of archived deliveries derived again and queued (``shared.replay``, the same
code as the admin functions ``POST /api/ops/replay/poison`` and ``/archive``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vlsync.app import (
    OUTPUT_OPTIONS,
    STORAGE_OPTIONS,
    Failure,
    announce,
    checked,
    cli,
    config,
    example,
    options,
    printer,
    run,
    shared_option,
)
from vlsync.output import Printer

if TYPE_CHECKING:  # loaded when a command runs
    from shared.archive import EventArchive
    from shared.replay import ArchivedItem, ArchiveReport, ReplayItem, ReplayReport
    from shared.settings import Settings
    from vlsync.config import CliConfig


def rfc3339(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A click callback: an RFC 3339 date-time with an offset, else a usage error."""
    if value is None:
        return None
    from shared.models import parse_rfc3339

    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} {exc}", ctx=ctx, param=param) from None


@cli.group(
    epilog=example(
        "vlsync replay poison --dry-run",
        "vlsync replay poison --source lms-a --since 2026-11-27T10:00:00Z --until 2026-11-27T11:00:00Z",
    )
)
def replay() -> None:
    """Send parked or archived commands back to the function app's work queue. The ledger decides again:
    an event already applied, or older than what Graph already has, is skipped by the worker, never
    applied over the newer state."""


@replay.command(
    "poison",
    epilog=example(
        "vlsync replay poison --dry-run",
        "vlsync replay poison --source lms-a --since 2026-11-27T10:00:00Z --until 2026-11-27T11:00:00Z",
        'vlsync replay poison --external-id "O\'Brien/101" --time-field event --since 2026-11-01T00:00:00Z',
        more="Moves the parked commands that match every filter given from <queue>-poison to <queue>, "
        "without their lastError and deferrals, and counts them: replayed, skipped (by the filter), "
        "unreplayable (not a content command; never moved). Safe to run twice. Held commands "
        "(<queue>-held) are not touched: `vlsync provider enable` releases them.",
    ),
)
@click.option("--source", help="Only commands of this webhook source (the command's source).")
@click.option("--external-id", "external_id", help="Only commands of this externalId.")
@click.option(
    "--since",
    callback=rfc3339,
    help="Only commands parked (or, with --time-field event, whose event is) at or after this RFC 3339 time.",
)
@click.option("--until", callback=rfc3339, help="Only commands parked (or whose event is) before this RFC 3339 time.")
@click.option(
    "--time-field",
    "time_field",
    type=click.Choice(["parked", "event"]),
    default="parked",
    show_default=True,
    help="What --since/--until compare: when the command was parked (lastError.at, else when it entered the "
    "poison queue) or its eventTime.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Replay at most this many (the rest stay parked).")
@click.option("--dry-run", "dry_run", is_flag=True, help="List what would be replayed; move nothing.")
@options(OUTPUT_OPTIONS, STORAGE_OPTIONS)
def poison(
    source: str | None,
    external_id: str | None,
    since: datetime | None,
    until: datetime | None,
    time_field: str,
    limit: int | None,
    dry_run: bool,
) -> None:
    """Move parked commands from the poison queue back to the work queue."""
    from shared.replay import ReplayFilter, replay_poison
    from vlsync import storage
    from vlsync.operations import Target, storage_account

    try:
        flt = ReplayFilter(
            source=source,
            external_id=external_id,
            since=since,
            until=until,
            time_field="event" if time_field == "event" else "parked",
        )
    except ValueError as exc:
        raise click.UsageError(f"--since/--until: {exc}") from None
    conf, out = config(), printer()
    queue = checked(lambda: storage.command_queue(conf))
    # Only the app's storage is written; the function app's worker pushes what comes back, to its Graph.
    account = storage_account(conf.storage_connection_string, conf.storage_account)
    target = Target("not called (the function app's worker pushes)", "any", account, tenant="any")
    announce(out, target)
    report = run(asyncio.to_thread(replay_poison, queue, flt, dry_run=dry_run, limit=limit))
    if out.as_json:
        out.json({**report.view(), "target": target.view()})
        return
    _show(out, report, conf.queue)


def _show(out: Printer, report: ReplayReport, work_queue: str) -> None:
    from shared.replay import ReplayOutcome

    counts = report.counts()
    would = report.listed(ReplayOutcome.REPLAYED)
    if report.dry_run and would:
        out.rows(["messageId", "source", "externalId", "op", "eventTime", "parkedAt", "lastError"], _rows(would))
    for item in report.listed(ReplayOutcome.UNREPLAYABLE):
        out.note(f"unreplayable {item.message_id} (parked {_when(item.parked_at)}): {item.reason}")
    verb = "would replay" if report.dry_run else "replayed"
    out.line(
        f"{verb} {counts['replayed']}, skipped {counts['skipped']} (filter), unreplayable {counts['unreplayable']}: "
        f"{report.queue} -> {work_queue}" + (" (dry run: nothing moved)" if report.dry_run else "")
    )
    if not report.complete:
        out.note("stopped at --limit: more parked commands may match; run again for the rest")


def _when(value: datetime | None) -> str:
    return value.isoformat() if value else "at an unknown time"


def _rows(items: list[ReplayItem]) -> list[list[object]]:
    rows: list[list[object]] = []
    for item in items:
        command = item.command
        if command is None:
            continue
        error = command.last_error
        reason = f"{error.kind} {error.status or ''} {error.code or ''}".strip() if error else ""
        rows.append(
            [
                item.message_id,
                command.source,
                command.external_id,
                command.op,
                command.event_time.isoformat(),
                _when(item.parked_at),
                reason,
            ]
        )
    return rows


TENANT_OPTION = [
    shared_option(
        "--tenant-id",
        "tenant_id",
        help="The deployment's tenant (VIVA_APP_TENANT_ID), for sources without tenantId; env VLSYNC_TENANT_ID, "
        "VIVA_APP_TENANT_ID.",
    ),
]


@replay.command(
    "archive",
    epilog=example(
        "vlsync replay archive --since 2026-11-27T10:00:00Z --until 2026-11-27T11:00:00Z --dry-run",
        "az functionapp config appsettings list -g RG -n APP --query \"[?name=='SOURCES'].value\" -o tsv >sources.json",
        "vlsync replay archive --sources @sources.json --source lms-a \\",
        "  --since 2026-11-27T10:00:00Z --until 2026-11-27T11:00:00Z",
        more="Reads the deliveries the event archive received in [--since, --until), derives their commands again "
        "with today's sources and normalisers (SOURCES: the app's setting) and sends them to <queue>, with their "
        "original sourceEventId and eventTime: the worker's ledger skips what is already applied or older. Counts "
        "the deliveries read: derived, noCommands, duplicate (a redelivery: its first delivery is replayed), "
        "unknownSource (no longer configured), redacted (the archive masked part of the content) and invalid "
        "(today's rules refuse it); and the commands enqueued. Safe to run twice.",
    ),
)
@click.option("--since", required=True, callback=rfc3339, help="Deliveries received at or after this RFC 3339 time.")
@click.option("--until", required=True, callback=rfc3339, help="Deliveries received before this RFC 3339 time.")
@click.option("--source", help="Only the deliveries of this webhook source.")
@click.option(
    "--sources",
    "sources_json",
    metavar="JSON|@FILE",
    help="The app's SOURCES setting (JSON, or @ and a file holding it); env SOURCES. Secrets are not needed.",
)
@click.option(
    "--archive-container",
    "archive_container",
    help="The archive's blob container; env EVENT_ARCHIVE_CONTAINER [event-archive].",
)
@click.option("--limit", type=click.IntRange(min=1), help="Read at most this many deliveries (then: run again).")
@click.option("--dry-run", "dry_run", is_flag=True, help="List the commands it would enqueue; enqueue nothing.")
@options(OUTPUT_OPTIONS, STORAGE_OPTIONS, TENANT_OPTION)
def archive(
    since: datetime,
    until: datetime,
    source: str | None,
    sources_json: str | None,
    archive_container: str | None,
    limit: int | None,
    dry_run: bool,
) -> None:
    """Derive the commands of archived deliveries again and send them to the work queue."""
    from shared.archive import ArchiveUnreadable
    from shared.replay import ArchiveWindow, replay_archive
    from vlsync import storage
    from vlsync.operations import Target, storage_account

    try:
        window = ArchiveWindow(since, until, source)
    except ValueError as exc:
        raise click.UsageError(f"--since/--until: {exc}") from None
    conf, out = config(), printer()
    app = checked(lambda: archive_settings(conf, sources_json, archive_container))
    queue = checked(lambda: storage.command_queue(conf))
    reader = checked(lambda: storage.opened(conf, lambda _: event_archive(app)))
    account = storage_account(conf.storage_connection_string, conf.storage_account)
    target = Target("not called (the function app's worker pushes)", "any", account, tenant=app.tenant_id or "any")
    announce(out, target)
    replaying = asyncio.to_thread(
        replay_archive, reader, queue, app, window, queue_name=app.content_queue_name, dry_run=dry_run, limit=limit
    )
    try:
        report = run(replaying)
    except ArchiveUnreadable as exc:  # the archive's reader stops at such a blob rather than skip what it holds
        raise Failure(f"archive: a blob is not an archived delivery ({exc}); the replay stopped there") from None
    if out.as_json:
        out.json({**report.view(), "target": target.view()})
        return
    _show_archive(out, report)


def archive_settings(conf: CliConfig, sources_json: str | None, container: str | None) -> Settings:
    """The app's settings a replay of the archive needs: its storage, SOURCES, the archive's container and
    the deployment's tenant, each from its option, the environment or the env file, by the app's names."""
    import os

    from shared.settings import SourcesError
    from vlsync import envfile, storage
    from vlsync.config import ConfigError, _app_name

    base = storage.settings(conf)
    file_values = envfile.read(conf.env_file) if conf.env_file else {}

    def pick(field: str, given: str | None) -> str | None:
        name = _app_name(field)
        return given or os.environ.get(name) or file_values.get(name) or None

    text = pick("sources_json", sources_json)
    if not text:
        raise ConfigError("no SOURCES: give --sources (the app's SOURCES setting, JSON or @FILE) or set SOURCES")
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--sources {text}: {exc.strerror or exc}") from None
    account = conf.storage_account
    updates: dict[str, Any] = {
        "sources_json": text,
        "event_archive_container": pick("event_archive_container", container) or base.event_archive_container,
        "tenant_id": conf.require_tenant() if conf.tenant_id else None,
    }
    if account:
        updates["storage_blob_service_uri"] = f"https://{account}.blob.core.windows.net"
    app = base.model_copy(update=updates)
    try:
        configured = app.sources()
    except SourcesError as exc:
        raise ConfigError(f"SOURCES is invalid: {exc}") from None
    if app.tenant_id is None and any(s.tenant_id is None for s in configured.values()):
        raise ConfigError(
            "no tenant id: sources without tenantId belong to the deployment's tenant; give --tenant-id or set "
            "VIVA_APP_TENANT_ID"
        )
    return app


def event_archive(app: Settings) -> EventArchive:
    """The archive container, whether or not the app still archives (its retention setting)."""
    from azure.storage.blob import BlobServiceClient

    from shared import storage
    from shared.archive import CLIENT_OPTIONS, EventArchive

    service = storage.open_client(BlobServiceClient, app.storage("blob"), **CLIENT_OPTIONS)
    return EventArchive(service.get_container_client(app.event_archive_container))


def _show_archive(out: Printer, report: ArchiveReport) -> None:
    from shared.replay import ArchiveOutcome

    counts = report.counts()
    derived = report.listed(ArchiveOutcome.DERIVED)
    if report.dry_run and derived:
        out.rows(
            ["receivedAt", "source", "externalId", "op", "eventTime", "sourceEventId", "registrationId"],
            _archive_rows(derived),
        )
    for item in report.listed(ArchiveOutcome.UNKNOWN_SOURCE, ArchiveOutcome.REDACTED, ArchiveOutcome.INVALID):
        title = f"{item.problem}: " if item.problem else ""
        out.note(
            f"{item.outcome.value} {item.source} received {item.received_at.isoformat()} "
            f"(correlation {item.correlation_id}): {title}{item.detail}"
        )
    verb = "would enqueue" if report.dry_run else "enqueued"
    out.line(
        f"{verb} {counts['enqueued']} command(s) from {counts['derived']} of {counts['read']} archived deliveries; "
        f"no commands {counts['noCommands']}, duplicate {counts['duplicate']}, unknown source "
        f"{counts['unknownSource']}, redacted {counts['redacted']}, invalid {counts['invalid']}: "
        f"archive -> {report.queue}" + (" (dry run: nothing enqueued)" if report.dry_run else "")
    )
    if not report.complete and report.next_since is not None:
        out.note(f"stopped at --limit: run again with --since {report.next_since.isoformat()} for the rest")


def _archive_rows(items: list[ArchivedItem]) -> list[list[object]]:
    return [
        [
            item.received_at.isoformat(),
            command.source,
            command.external_id,
            command.op,
            command.event_time.isoformat(),
            command.source_event_id,
            command.registration_id,
        ]
        for item in items
        for command in item.commands
    ]
