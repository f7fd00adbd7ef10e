"""``vlsync backfill`` (load a whole catalog into Graph, resumable) and ``vlsync reconcile`` (make Graph
equal the catalog). The work is in ``shared.backfill`` and ``shared.reconcile``; this parses and prints."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
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
    config,
    example,
    graph,
    options,
    printer,
    run,
    write_target,
)
from vlsync.output import Printer

if TYPE_CHECKING:  # loaded when a command runs
    from shared.backfill import ChunkPusher, Tally
    from shared.catalog import CatalogFormat, Record
    from shared.graph import GraphClient
    from shared.graph_batch import BatchWriter
    from shared.ledger import Ledger
    from shared.lms_catalog import Listing as LmsListing
    from shared.ratebudget import SharedWriteBudget
    from shared.reconcile import Plan
    from shared.settings import LmsSource
    from vlsync.config import CliConfig

SHOWN = 20  # items listed per kind in the human diff; --json lists all
# The longest wait for the shared write budget inside one call: a CLI run has no queue to carry a
# wait, so it may wait long; each push's own deadline still bounds it.
BUDGET_WAIT_SECONDS = 600.0

FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["ndjson", "csv"]),
    help="Input format [from the file name: .csv, else .ndjson/.jsonl/.json].",
)
AS_OF_OPTION = click.option(
    "--as-of",
    help="When the export was taken (RFC 3339): the event time of records without lastModifiedDateTime, and "
    "of reconcile's removals [the file's modification time, with a warning: a copied file's is later than "
    "the export, and webhook events in between would lose]. A webhook event newer than it is never overwritten.",
)
WRITER_OPTIONS = [
    click.option(
        "--concurrency",
        type=click.IntRange(1, 32),
        default=4,
        show_default=True,
        help="Graph $batch requests in flight (and ledger chunks of up to 100 items).",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(1, 20),
        default=20,
        show_default=True,
        help="Upserts per $batch request (Graph's limit is 20).",
    ),
]


def _as_of(value: str | None, path: Path, out: Printer | None = None) -> datetime:
    from shared.models import parse_rfc3339

    if value is None:
        when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if out is not None:
            out.note(
                f"note: no --as-of: using the file's modification time {when.isoformat()}; if the file was "
                "copied or edited after the export, give --as-of the export's time, else webhook events "
                "between the two lose to the export's older state"
            )
        return when
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} {exc}", param_hint="--as-of") from None


def _as_of_now(value: str | None) -> datetime:
    """An LMS's list is its state now: the event time of its courses without lastModifiedDateTime."""
    from shared.models import parse_rfc3339

    if value is None:
        return datetime.now(UTC)
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} {exc}", param_hint="--as-of") from None


@dataclass(frozen=True)
class _LmsCatalog:
    """``--source NAME``: one source of the app's SOURCES, read from its LMS's list API."""

    name: str
    source: LmsSource
    request_timeout: float

    def input(self) -> dict[str, Any]:
        """What the checkpoint records of it: which catalog it lists (``shared.checkpoint.source_input``)."""
        from shared.checkpoint import source_input
        from shared.lms_catalog import canvas_account
        from shared.settings import CanvasSource

        identity: dict[str, Any] = {"kind": self.source.kind, "apiBaseUrl": getattr(self.source, "api_base_url", None)}
        if isinstance(self.source, CanvasSource):
            identity["account"] = canvas_account(self.source)
        return source_input(self.name, identity)

    @asynccontextmanager
    async def listing(self, page_size: int) -> AsyncIterator[tuple[LmsListing, AsyncIterator[Record]]]:
        import httpx

        from shared.lms import Paging
        from shared.lms_catalog import Listing, SourceUnusable, lister_for, records

        async with httpx.AsyncClient() as http:
            try:
                lister = lister_for(http, self.name, self.source, self.request_timeout)
            except SourceUnusable as exc:
                raise Failure(str(exc)) from None
            listing = Listing(Paging(page_size=page_size))
            yield listing, records(lister, self.source, listing)


