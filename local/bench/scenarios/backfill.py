"""Backfill (issue 11, point 6): ``vlsync backfill`` of N items from NDJSON, run as a user runs it.

The CLI is its own process (its peak RSS is its own, from ``wait4``), against the Graph emulator at
40 ms per request with persistence on, Azurite as the ledger and the identity endpoint for the app's
sign-in (``cli_stack``). The write budget is set far above what the run can reach, so the figures are
the client's and the emulator's, not the budget's. Compared with the baselines measured earlier in the
same run (``ctx.results``).
"""

from __future__ import annotations

from ..catalog import write_catalog
from ..cli_stack import checked, cli_stack, run_backfill
from ..emulator import external_id
from ..report import Table, number, ratio
from ..scenario import Context, Scenario
from .baselines import CLIENTS, LATENCY_MS

# A budget that never limits: 10,000 writes/s is over ten times what this backfill reaches on 2 cores
# (about 750 items/s measured by hand), and a burst of 1,000 covers every batch in flight; no block limit.
UNLIMITED_BUDGET = {
    "GRAPH_WRITE_RATE_PER_SECOND": "10000",
    "GRAPH_WRITE_BURST": "1000",
    "GRAPH_WRITE_BLOCK_LIMIT": "0",
}
# Issue 11's targets.
TARGET_SPEEDUP = 20.0
TARGET_REQUESTS_PER_ITEM = 0.06
TARGET_RSS_MB = 200.0
CONCURRENCY = 4  # vlsync backfill's default


def _mark(ok: bool) -> str:
    return "pass" if ok else "**miss**"


def run(ctx: Context) -> list[Table]:
    count = ctx.sizes.catalog_items
    work = ctx.workdir / "backfill"
    catalog = write_catalog(work / "catalog.ndjson", count)
    ctx.log(f"backfill: vlsync backfill of {count:,} items at {LATENCY_MS} ms")
    with cli_stack(work / "stack", latency_ms=LATENCY_MS, budget=UNLIMITED_BUDGET) as stack:
        stack.emulator.clear_requests()
        result = checked(run_backfill(stack, catalog, work / "logs", "--concurrency", str(CONCURRENCY)), "backfill")
        stats = stack.emulator.stats()
        in_graph = stack.graph_external_ids()
    summary = result.summary
    pushed = int(summary["pushed"])
    rate = pushed / result.work_seconds
    per_item = stats["http"] / max(1, pushed)
    missing = count - len(in_graph & {external_id(i) for i in range(count)})
    ctx.results["backfill"] = {"items_per_s": rate, "requests_per_item": per_item, "peak_rss_mib": result.peak_rss_mib}
    rss_mb = result.peak_rss_mib * 2**20 / 1e6

    figures = Table(
        f"Backfill of {count:,} items: `vlsync backfill`, {LATENCY_MS} ms per round trip",
        [
            "Items",
            "Pushed",
            "Seconds (run)",
            "Seconds (process)",
            "Items/s",
            "Graph HTTP requests",
            "Requests/item",
            "Items in `$batch`",
            "Peak RSS of the CLI",
            "Missing from Graph",
            "Exit",
        ],
        [
            [
                f"{count:,}",
                f"{pushed:,}",
                number(result.work_seconds),
                number(result.wall_seconds),
                number(rate),
                f"{stats['http']:,}",
                f"{per_item:.3f}",
                f"{stats['batched']:,}",
                f"{result.peak_rss_mib:.0f} MiB",
                f"{missing:,}",
                str(result.exit_code),
            ]
        ],
        [
            f"`vlsync --json backfill catalog.ndjson --concurrency {CONCURRENCY}` (20 upserts per `$batch`, the "
            "defaults) in its own process; the catalog is NDJSON, about 400 bytes a course.",
            "Seconds (run) is the CLI's own `elapsedSeconds` (read, lease, write, record), the span the baselines "
            "time too; seconds (process) adds the interpreter's start-up and the sign-in.",
            "Graph HTTP requests come from the emulator's totals (`GET /_emulator/requests/stats`): every request "
            "the CLI made, the `$batch` POSTs and its reads; a request inside a batch is not an HTTP request.",
            "Peak RSS is the CLI process's high-water mark (`wait4`'s `ru_maxrss`).",
            "Write budget: GRAPH_WRITE_RATE_PER_SECOND=10000, GRAPH_WRITE_BURST=1000, GRAPH_WRITE_BLOCK_LIMIT=0, "
            "over ten times the rate reached, so it never limits.",
            "Missing from Graph: catalog items not listed by `GET …/learningContents` (every page) at the end.",
        ],
    )

    targets = Table(
        f"Backfill of {count:,} items against the targets",
        ["Measure", "Measured", "Target", "Result"],
    )
    for client in CLIENTS:
        baseline = ctx.results.get(f"baseline-{client}")
        if baseline is None:
            targets.rows.append([f"Items/s vs `{client}`", "not measured", f"≥ {TARGET_SPEEDUP:.0f}×", "n/a"])
            continue
        speedup = rate / baseline["items_per_s"]
        targets.rows.append(
            [
                f"Items/s vs `{client}` ({number(baseline['items_per_s'])} items/s)",
                ratio(rate, baseline["items_per_s"]),
                f"≥ {TARGET_SPEEDUP:.0f}×",
                _mark(speedup >= TARGET_SPEEDUP),
            ]
        )
    targets.rows += [
        [
            "Graph HTTP requests/item",
            f"{per_item:.3f}",
            f"≤ {TARGET_REQUESTS_PER_ITEM}",
            _mark(per_item <= TARGET_REQUESTS_PER_ITEM),
        ],
        [
            "Peak RSS of the CLI",
            f"{rss_mb:.0f} MB",
            f"≤ {TARGET_RSS_MB:.0f} MB",
            _mark(rss_mb <= TARGET_RSS_MB),
        ],
        ["Items missing from Graph", f"{missing:,}", "0", _mark(missing == 0)],
    ]
    targets.notes.append(
        "Ratios divide by the baselines' items/s measured earlier in this run (same emulator latency)."
        + ("" if count >= 100_000 else f" Issue 11's targets are for 100,000 items; this run had {count:,}.")
    )
    return [figures, targets]


SCENARIO = Scenario("backfill", "Backfill", run)
