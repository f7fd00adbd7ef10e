"""The bench's scenarios, in run order (``python -m local.bench --only NAME`` picks some).

To add one, write a module here with::

    def run(ctx: Context) -> list[Table]:
        items = write_catalog(ctx.workdir / "items.ndjson", ctx.sizes.catalog_items)  # local.bench.catalog
        with emulator_process(snapshot=ctx.workdir / "backfill" / "graph.json", latency_ms=40) as emu:
            provider_id = register_provider(emu.url)          # scenarios/baselines.py
            ...                                               # run the client (a process: its peak RSS)
            stats = emu.stats()                               # Graph HTTP requests, batched, writes, 429s
        naive = ctx.results["baseline-naive-httpx"]["items_per_s"]
        return [Table("Backfill of N items", [...], [[..., ratio(items_per_s, naive), ...]])]

    SCENARIO = Scenario("backfill", "Backfill", run)

and list it in ``ALL`` after the scenarios whose numbers it compares with (``ctx.results``). A scenario
reports; it never asserts a speed (tests/bench checks that every table is written).
"""

from __future__ import annotations

from ..scenario import Scenario
from . import backfill, baselines, emulator_floor, throttled, webhook_path

ALL: list[Scenario] = [
    emulator_floor.SCENARIO,
    *baselines.SCENARIOS,
    backfill.SCENARIO,  # after the baselines: its ratios divide by their items/s
    throttled.SCENARIO,
    webhook_path.SCENARIO,
]