def _lms_source(conf: CliConfig, name: str) -> _LmsCatalog:
    """Source ``name`` of the app's SOURCES, from the environment or the env file (the app's setting name)."""
    import os

    from shared.settings import LmsSource, SourcesError, parse_sources
    from vlsync import envfile
    from vlsync.config import _app_name

    setting = _app_name("sources_json")
    file_values = envfile.read(conf.env_file) if conf.env_file else {}
    text = os.environ.get(setting) or file_values.get(setting)
    if not text:
        raise click.UsageError(f"--source needs the app's {setting} setting in the environment (or the env file)")
    try:
        sources = parse_sources(text)
    except SourcesError as exc:
        raise Failure(f"{setting} is invalid: {exc}") from None
    source = sources.get(name)
    if source is None:
        raise click.UsageError(
            f"--source {name!r} is not in {setting} (it has: {', '.join(sorted(sources)) or 'none'})"
        )
    if not isinstance(source, LmsSource):
        raise click.UsageError(f"--source {name!r} is a {source.kind} source, which has no LMS list API")
    return _LmsCatalog(name, source, conf.timeout_seconds)


def _dry_run_source(out: Printer, lms: _LmsCatalog, page_size: int) -> None:
    from shared.backfill import Tally
    from shared.lms import LmsError

    async def read() -> tuple[Tally, int, dict[str, Any]]:
        tally, valid = Tally(), 0
        async with lms.listing(page_size) as (listing, stream):
            async for record in stream:
                if record.content is None:
                    tally.problem(record)
                else:
                    valid += 1
        return tally, valid, listing.view()

    try:
        tally, valid, listed = run(read())
    except LmsError as exc:
        raise Failure(f"stopped: {exc}") from None
    view = {"valid": valid, "invalid": tally.invalid, "problems": [p.view() for p in tally.problems], "dryRun": True,
            "source": {"name": lms.name, **listed}}  # fmt: skip
    if tally.invalid:
        raise Failure(f"{tally.invalid} invalid course(s), {valid} valid; nothing was sent", view)
    if out.as_json:
        out.json(view)
    else:
        out.line(f"{valid} valid course(s) in source {lms.name}; nothing was sent (--dry-run)")


def _format(path: Path, fmt: str | None) -> CatalogFormat:
    from shared.catalog import CatalogUnreadable, format_of

    try:
        return format_of(path, fmt)  # type: ignore[arg-type]
    except CatalogUnreadable as exc:
        raise click.UsageError(str(exc)) from None


def _records(path: Path, fmt: CatalogFormat) -> Callable[[], Iterator[Record]]:
    from shared.catalog import read_file

    return lambda: read_file(path, fmt)


def _line_count(path: Path) -> int:
    """Lines in the file, read in blocks (the progress bar's total; memory stays flat)."""
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


def _ledger(conf: CliConfig, what: str) -> Ledger:
    from vlsync import storage

    if not conf.storage_configured:
        raise click.UsageError(
            f"{what} takes each item's lease in the ledger, so it needs the app's storage: "
            "give --storage-connection-string (or LearningSyncStorage) or --storage-account"
        )
    return checked(lambda: storage.ledger(conf))


def _budget(conf: CliConfig, registration_id: str) -> SharedWriteBudget | None:
    """The registration's shared write budget (``GRAPH_WRITE_*``, as the app reads them), the one the
    worker spends from: a run of the CLI and the worker together stay within one rate. ``None`` when
    GRAPH_WRITE_RATE_PER_SECOND is 0."""
    from shared.ratebudget import RateBudgets
    from vlsync import storage

    tenant = checked(conf.require_tenant)

    def build(settings: Any) -> RateBudgets | None:
        home = settings.model_copy(update={"tenant_id": tenant})
        return RateBudgets.from_settings(home, max_wait_seconds=BUDGET_WAIT_SECONDS)

    budgets = checked(lambda: storage.opened(conf, build))
    return budgets.for_registration(tenant, registration_id) if budgets is not None else None


