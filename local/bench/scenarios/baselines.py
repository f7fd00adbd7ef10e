"""Backfill baselines (issue 11, point 6): the obvious loops a backfill is measured against.

- ``naive-httpx``: PATCH one item at a time with httpx.
- ``msgraph-sdk``: the same loop with the official ``msgraph-sdk`` client (``requirements-bench.txt``).

Each writes new items against the emulator at 40 ms per request (a real round trip), persistence on,
in a process of its own (its peak RSS is the client's). At one item per round trip a 100,000-item
backfill takes over an hour, so each loop writes a sample and the table extrapolates; items/s does not
depend on the catalog's size for a loop that holds nothing. Later scenarios read
``context.results["baseline-<client>"]["items_per_s"]`` for their ratios.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import Any

import httpx

from local import tokens

from ..emulator import PROVIDER_PREFIX, PROVIDER_PROPS, REPO_ROOT, emulator_process
from ..report import Table, number
from ..scenario import Context, Scenario

LATENCY_MS = 40  # issue 11: "a fixed latency per request (default 40 ms, like a real round trip)"
CLIENTS = ("naive-httpx", "msgraph-sdk")


def sdk_installed() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import msgraph"], capture_output=True, check=False)
    return probe.returncode == 0


def register_provider(url: str) -> str:
    token, _ = tokens.mint(tokens.TokenRequest(scopes=("LearningProvider.ReadWrite",)))
    body = {k: v for k, v in PROVIDER_PROPS.items() if v is not None}
    response = httpx.post(f"{url}{PROVIDER_PREFIX}", json=body, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return str(response.json()["id"])


def run_client(name: str, url: str, provider_id: str, count: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "local.bench.clients", name, "--url", url, "--provider", provider_id]
    command += ["--count", str(count), "--prefix", f"{name}-"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Context) -> list[Table]:
    count, catalog = ctx.sizes.baseline_items, ctx.sizes.catalog_items
    table = Table(
        f"Backfill baselines: one item per request, {LATENCY_MS} ms per round trip",
        [
            "Client",
            "Items (sample)",
            "Seconds",
            "Items/s",
            "Graph HTTP requests/item",
            "Peak RSS of the client",
            f"Estimated time for {catalog:,} items",
            "Answers",
        ],
    )
    clients = [c for c in CLIENTS if c != "msgraph-sdk" or sdk_installed()]
    if "msgraph-sdk" not in clients:
        table.notes.append(
            "msgraph-sdk is not installed (`pip install -r requirements-bench.txt`): its row is left out."
        )
    snapshot = ctx.workdir / "baselines" / f"graph-{uuid.uuid4().hex[:8]}.json"
    with emulator_process(snapshot=snapshot, latency_ms=LATENCY_MS) as emu:
        provider_id = register_provider(emu.url)
        for name in clients:
            ctx.log(f"baseline {name}: {count} items at {LATENCY_MS} ms")
            emu.clear_requests()
            result = run_client(name, emu.url, provider_id, count)
            stats = emu.stats()
            rate = result["items"] / result["seconds"]
            ctx.results[f"baseline-{name}"] = {"items_per_s": rate, "requests_per_item": stats["http"] / count}
            table.rows.append(
                [
                    f"`{name}`",
                    f"{count:,}",
                    number(result["seconds"]),
                    number(rate),
                    f"{stats['http'] / count:.2f}",
                    f"{result['peakRssMiB']:.0f} MiB",
                    f"{catalog / rate / 60:,.0f} min (extrapolated)",
                    ", ".join(f"{n:,} × {s}" for s, n in sorted(result["statuses"].items())),
                ]
            )
    table.notes += [
        f"Measured on a sample of {count:,} new items each; the time for {catalog:,} is extrapolated at the same "
        "rate (a sequential loop holds no state, so its rate does not depend on the catalog's size).",
        "Requests/item comes from the emulator's request totals (`GET /_emulator/requests/stats`).",
        "`msgraph-sdk` sends no `duration`: version 1.65 writes a timedelta as `0:45:00`, not the ISO 8601 "
        "duration Graph's Edm.Duration takes, and the emulator refuses such an item (seen on the wire).",
    ]
    return [table]


SCENARIOS = [Scenario("baselines", "Backfill", run)]
