"""``vlsync content …``: upsert, list, status, get and delete learning content (app-only token)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vlsync.app import (
    GRAPH_OPTIONS,
    OUTPUT_OPTIONS,
    REGISTRATION_OPTIONS,
    STORAGE_OPTIONS,
    Failure,
    checked,
    cli,
    comma_list,
    config,
    example,
    graph,
    invalid,
    options,
    printer,
    run,
    valid_id,
    write_target,
)
from vlsync.config import CliConfig
from vlsync.output import Printer

if TYPE_CHECKING:  # loaded when a command runs
    from shared.ledger import Ledger
    from vlsync.operations import BatchResult

LIST_COLUMNS = ("externalId", "title", "languageTag", "isActive", "id")
ITEMS_SHOWN_IN_FULL = 20


@cli.group(
    epilog=example(
        "vlsync content upsert courses.ndjson",
        "vlsync content status 'O''Brien/101'",
    )
)
def content() -> None:
    """Learning content of one registration. Writes need an APP-ONLY token with the
    LearningContent.ReadWrite.All application permission (the function app's managed identity has it)."""


def _ledger(conf: CliConfig) -> Ledger | None:
    from vlsync import storage

    return checked(lambda: storage.ledger(conf)) if conf.storage_configured else None


def _ledger_note(out: Printer, ledger: Ledger | None, what: str) -> None:
    if ledger is None:
        out.note(f"ledger not configured: {what} not recorded (give --storage-connection-string or --storage-account)")


FIRST = ("id", "externalId", "title")


def readable(item: dict[str, Any]) -> dict[str, Any]:
    """An item for people: id, externalId and title first, then the properties that are set."""
    shown = {k: item[k] for k in FIRST if k in item}
    shown.update({k: v for k, v in item.items() if k not in FIRST and not k.startswith("@") and v not in (None, [])})
    return shown


def when(value: str) -> str:
    """An ISO date-time from the ledger, for people: ``2026-11-27 10:39:54 UTC``."""
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _one_of(external_id: str | None, content_id: str | None) -> None:
    if (external_id is None) == (content_id is None):
        raise click.UsageError("give either EXTERNAL_ID or --id ID")


# -- upsert --------------------------------------------------------------------------------------------


@content.command(
    "upsert",
    epilog=example(
        "vlsync content upsert course.json                 # one object, or an array",
        "vlsync content upsert catalog.ndjson --concurrency 8",
        "cat catalog.ndjson | vlsync content upsert -",
        more="Every item is checked against the learningContent schema first (externalId, title, "
        "contentWebUrl, languageTag required; level beginner|intermediate|advanced; duration like PT45M; "
        "date-times with an offset). One invalid item means nothing is sent. Read-only id/@odata.* "
        "properties are ignored, so `vlsync --json content get` output can be edited and sent back.",
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Upserts in flight at once."
)
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)
def upsert(file: str, concurrency: int) -> None:
    """Create or replace learning content from a JSON or NDJSON file (or - for stdin)."""
    from vlsync import operations
    from vlsync.io import InvalidInput, read_items

    conf, out = config(), printer()
    registration_id = checked(conf.require_registration)
    text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    try:
        items = read_items(text)
    except InvalidInput as error:
        raise invalid(error) from None
    ledger = _ledger(conf)
    target = write_target(conf, registration_id, storage=ledger is not None)
    bodies = [item.content.to_graph() for item in items]
    if len(bodies) > ITEMS_SHOWN_IN_FULL:
        out.note(f"upserting {len(bodies)} item(s) into {registration_id}, {concurrency} at a time")

    async def go() -> BatchResult:
        async with graph("content", conf, out, target=target) as client:
            return await operations.upsert_all(
                client, registration_id, bodies, concurrency=concurrency, ledger=ledger, progress=out.note
            )

    outcome = run(go())
    summary = {
        "registrationId": registration_id,
        "upserted": len(outcome.done),
        "failed": outcome.failed,
        "recordedInLedger": ledger is not None,
        "items": outcome.done,
        "target": target.view(),
    }
    _ledger_note(out, ledger, "pushes")
    if outcome.failed:
        raise Failure(
            f"{len(outcome.failed)} of {len(bodies)} item(s) failed; {len(outcome.done)} upserted",
            {
                "lines": [f"{f['externalId']}: {f['status']} {f['code']}: {f['message']}" for f in outcome.failed],
                **summary,
            },
        )
    if out.as_json:
        out.json(summary)
        return
    if len(outcome.done) <= ITEMS_SHOWN_IN_FULL:
        for done in sorted(outcome.done, key=lambda d: d["externalId"]):
            out.line(f"upserted {done['externalId']} (id {done['id']})")
    out.line(f"upserted {len(outcome.done)} item(s) into registration {registration_id}")


# -- list ----------------------------------------------------------------------------------------------


@content.command(
    "list",
    epilog=example(
        "vlsync content list",
        "vlsync --json content list --select externalId,title > catalog.json",
        more="Follows @odata.nextLink to the last page, whatever the server's page size.",
    ),
)
@click.option("--top", type=click.IntRange(min=1), help="Page size hint ($top); every page is still fetched.")
@click.option("--select", help="Comma-separated properties to return ($select).")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, REGISTRATION_OPTIONS)
def list_(top: int | None, select: str | None) -> None:
    """List every learning content item of a registration."""
    conf, out = config(), printer()
    registration_id = checked(conf.require_registration)

    async def go() -> list[dict[str, Any]]:
        async with graph("content", conf, out) as client:
            return [i async for i in client.list_contents(registration_id, top=top, select=comma_list(select))]

    items = run(go())
    if out.as_json:
        out.json(items)
        return
    columns = comma_list(select) or list(LIST_COLUMNS)
    out.rows(columns, [[item.get(c) for c in columns] for item in items])
    out.line(f"{len(items)} item(s) in registration {registration_id}")