def _chunk_size(budget: SharedWriteBudget | None, client: GraphClient, in_flight: int) -> int:
    """Items per ledger chunk: 100, or fewer when the budget could not send the chunks in flight within a
    push's deadline (an item waiting past it fails and is sent again by the next run)."""
    from shared.ledger import MAX_TRANSACTION_OPERATIONS
    from vlsync import operations

    if budget is None:
        return MAX_TRANSACTION_OPERATIONS
    deadline = operations.push_timing_of(client).deadline_seconds
    # Half the deadline's worth of the budget's rate: room for retries and for the worker's own writes.
    sendable = int(budget.policy.ceiling * deadline / 2) + budget.burst
    return max(1, min(MAX_TRANSACTION_OPERATIONS, sendable // max(1, in_flight)))


def _pusher(
    client: GraphClient, ledger: Ledger, writer: BatchWriter, registration_id: str, now: Callable[[], datetime]
) -> ChunkPusher:
    from shared.backfill import ChunkPusher
    from vlsync import operations

    return ChunkPusher(
        client,
        ledger,
        writer,
        registration_id,
        timing=operations.push_timing_of(client),
        clock=now,
        busy=operations.busy_wait(),
    )


def _writer(client: GraphClient, out: Printer, concurrency: int, batch_size: int) -> BatchWriter:
    from shared.graph_batch import BatchWriter

    def fell_back(why: str) -> None:
        out.note(f"note: Graph refused $batch for these calls ({why}); sending single requests for the rest of the run")

    return BatchWriter(
        client,
        batch_size=batch_size,
        concurrency=concurrency,
        single_concurrency=concurrency * batch_size,
        on_fallback=fell_back,
    )


def _rate_column() -> Any:
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second, over rich's recent-speed window."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} items/s" if speed else "- items/s")

    return RateColumn()


class _Bar:
    """The progress bar on stderr (rate and ETA), shown only on a terminal."""

    def __init__(self, out: Printer, total: int | None, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            _rate_column(),
            TimeRemainingColumn(),
            console=out.err,
            disable=not out.err.is_terminal,
        )
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, tally: Tally) -> None:
        self._progress.update(self._task, completed=tally.finished)


def _summary_lines(out: Printer, view: dict[str, Any]) -> None:
    for failure in view["failures"][:SHOWN]:
        out.note(
            f"  line {failure['line']}: {failure['externalId']}: "
            f"{failure['status']} {failure['code']}: {failure['message']}"
        )
    for problem in view["problems"][:SHOWN]:
        out.note(f"  line {problem['line']}: {problem['pointer'] or '(item)'}: {problem['message']}")


# -- backfill --------------------------------------------------------------------------------------------


@cli.command(
    "backfill",
    epilog=example(
        "vlsync backfill catalog.ndjson",
        "vlsync backfill catalog.csv --concurrency 8",
        "vlsync backfill catalog.ndjson --limit 1000        # a trial: the first 1,000, then stop",
        "vlsync backfill catalog.ndjson --dry-run           # validate only",
        "vlsync backfill --source canvas                    # the LMS's whole catalog, from its list API",
        more="--source NAME lists the courses of SOURCES' source NAME (canvas, moodle, openedx, thinkific with "
        "apiBaseUrl; its apiSecretSetting read from the environment) page by page, mapped as fetch-back maps them "
        "(checkpoint: source-NAME.checkpoint.json). "
        "Streams the file (NDJSON, or CSV with property names as columns and list properties "
        "';'-separated), 20 upserts per Graph $batch, each item under its ledger lease. Interrupted, it "
        "resumes from its checkpoint (FILE.checkpoint.json) and re-sends nothing that finished. An item "
        "whose lastModifiedDateTime (else --as-of) is older than an event the ledger holds is skipped. "
        "docs/cli.md has the details.",
    ),
)
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--source",
    "source_name",
    metavar="NAME",
    help="Instead of FILE: the source NAME of the app's SOURCES (env SOURCES), read from its LMS's list API.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, 100),
    default=100,
    show_default=True,
    help="With --source: courses per LMS page (Moodle lists all at once).",
)
@FORMAT_OPTION
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint file [FILE.checkpoint.json, or source-NAME.checkpoint.json with --source].",
)
@click.option("--restart", is_flag=True, help="Ignore (and overwrite) the checkpoint: start from the first line.")
@AS_OF_OPTION
@click.option(
    "--on-invalid",
    type=click.Choice(["continue", "stop"]),
    default="continue",
    show_default=True,
    help="An invalid record: report it and go on, or stop there (exit 1 either way).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Process at most this many records not yet done, then stop.")
