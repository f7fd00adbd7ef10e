"""The reconcile timer's work (``handlers/reconcile.py``): for each source that ``RECONCILE_CATALOGS``
names, read its NDJSON catalog blob and make its registration in Graph equal it - the library code of
``vlsync reconcile --apply`` (``shared.reconcile``), under the same leases, through the same writer.

The catalog blob's ``Last-Modified`` is the run's ``as_of`` (the event time of records without
``lastModifiedDateTime``, and of removals): a webhook event after the export is never overwritten.
The blob is streamed, once per pass (the diff reads it twice, applying a third time), never held whole.
One source's failure is logged and the next source still runs; the run then fails as a whole, so the
invocation shows as failed.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.blob import BlobClient, BlobServiceClient

from shared.backfill import ChunkPusher, Tally
from shared.catalog import Record, records
from shared.graph import GraphClient, GraphError
from shared.graph_batch import BatchWriter
from shared.ledger import Ledger, LedgerConflict, push_timing
from shared.reconcile import Plan, Reconcile, plan
from shared.settings import CatalogBlob, Settings

logger = logging.getLogger(__name__)

PUSHED_BY = "reconcile"


class ReconcileFailed(Exception):
    """At least one source's reconcile failed (each is logged with its reason)."""


def blob_lines(blob: BlobClient) -> Iterator[str]:
    """The blob's text lines, downloaded in chunks and decoded as they come (UTF-8)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    for chunk in blob.download_blob().chunks():
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


@dataclass(frozen=True)
class SourceRun:
    source: str
    registration_id: str
    plan: Plan
    tally: Tally

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "registrationId": self.registration_id,
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
) -> SourceRun:
    config = settings.sources()[source]
    registration_id = config.registration_id
    tenant_ledger = ledger.for_tenant(config.tenant_id)
    tenant_graph = graph.for_tenant(config.tenant_id)
    blob = blobs.get_blob_client(catalog.container, catalog.name)
    as_of = _utc(blob.get_blob_properties().last_modified)

    def read() -> Iterator[Record]:
        return records(blob_lines(blob), "ndjson")

    marked = [row["externalId"] for row in tenant_ledger.needs_repair(registration_id)]
    diff = await plan(read, tenant_graph, registration_id, marked, removal=catalog.removal)
    timing = push_timing(settings.graph_timeout_seconds, settings.graph_max_inline_retry_seconds)
    async with BatchWriter(tenant_graph, on_fallback=lambda why: logger.warning("reconcile %s: %s", source, why)) as w:
        pusher = ChunkPusher(
            tenant_graph, tenant_ledger, w, registration_id, timing, clock, source=PUSHED_BY, pushed_by=PUSHED_BY
        )
        tally = await Reconcile(pusher, as_of, clock()).apply(diff, read, catalog.removal)
    return SourceRun(source, registration_id, diff, tally)


async def run(
    settings: Settings,
    graph: GraphClient,
    ledger: Ledger,
    blobs: BlobServiceClient,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
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
                source, catalog, settings=settings, graph=graph, ledger=ledger, blobs=blobs, clock=clock
            )
        except (AzureError, GraphError, LedgerConflict) as error:
            logger.error("reconcile %s from %s failed: %s: %s", source, catalog.blob, type(error).__name__, error)
            failed.append(source)
            continue
        logger.info("reconcile %s from %s: %s", source, catalog.blob, result.view())
        if result.tally.failed or result.tally.busy or result.plan.invalid:
            failed.append(source)
        done.append(result)
    if failed:
        raise ReconcileFailed(f"reconcile failed or left items for: {', '.join(failed)} (see the log above)")
    return done


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
