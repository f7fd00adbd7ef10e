"""The reconcile timer's work (``handlers/reconcile.py``): for each source that ``RECONCILE_CATALOGS``
names, read its NDJSON catalog blob and make its registration in Graph equal it - the library code of
``vlsync reconcile --apply`` (``shared.reconcile``), under the same leases, through the same writer.

The run's ``as_of`` (the event time of records without ``lastModifiedDateTime``, and of removals) is
the export's time, which the exporter writes into the blob's metadata as ``exportedAt`` (RFC 3339):
a webhook event after the export is then never overwritten, nor its item removed. Without it the
blob's ``Last-Modified`` is used, with a warning: that is when the blob was uploaded, later than the
export's snapshot, so a webhook event between the two loses to the export's older state (an update
is overwritten, an item created in between is deactivated or deleted).

The blob is downloaded once (in a thread) to a temporary file, so every pass (the diff reads it twice,
applying a third time) sees the same version and no blob I/O runs on the host's event loop; the
ledger's reads run in threads too. The passes read the file as a stream, never held whole.

Each source's diff is limited to its ``externalIdPrefix`` (``shared.reconcile``): the catalog's
``externalId`` values are Graph's (with the prefix), and a record without it is an invalid line. A
source without a prefix whose registration other sources share cannot tell its items from theirs:
its run removes nothing and fails, saying so.

Writes spend from the registration's shared write budget (``RateBudgets``, as the worker's do), so
the timer and the worker together stay within one rate.

One source's failure is logged and the next source still runs; the run then fails as a whole, so the
invocation shows as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.backfill import ChunkPusher, RunStopped, Tally
from shared.catalog import Record, read_file
from shared.graph import GraphClient, GraphError, WriteBudget
from shared.graph_batch import BatchWriter
from shared.ledger import Ledger, LedgerConflict, push_timing
from shared.models import parse_rfc3339
from shared.reconcile import Plan, Reconcile, plan
from shared.settings import CatalogBlob, Settings

logger = logging.getLogger(__name__)

PUSHED_BY = "reconcile"
EXPORTED_AT = "exportedAt"  # blob metadata: when the export's snapshot was taken (RFC 3339)


class Budgets(Protocol):
    """The shared write budgets (``shared.ratebudget.RateBudgets``)."""

    def for_registration(self, tenant_id: str | None, registration_id: str) -> WriteBudget: ...


class BadExportTime(ValueError):
    """The blob's ``exportedAt`` metadata is not an RFC 3339 time."""


class ReconcileFailed(Exception):
    """At least one source's reconcile failed (each is logged with its reason)."""


@dataclass(frozen=True)
class Downloaded:
    path: Path
    as_of: datetime
    as_of_from: str  # "exportedAt" or "Last-Modified"


def export_time(metadata: dict[str, str] | None, last_modified: datetime | None) -> tuple[datetime, str]:
    """The export's time: the ``exportedAt`` metadata, else the blob's ``Last-Modified`` (see the module)."""
    raw = {k.lower(): v for k, v in (metadata or {}).items()}.get(EXPORTED_AT.lower())
    if raw:
        try:
            return parse_rfc3339(raw), EXPORTED_AT
        except ValueError as exc:
            raise BadExportTime(
                f"the catalog blob's {EXPORTED_AT} metadata {raw!r} is not an RFC 3339 time: {exc}"
            ) from None
    return _utc(last_modified), "Last-Modified"


def download(blob: BlobClient, directory: str | None = None) -> Downloaded:
    """The blob in a temporary file (the caller deletes it), with its export time. Blocking: run it in
    a thread."""
    handle, name = tempfile.mkstemp(prefix="catalog-", suffix=".ndjson", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            stream = blob.download_blob()
            stream.readinto(file)
        properties = stream.properties
        as_of, source = export_time(properties.metadata, properties.last_modified)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Downloaded(Path(name), as_of, source)


@dataclass(frozen=True)
class SourceRun:
    source: str
    registration_id: str
    plan: Plan
    tally: Tally
    as_of: datetime | None = None

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "registrationId": self.registration_id,
            "asOf": self.as_of.isoformat() if self.as_of else None,
            "outsidePrefix": self.plan.outside_prefix,
            "removalRefused": self.plan.removal_refused,
            "create": len(self.plan.create),
            "update": len(self.plan.update),
            "remove": len(self.plan.remove),
            "repair": len(self.plan.repair),
            "repairMissing": self.plan.repair_missing,
            "invalid": self.plan.invalid,
            "pushed": self.tally.pushed,
            "skippedStale": self.tally.stale,
            "failed": self.tally.failed,
            "busy": self.tally.busy,
        }