@click.option("--dry-run", is_flag=True, help="Read and validate the file; send nothing, write nothing.")
@options(WRITER_OPTIONS, OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)
def backfill(
    file: Path | None,
    source_name: str | None,
    page_size: int,
    fmt: str | None,
    checkpoint_path: Path | None,
    restart: bool,
    as_of: str | None,
    on_invalid: str,
    limit: int | None,
    dry_run: bool,
    concurrency: int,
    batch_size: int,
) -> None:
    """Load a whole catalog (NDJSON or CSV, or an LMS source's list API) into a registration, resumably."""
    from shared import backfill as engine
    from shared.checkpoint import Checkpoint, CheckpointMismatch, default_path, default_source_path
    from shared.lms import LmsError

    conf, out = config(), printer()
    if (file is None) == (source_name is None):
        raise click.UsageError("give FILE or --source NAME (one of them)")
    lms = _lms_source(conf, source_name) if source_name is not None else None
    catalog_format = _format(file, fmt) if file is not None else None
    if dry_run:
        if lms is not None:
            _dry_run_source(out, lms, page_size)
        else:
            assert file is not None
            assert catalog_format is not None
            _dry_run(out, file, catalog_format)
        return
    registration_id = checked(conf.require_registration)
    ledger = _ledger(conf, "backfill")
    if lms is not None:
        checkpoint_file = checkpoint_path or default_source_path(lms.name, Path.cwd())
        recorded: Path | dict[str, Any] = lms.input()
    else:
        assert file is not None
        checkpoint_file, recorded = checkpoint_path or default_path(file), file
    target = write_target(conf, registration_id, storage=True)
    try:
        checkpoint = Checkpoint.open(checkpoint_file, recorded, target=target.view(), restart=restart)
    except CheckpointMismatch as exc:
        raise Failure(str(exc)) from None
    if as_of or "asOf" not in checkpoint.extra:
        when = _as_of(as_of, file, out) if file is not None else _as_of_now(as_of)
    else:
        when = datetime.fromisoformat(checkpoint.extra["asOf"])
    checkpoint.extra["asOf"] = when.isoformat()
    resumed = checkpoint.done.count()
    if resumed and lms is None:
        out.note(f"resuming from {checkpoint_file}: {resumed} line(s) done (first {checkpoint.done.prefix()} in a row)")
    elif resumed and lms is not None:
        out.note(
            f"resuming from {checkpoint_file}: listing {lms.name} again; the {resumed} course(s) pushed before "
            "are judged by the ledger and not sent again"
        )
    total = _line_count(file) if file is not None else None
    budget = _budget(conf, registration_id)
    listing: LmsListing | None = None

    async def go() -> tuple[Tally, dict[str, Any], float, engine.RunStopped | None]:
        nonlocal listing
        from vlsync import operations

        async with graph("content", conf, out, target=target) as plain:
            checkpoint.bind(target.view())  # the token named the tenant: a checkpoint of another is refused
            client = plain.with_budget(budget)
            clock = await operations.graph_clock(client, registration_id)
            async with _writer(client, out, concurrency, batch_size) as writer:
                runner = engine.Backfill(
                    _pusher(client, ledger, writer, registration_id, clock.now),
                    checkpoint,
                    when,
                    chunk_size=_chunk_size(budget, client, concurrency),
                    in_flight=concurrency,
                    on_invalid=on_invalid,  # type: ignore[arg-type]
                    limit=limit,
                    skip_done_lines=lms is None,
                )
                started = time.monotonic()
                stopped: engine.RunStopped | None = None
                with _Bar(out, total, "backfill") as bar:
                    runner.progress = bar.update
                    try:
                        if lms is not None:
                            async with lms.listing(page_size) as (listing, stream):
                                tally = await runner.run(stream)
                        else:
                            assert file is not None
                            assert catalog_format is not None
                            tally = await runner.run(_records(file, catalog_format)())
                    except engine.RunStopped as exc:
                        tally, stopped = runner.tally, exc
                if runner.stopped_at is not None:
                    out.note(f"stopped at line {runner.stopped_at.line} (--on-invalid stop)")
                return tally, writer.stats.view(), time.monotonic() - started, stopped

    try:
        tally, requests, elapsed, stopped = run(go())
    except CheckpointMismatch as exc:
        raise Failure(str(exc)) from None
    except LmsError as exc:  # the LMS failed for good, or kept failing: what finished is in the checkpoint
        raise Failure(
            f"stopped: {exc} (run it again to resume from {checkpoint_file})",
            {"checkpoint": str(checkpoint_file), "doneLines": checkpoint.done.count()},
        ) from None
    sent = tally.pushed + tally.failed + tally.lost
    summary = {
        "registrationId": registration_id,
        **tally.view(),
        "graphRequests": requests,
        "elapsedSeconds": round(elapsed, 3),
        "itemsPerSecond": round(sent / elapsed, 1) if elapsed > 0 else None,
        "asOf": when.isoformat(),
        "checkpoint": str(checkpoint_file),
        "doneLines": checkpoint.done.count(),
        "target": target.view(),
    }
    if lms is not None and listing is not None:
        summary["source"] = {"name": lms.name, **listing.view()}
    if stopped is not None:
        raise Failure(str(stopped), summary)
    _finish(out, summary, f"backfilled {tally.pushed} item(s) into registration {registration_id}")


