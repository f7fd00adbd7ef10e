"""Emulator floor: single PATCH/s with N items stored and persistence on (issue 11 target: >= 1,000/s).

The emulator runs in its own process with ``--snapshot`` (journal + compaction), seeded with N items;
32 concurrent clients PATCH existing items by ``externalId`` (the upsert the product sends), 0 ms
latency. The client is aiohttp in this process: cheaper per request than httpx, so it measures the
emulator, not the client.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from ..emulator import PROVIDER_PREFIX, app_token, content_body, emulator_process, external_id, seed_snapshot
from ..report import Table, number, ratio
from ..scenario import Context, Scenario

CONCURRENCY = 32
BATCH_SIZE = 20  # Graph's JSON batching limit
FLAT_CHECK_ITEMS = 1_000
WARM_UP = 200  # untimed PATCHes first: the server's first-call costs (imports, the token check) are not its rate
TARGET_PER_S = 1000.0  # issue 11: "at least 1,000 single PATCH/s with 100,000 items stored"


async def _send_all(
    base: str, provider_id: str, indexes: list[int], token: str, batch_size: int
) -> tuple[float, dict[int, int]]:
    """PATCH every index (an upsert by externalId), alone or ``batch_size`` to a ``$batch``; inner statuses counted."""
    statuses: dict[int, int] = {}
    path = f"{PROVIDER_PREFIX}/{provider_id}/learningContents"
    chunks = [indexes[i : i + batch_size] for i in range(0, len(indexes), batch_size)]
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def count(status: int) -> None:
        statuses[status] = statuses.get(status, 0) + 1

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            if batch_size == 1:
                url = f"{base}{path}(externalId='{external_id(chunk[0])}')"
                async with session.patch(url, json=content_body(chunk[0], revision=1), headers=headers) as response:
                    await response.read()
                    count(response.status)
                continue
            requests = [
                {
                    "id": str(n),
                    "method": "PATCH",
                    "url": f"{path.removeprefix('/v1.0')}(externalId='{external_id(index)}')",
                    "headers": {"Content-Type": "application/json"},
                    "body": content_body(index, revision=1),
                }
                for n, index in enumerate(chunk)
            ]
            async with session.post(f"{base}/v1.0/$batch", json={"requests": requests}, headers=headers) as response:
                for answer in (await response.json())["responses"]:
                    count(answer["status"])

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, statuses


def _measure(
    ctx: Context, stored: int, patches: int, batch_size: int, *, compacting: bool = False
) -> tuple[float, int, dict[str, Any]]:
    provider_id = str(uuid.uuid4())
    snapshot = ctx.workdir / f"floor-{stored}-{batch_size}" / "graph.json"
    ctx.log(f"emulator floor: seeding {stored:,} items")
    seed_snapshot(snapshot, stored, provider_id)
    with emulator_process(snapshot=snapshot) as emu:
        step = max(1, stored // patches)  # spread the updates over the stored items
        indexes = [(i * step) % stored for i in range(patches)]
        ctx.log(f"emulator floor: {patches:,} PATCHes at concurrency {CONCURRENCY}, {batch_size} per request")
        token = app_token()
        asyncio.run(_send_all(emu.url, provider_id, indexes[:WARM_UP], token, batch_size))  # first-call costs
        emu.clear_requests()
        cpu_before = emu.cpu_seconds()
        if compacting:
            emu.start_compaction()  # the worst case: the timed PATCHes share the CPU with a full snapshot write
        elapsed, statuses = asyncio.run(_send_all(emu.url, provider_id, indexes, token, batch_size))
        stats = emu.stats()
        if compacting:
            stats["persistence"] = emu.wait_compaction()
        stats["cpu_us_per_patch"] = (emu.cpu_seconds() - cpu_before) / patches * 1e6
    return patches / elapsed, statuses.get(202, 0), stats


def _row(stored: str, patches: int, rate: float, ok: int, stats: dict[str, Any]) -> list[str]:
    cpu = f"{stats['cpu_us_per_patch']:,.0f} µs"
    return [
        stored,
        f"{patches:,}",
        str(CONCURRENCY),
        "0 ms",
        number(rate),
        ratio(rate, TARGET_PER_S),
        cpu,
        f"{ok:,} of {stats['http']:,}",
    ]


def run(ctx: Context) -> list[Table]:
    patches = ctx.sizes.floor_patches
    single = Table(
        "Emulator floor: single PATCH/s, persistence on",
        [
            "Items stored",
            "PATCHes",
            "Concurrency",
            "Latency",
            "PATCH/s",
            "vs target 1,000/s",
            "Emulator CPU per PATCH",
            "Answered 202",
        ],
    )
    # A small catalog next to the large one: equal rates show the write path does not grow with the catalog.
    for stored in (FLAT_CHECK_ITEMS, ctx.sizes.stored_items):
        rate, ok, stats = _measure(ctx, stored, patches, 1)
        ctx.results.setdefault("emulator-floor", {})[f"patch_per_s_{stored}"] = rate
        single.rows.append(_row(f"{stored:,}", patches, rate, ok, stats))
    single.notes += [
        "`--snapshot` on: every write appended to the journal (written to the kernel before the answer, fsync "
        "once a second) and compacted in the background; the emulator in its own process, logging warnings only.",
        "Client: aiohttp, 32 connections, each PATCH an upsert by `externalId` of a stored item.",
        f"The {FLAT_CHECK_ITEMS:,}-item row is the flatness check: the request path (token, OData key, validation, "
        "journal, request log) should cost the same whatever the catalog's size. Compare the CPU per PATCH (the "
        "emulator process's user + system time over the timed PATCHes): other work on a shared machine moves "
        "PATCH/s far more than it moves CPU time.",
    ]
    stored = ctx.sizes.stored_items
    rate, ok, stats = _measure(ctx, stored, patches, 1, compacting=True)
    seconds = stats["persistence"]["lastCompactionSeconds"]
    single.rows.append(_row(f"{stored:,}, compacting", patches, rate, ok, stats))
    single.notes.append(
        f'The "compacting" row starts a compaction (`POST /_emulator/persistence/compact`) as the timed PATCHes '
        f"begin: the snapshot of {stored:,} items took {seconds:.1f} s in the background. By default a compaction "
        f"comes once per max(50,000, items stored) writes, so none falls inside the other rows' {patches:,} PATCHes."
    )
    rate, ok, stats = _measure(ctx, stored, patches, BATCH_SIZE)
    batched = Table(
        f"Emulator floor through `$batch` ({BATCH_SIZE} PATCHes a batch), persistence on",
        ["Items stored", "PATCHes", "Concurrency", "HTTP requests", "PATCH/s", "Answered 202"],
        [
            [
                f"{stored:,}",
                f"{patches:,}",
                str(CONCURRENCY),
                f"{stats['http']:,}",
                number(rate),
                f"{ok:,} of {stats['batched']:,}",
            ]
        ],
        [
            "The ceiling for a batching client at 0 ms latency: each inner request is authorised, validated, "
            "throttled and journalled on its own."
        ],
    )
    ctx.results["emulator-floor"]["batched_patch_per_s"] = rate
    return [single, batched]


SCENARIO = Scenario("emulator-floor", "Graph emulator", run)