# -- status --------------------------------------------------------------------------------------------


@content.command(
    "status",
    epilog=example(
        "vlsync content status demo-course-101",
        more="Exists in Graph? Last push from the ledger (when, by whom: worker or cli, which op and source "
        "event). Viva Learning promises search within 24 hours of ingestion: 'searchable by' is the last "
        "push + 24 h.",
    ),
)
@click.argument("external_id", callback=valid_id)
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)
def status(external_id: str) -> None:
    """Whether an item exists in Graph, when it was last pushed, and when it becomes searchable."""
    from vlsync import operations

    conf, out = config(), printer()
    registration_id = checked(conf.require_registration)
    ledger = _ledger(conf)

    async def go() -> dict[str, Any]:
        async with graph("content", conf, out) as client:
            return await operations.content_status(client, registration_id, external_id, ledger)

    view = run(go())
    if out.as_json:
        out.json(view)
        return
    last = view["lastPush"] or {}
    rows: dict[str, Any] = {
        "externalId": external_id,
        "registration": registration_id,
        "in Graph": "yes" if view["existsInGraph"] else "no",
        "id": view["id"],
    }
    if view["existsInGraph"]:
        rows["isActive"] = view["isActive"]
        rows["isSearchable"] = view["isSearchable"]
    if view["ledger"] == "not configured":
        rows["last push"] = "unknown (ledger not configured: give --storage-connection-string or --storage-account)"
    elif not last:
        rows["last push"] = "none recorded"
    else:
        source = f"{last['source']} event {last['sourceEventId']}" if last.get("source") else "-"
        rows["last push"] = f"{last['op']} at {when(last['pushedAt'])} by {last['pushedBy']}"
        rows["source event"] = source
        rows["event time"] = when(last["eventTime"])
    if view["searchableBy"]:
        passed = "passed" if view["searchableByPassed"] else "not yet"
        rows["searchable by"] = f"{when(view['searchableBy'])} ({passed})"
    out.fields(rows)


# -- get / delete --------------------------------------------------------------------------------------


@content.command(
    "get",
    epilog=example(
        "vlsync content get demo-course-101",
        "vlsync content get --id 9f0c… --select title,isActive",
        'vlsync --json content get "O\'Brien/101"',
    ),
)
@click.argument("external_id", required=False, callback=valid_id)
@click.option("--id", "content_id", callback=valid_id, help="Graph's own id of the item, instead of EXTERNAL_ID.")
@click.option("--select", help="Comma-separated properties to return ($select).")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, REGISTRATION_OPTIONS)
def get(external_id: str | None, content_id: str | None, select: str | None) -> None:
    """Show one learning content item, by externalId or by --id."""
    _one_of(external_id, content_id)
    conf, out = config(), printer()
    registration_id = checked(conf.require_registration)

    async def go() -> dict[str, Any]:
        async with graph("content", conf, out) as client:
            if content_id is not None:
                return await client.get_content_by_id(registration_id, content_id, select=comma_list(select))
            assert external_id is not None
            return await client.get_content(registration_id, external_id, select=comma_list(select))

    item = run(go())
    if out.as_json:
        out.json(item)
    else:
        out.fields(readable(item))


@content.command(
    "delete",
    epilog=example("vlsync content delete demo-course-101", "vlsync content delete --id 9f0c…"),
)
@click.argument("external_id", required=False, callback=valid_id)
@click.option("--id", "content_id", callback=valid_id, help="Graph's own id of the item, instead of EXTERNAL_ID.")
@options(OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)
def delete(external_id: str | None, content_id: str | None) -> None:
    """Delete one learning content item, by externalId or by --id. Deleting what is not there is not an error."""
    from vlsync import operations

    _one_of(external_id, content_id)
    conf, out = config(), printer()
    registration_id = checked(conf.require_registration)
    ledger = _ledger(conf)
    target = write_target(conf, registration_id, storage=ledger is not None)

    async def go() -> tuple[str | None, bool, bool]:
        async with graph("content", conf, out, target=target) as client:
            return await operations.delete_one(
                client, ledger, registration_id, external_id=external_id, content_id=content_id
            )

    known_id, existed, recorded = run(go())
    _ledger_note(out, ledger, "the delete is")
    if ledger is not None and not recorded:
        out.note(f"id {content_id} is not in registration {registration_id}: its externalId is unknown, no tombstone")
    shown = external_id if content_id is None else f"id {content_id}"
    if out.as_json:
        out.json(
            {
                "registrationId": registration_id,
                "externalId": known_id,
                "id": content_id,
                "deleted": existed,
                "recordedInLedger": recorded,
                "target": target.view(),
            }
        )
    elif existed:
        out.line(f"deleted {shown} from registration {registration_id}")
    else:
        out.line(f"{shown} was not in registration {registration_id}: nothing to delete")