async def reconcile_source(
    source: str,
    catalog: CatalogBlob,
    *,
    settings: Settings,
    graph: GraphClient,
    ledger: Ledger,
    blobs: BlobServiceClient,
    clock: Callable[[], datetime],
    budgets: Budgets | None = None,
) -> SourceRun:
    sources = settings.sources()
    config = sources[source]
    registration_id = config.registration_id
    prefix = str(getattr(config, "external_id_prefix", "") or "")
    sharing = sorted(
        name
        for name, other in sources.items()
        if name != source and other.registration_id == registration_id and other.tenant_id == config.tenant_id
    )
    may_remove = bool(prefix) or not sharing
    tenant_ledger = ledger.for_tenant(config.tenant_id)
    tenant_graph = graph.for_tenant(config.tenant_id)
    if budgets is not None:
        tenant_graph = tenant_graph.with_budget(budgets.for_registration(config.tenant_id, registration_id))
    blob = blobs.get_blob_client(catalog.container, catalog.name)
    downloaded = await asyncio.to_thread(download, blob)
    try:
        if downloaded.as_of_from != EXPORTED_AT:
            logger.warning(
                "reconcile %s: %s has no %s metadata; using its Last-Modified %s, the upload's time: webhook "
                "events between the export and the upload lose to the export's state",
                source,
                catalog.blob,
                EXPORTED_AT,
                downloaded.as_of.isoformat(),
            )

        def read() -> Iterator[Record]:
            return read_file(downloaded.path, "ndjson")

        marked = [row["externalId"] for row in await asyncio.to_thread(tenant_ledger.needs_repair, registration_id)]
        diff = await plan(
            read, tenant_graph, registration_id, marked, removal=catalog.removal, prefix=prefix, may_remove=may_remove
        )
        if diff.removal_refused:
            logger.error(
                "reconcile %s: %d item(s) not in the catalog were kept: the registration is shared with %s and "
                "this source has no externalIdPrefix to tell its items from theirs",
                source,
                diff.removal_refused,
                ", ".join(sharing),
            )
        timing = push_timing(settings.graph_timeout_seconds, settings.graph_max_inline_retry_seconds)

        def fell_back(why: str) -> None:
            logger.warning("reconcile %s: %s", source, why)

        async with BatchWriter(tenant_graph, on_fallback=fell_back) as writer:
            pusher = ChunkPusher(
                tenant_graph,
                tenant_ledger,
                writer,
                registration_id,
                timing,
                clock,
                source=PUSHED_BY,
                pushed_by=PUSHED_BY,
            )
            tally = await Reconcile(pusher, downloaded.as_of, clock()).apply(diff, read, catalog.removal)
    finally:
        with contextlib.suppress(OSError):
            downloaded.path.unlink()
    return SourceRun(source, registration_id, diff, tally, downloaded.as_of)


async def run(
    settings: Settings,
    graph: GraphClient,
    ledger: Ledger,
    blobs: BlobServiceClient,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    budgets: Budgets | None = None,
) -> list[SourceRun]:
    """Reconcile every configured catalog; ``[]`` when none is configured (the timer is off)."""
    catalogs = settings.reconcile_catalogs
    if not catalogs:
        logger.info("reconcile timer: RECONCILE_CATALOGS names no catalog; nothing to do")
        return []
    done: list[SourceRun] = []
    failed: list[str] = []
    for source, catalog in catalogs.items():
        try:
            result = await reconcile_source(
                source,
                catalog,
                settings=settings,
                graph=graph,
                ledger=ledger,
                blobs=blobs,
                clock=clock,
                budgets=budgets,
            )
        except (AzureError, GraphError, LedgerConflict, RunStopped, BadExportTime) as error:
            logger.error("reconcile %s from %s failed: %s: %s", source, catalog.blob, type(error).__name__, error)
            failed.append(source)
            continue
        logger.info("reconcile %s from %s: %s", source, catalog.blob, result.view())
        if result.tally.failed or result.tally.busy or result.plan.invalid or result.plan.removal_refused:
            failed.append(source)
        done.append(result)
    if failed:
        raise ReconcileFailed(f"reconcile failed or left items for: {', '.join(failed)} (see the log above)")
    return done


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
