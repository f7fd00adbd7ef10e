"""``vlsync status``: the function app's queues, oldest waiting command, last success and failure per
source, and the circuit state (``shared.status``, the same report as ``GET /api/health/details``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from vlsync.app import OUTPUT_OPTIONS, STORAGE_OPTIONS, checked, cli, config, example, options, printer, run
from vlsync.output import Printer

if TYPE_CHECKING:  # loaded when a command runs
    from shared.status import StatusReport


@cli.command(
    "status",
    epilog=example(
        "vlsync status",
        "vlsync --json status | jq -r .status",
        more="up or degraded: degraded while <queue>-poison holds any message, or while the oldest visible "
        "command in <queue> has waited more than 15 minutes (held commands do not count). Last success per "
        "source comes from the ledger (pushes in the last 24 h, a bounded scan), last failure from the "
        "first 32 parked commands; docs/cli.md says what each can miss. Read only.",
    ),
)
@options(OUTPUT_OPTIONS, STORAGE_OPTIONS)
def status() -> None:
    """Health of the function app's pipeline, read from its storage."""
    from shared import status as app_status
    from vlsync import storage

    conf, out = config(), printer()
    queue = checked(lambda: storage.command_queue(conf))
    app_settings = checked(lambda: storage.settings(conf))
    table = checked(lambda: storage.opened(conf, app_status.ledger_table))
    sources = app_status.configured_sources(app_settings)
    report = run(asyncio.to_thread(app_status.collect, queue, table, sources))
    if out.as_json:
        out.json(report.view())
        return
    _show(out, report)


def _show(out: Printer, report: StatusReport) -> None:
    view = report.view()
    out.line(f"status: {view['status']}")
    for reason in view["reasons"]:
        out.line(f"  - {reason}")
    out.rows(
        ["queue", "name", "messages (approx.)", "oldest visible", "age (s)"],
        [
            [role, q["name"], q["approximateCount"], q["oldestVisibleAt"], q["oldestAgeSeconds"]]
            for role, q in view["queues"].items()
        ],
    )
    if view["sources"]:
        out.rows(
            ["source", "configured", "last success", "last failure", "kind", "parked (seen)"],
            [
                [
                    s["source"],
                    s["configured"],
                    s["lastSuccess"],
                    s["lastFailure"],
                    s["lastFailureKind"],
                    s["parkedSeen"],
                ]
                for s in view["sources"]
            ],
        )
    scan = view["ledgerScan"]
    out.line(
        f"ledger scan: pushes of the last {scan['windowHours']:g} h, {scan['rowsRead']} row(s) read"
        + ("" if scan["complete"] else " (incomplete: bounded scan)")
        + (f"; error: {scan['error']}" if scan.get("error") else "")
    )
    poison = view["poisonScan"]
    if not poison["complete"]:
        out.line(f"last failures from the first {poison['peeked']} of ~{poison['approximateCount']} parked command(s)")
    out.line(f"circuit: {view['circuit']}")
    for item in view.get("needsRepair") or []:
        out.line(
            f"needs repair: {item['externalId']} (registration {item['registrationId']}): Graph may hold an older "
            "state; apply its newest event again (vlsync replay archive over its time, or vlsync content upsert)"
        )
