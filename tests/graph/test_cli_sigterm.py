"""``vlsync backfill`` stopped by SIGTERM (``kill``, ``timeout``, a CI runner or a container stop) ends as
Ctrl-C does: the checkpoint is saved and the leases it can give back are given back (a resumed run
skipping the checkpoint's lines is tested with --limit in test_cli_backfill.py). Before, the
interpreter died on the spot: nothing saved since the last periodic save, and every item of every
chunk in flight stayed leased (busy) for minutes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.graph.conftest import CliSide
from tests.graph.test_cli_backfill import ids, write_catalog
from tests.vlsync_runner import CLEARED

ITEMS = 600
# The emulator's latency per request, each request inside a $batch too (a batch of 20 takes 0.4 s): the
# run lasts a few seconds and is stopped midway.
LATENCY_MS = 20


def stats(cli: CliSide) -> dict[str, int]:
    body = httpx.get(f"{cli.graph.url}/_emulator/requests/stats", timeout=10).json()
    return {"writes": int(body["writes"])}


def test_sigterm_stops_a_backfill_like_ctrl_c(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(ITEMS, "st"))
    cli_side.graph.admin("PUT", "/faults", json={"latencyMs": LATENCY_MS}).raise_for_status()
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | cli_side.env
    command = [sys.executable, "-m", "vlsync", "--json", "backfill", str(catalog), "--concurrency", "2"]
    run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while stats(cli_side)["writes"] < ITEMS // 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before it could be stopped: raise LATENCY_MS"
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, stderr
    assert "Aborted!" in stderr
    assert "Traceback" not in stderr
    checkpoint = json.loads((tmp_path / "catalog.ndjson.checkpoint.json").read_text(encoding="utf-8"))
    saved = sum(last - first + 1 for first, last in checkpoint["done"])  # chunks end in any order
    assert 0 < saved < ITEMS, checkpoint["done"]

    # Only the requests still out keep their items leased (they may yet land); every other item of the
    # chunks in flight was given back. --concurrency 2: at most two $batch requests of 20 are out.
    kept = [int(n) for n in re.findall(r"keeping the lease on (\d+) item\(s\)", stderr)]
    assert sum(kept) <= 2 * 20, stderr  # 0 when the signal came between two requests
    assert stderr.count("keeping the lease") == len(kept), "one line per chunk, not one per item"