def _finish(out: Printer, summary: dict[str, Any], line: str) -> None:
    bad = summary["failed"] + summary["invalid"] + summary["busy"]
    if bad:
        if not out.as_json:
            _summary_lines(out, summary)
        raise Failure(
            f"{summary['failed']} failed, {summary['busy']} busy, {summary['invalid']} invalid; "
            f"{summary['pushed']} pushed (run it again to retry what failed or was busy)",
            summary,
        )
    if out.as_json:
        out.json(summary)
        return
    out.line(line)
    out.line(
        f"skipped {summary['skippedStale']} (the ledger holds a newer event), {summary['alreadyDone']} already done; "
        f"{summary['graphRequests']['batchRequests']} $batch and {summary['graphRequests']['singleRequests']} single "
        "request(s)" + (f"; {summary['itemsPerSecond']} items/s" if summary.get("itemsPerSecond") else "")
    )


def _dry_run(out: Printer, file: Path, fmt: CatalogFormat) -> None:
    from shared.backfill import Tally
    from shared.catalog import CatalogUnreadable, read_file

    tally = Tally()
    valid = 0
    try:
        for record in read_file(file, fmt):
            if record.content is None:
                tally.problem(record)
            else:
                valid += 1
    except CatalogUnreadable as exc:
        raise Failure(str(exc)) from None
    view = {"valid": valid, "invalid": tally.invalid, "problems": [p.view() for p in tally.problems], "dryRun": True}
    if tally.invalid:
        raise Failure(
            f"{tally.invalid} invalid record(s), {valid} valid; nothing was sent",
            {"lines": [str(p) for p in tally.problems[:SHOWN]], **view},
        )
    if out.as_json:
        out.json(view)
    else:
        out.line(f"{valid} valid record(s); nothing was sent (--dry-run)")


# -- reconcile -------------------------------------------------------------------------------------------


@cli.command(
    "reconcile",
    epilog=example(
        "vlsync reconcile catalog.ndjson                  # print the diff",
        "vlsync reconcile catalog.ndjson --apply          # create, update, deactivate",
        "vlsync reconcile catalog.csv --apply --delete    # delete what the catalog lacks",
        more="Lists the registration's content in Graph and compares the managed properties, normalised "
        "(absent = default, date-times as instants), with the catalog. Items in Graph but not in the file "
        "are deactivated (isActive=false) or, with --delete, deleted. Items the ledger marks needsRepair "
        "are pushed again when the file has them. Writes go under each item's lease, like backfill.",
    ),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@FORMAT_OPTION
@click.option("--apply", "apply_", is_flag=True, help="Apply the diff (without it, only print it).")
@click.option("--delete", is_flag=True, help="Delete items the catalog lacks instead of deactivating them.")
@click.option(
    "--external-id-prefix",
    "prefix",
    default="",
    help="Only the registration's items whose externalId starts with this (a source's externalIdPrefix, in a "
    "registration several sources share); the file's ids must start with it too [the whole registration].",
)
@AS_OF_OPTION
@options(WRITER_OPTIONS, OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)
def reconcile(
    file: Path,
    fmt: str | None,
    apply_: bool,
    delete: bool,
    prefix: str,
    as_of: str | None,
    concurrency: int,
    batch_size: int,
) -> None:
    """Compare a registration's content with the catalog; --apply makes Graph equal it."""
    from shared import reconcile as engine
    from shared.backfill import RunStopped
    from shared.catalog import CatalogUnreadable

    conf, out = config(), printer()
    catalog_format = _format(file, fmt)
    registration_id = checked(conf.require_registration)
    ledger = _ledger(conf, "reconcile") if apply_ or conf.storage_configured else None
    if ledger is None:
        out.note("ledger not configured: items marked needsRepair are not known (give --storage-connection-string)")
    removal: engine.Removal = "delete" if delete else "deactivate"
    when = _as_of(as_of, file, out if apply_ else None)
    records = _records(file, catalog_format)
    target = write_target(conf, registration_id, storage=ledger is not None)
    budget = _budget(conf, registration_id) if apply_ else None

    async def go() -> tuple[Plan, Tally | None, dict[str, Any] | None]:
        import asyncio

        from vlsync import operations

        async with graph("content", conf, out, target=target if apply_ else None) as plain:
            client = plain.with_budget(budget)
            marked: Iterable[str] = []
            if ledger is not None:
                marked = [row["externalId"] for row in await asyncio.to_thread(ledger.needs_repair, registration_id)]
            diff = await engine.plan(records, client, registration_id, marked, removal=removal, prefix=prefix)
            if not apply_:
                return diff, None, None
            assert ledger is not None
            clock = await operations.graph_clock(client, registration_id)
            async with _writer(client, out, concurrency, batch_size) as writer:
                applier = engine.Reconcile(
                    _pusher(client, ledger, writer, registration_id, clock.now),
                    when,
                    clock.now(),
                    in_flight=concurrency,
                )
                tally = await applier.apply(diff, records, removal)
                return diff, tally, writer.stats.view()

    try:
        diff, tally, requests = run(go())
    except (CatalogUnreadable, RunStopped) as exc:
        raise Failure(str(exc)) from None
    view: dict[str, Any] = {"registrationId": registration_id, "diff": diff.view(removal), "applied": None}
    if tally is not None:
        view["applied"] = {**tally.view(), "graphRequests": requests}
    if diff.invalid or (tally is not None and (tally.failed or tally.busy)):
        raise Failure(_reconcile_failure(diff, tally), view)
    if out.as_json:
        out.json(view)
        return
    _show_diff(out, diff, removal)
    if tally is not None:
        out.line(
            f"applied: {tally.pushed} pushed, {tally.stale} skipped (the ledger holds a newer event), "
            f"{tally.lost} lease lost"
        )


def _reconcile_failure(diff: Plan, tally: Tally | None) -> str:
    parts = [f"{diff.invalid} invalid record(s) in the catalog"] if diff.invalid else []
    if tally is not None and (tally.failed or tally.busy):
        parts.append(f"{tally.failed} failed and {tally.busy} busy item(s) while applying")
    return "; ".join(parts)


def _show_diff(out: Printer, diff: Plan, removal: str) -> None:
    verb = "deactivate" if removal == "deactivate" else "delete"
    sections: list[tuple[str, list[str]]] = [
        ("create", [e for _, e in diff.create]),
        ("update", [f"{e} ({', '.join(props)})" for _, e, props in diff.update]),
        (verb, [str(i["externalId"]) for i in diff.remove]),
        ("repair", [e for _, e in diff.repair]),
    ]
    for name, items in sections:
        out.line(f"to {name}: {len(items)}")
        for item in items[:SHOWN]:
            out.line(f"  {item}")
        if len(items) > SHOWN:
            out.line(f"  … and {len(items) - SHOWN} more (--json lists all)")
    out.line(f"unchanged: {diff.unchanged}")
    for external_id in diff.repair_missing:
        out.note(f"needs repair but not in the catalog: {external_id} (replay its newest event: vlsync replay archive)")
