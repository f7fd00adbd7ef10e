"""``make bench BENCH_SIZE=small`` end to end: it runs every scenario and writes the report.

No timing is asserted (issue 11: targets are reported by the bench, never asserted by tests); the
run itself must stay under 3 minutes, which the timeout enforces.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from local.bench.scenarios import ALL

REPO_ROOT = Path(__file__).resolve().parents[2]


def _tables(report: str) -> dict[str, list[list[str]]]:
    """Each ``### title`` with the rows of the table under it (cells stripped, header and rule left out)."""
    tables: dict[str, list[list[str]]] = {}
    title = ""
    for line in report.splitlines():
        if line.startswith("### "):
            title = line[4:]
            tables[title] = []
        elif line.startswith("| ") and title:
            tables[title].append([cell.strip() for cell in line.strip("|").split(" | ")])
    return {t: rows[2:] for t, rows in tables.items()}  # past the header and the --- rule


def test_make_bench_small_writes_every_scenarios_table(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    done = subprocess.run(
        ["make", "bench", "BENCH_SIZE=small", f"BENCH_OUT={out}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # issue 11: the small size finishes in under 3 minutes
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = out.read_text(encoding="utf-8")

    assert re.search(r"\*\*Machine:\*\* \d+ cores .*GiB RAM, Python 3\.\d+", report), report[:600]
    assert "size `small`" in report
    for section in {scenario.section for scenario in ALL}:
        assert f"\n## {section}\n" in report, section
    tables = _tables(report)
    floor = tables["Emulator floor: single PATCH/s, persistence on"]
    assert [row[0] for row in floor] == ["1,000", "5,000", "5,000, compacting"]
    for row in floor:
        assert re.fullmatch(r"[\d,.]+", row[4]), row  # PATCH/s measured
        assert re.fullmatch(r"[\d,]+ µs", row[6]), row  # the emulator's CPU per PATCH
        assert row[7] == "2,000 of 2,000"  # every timed PATCH answered 202, one HTTP request each
    [batched] = tables["Emulator floor through `$batch` (20 PATCHes a batch), persistence on"]
    assert batched[3] == "100"  # 2,000 PATCHes in 100 HTTP requests
    baselines = tables["Backfill baselines: one item per request, 40 ms per round trip"]
    assert [row[0] for row in baselines] == ["`naive-httpx`", "`msgraph-sdk`"]  # make bench installs the SDK
    for row in baselines:
        assert row[4] == "1.00"  # one Graph HTTP request per item, from the emulator's totals
        assert row[7] == "60 × 202"
        assert re.fullmatch(r"\d+ MiB", row[5]), row

    # vlsync backfill as a user runs it (3,000 items small): every item reaches Graph; figures are reported.
    [backfill] = tables["Backfill of 3,000 items: `vlsync backfill`, 40 ms per round trip"]
    assert backfill[0] == backfill[1] == "3,000", backfill  # all pushed
    assert backfill[9] == "0", backfill  # none missing from Graph's own listing
    assert backfill[10] == "0", backfill  # the CLI's exit code
    assert re.fullmatch(r"0\.\d{3}", backfill[6]), backfill  # requests/item from the emulator's totals
    assert int(backfill[7].replace(",", "")) == 3_000, backfill  # every upsert went inside a $batch
    assert re.fullmatch(r"\d+ MiB", backfill[8]), backfill  # the CLI process's own peak RSS
    against = tables["Backfill of 3,000 items against the targets"]
    assert [row[0].split(" (")[0] for row in against] == [
        "Items/s vs `naive-httpx`",
        "Items/s vs `msgraph-sdk`",
        "Graph HTTP requests/item",
        "Peak RSS of the CLI",
        "Items missing from Graph",
    ]
    assert re.fullmatch(r"[\d.]+×", against[0][1]), against[0]  # a ratio to the baseline of the same run
    assert all(row[3] in ("pass", "**miss**") for row in against), against

    # Four processes under one budget against a throttled Graph: measured, plus two computed estimates.
    throttled = tables[
        "Throttled backfill: Graph limited to 50 requests/s, 4 `vlsync backfill` processes, one budget of 50/s"
    ]
    assert [row[0].split(":")[0] for row in throttled] == ["measured", "computed", "computed"]
    measured = throttled[0]
    assert measured[1] == "400"
    assert re.fullmatch(r"\d+%", measured[4]), measured  # useful items/s as a fraction of R
    assert re.fullmatch(r"[\d,]+ \(\d+\.\d%\)", measured[6]), measured  # 429s and their share
    assert re.fullmatch(r"[\d,]+", measured[7]), measured  # items lost, from Graph's listing
    # The computed rows follow shared.ratebudget.Policy: 0.8/s by default (34.7 h), 83.3/s at x100 (20 min).
    assert throttled[1][2] == "124,975 (34.7 h)", throttled[1]
    assert throttled[2][2] == "1,200 (20 min)", throttled[2]
    verdicts = tables["Throttled backfill against the targets"]
    assert [row[0] for row in verdicts] == [
        "Useful items/s of the allowed rate",
        "Writes answered 429",
        "Items lost",
    ]
    assert all(row[3] in ("pass", "**miss**") for row in verdicts), verdicts

    # The webhook path (300 events small) and its raw floor, measured on one stack: every event visible,
    # Graph's state the newest event of each course (the fault harness's oracle), bursts coalesced.
    path = tables["Webhook path: 300 events through intake, queue, worker and Graph (40 ms)"]
    assert [row[0] for row in path] == [
        "raw floor (send, receive 32, PATCH, delete)",
        "the app (intake → queue → worker)",
    ]
    app = path[1]
    assert app[1] == "300", app  # every event accepted once
    assert re.fullmatch(r"3\d\d \(\d+ duplicate\)", app[2]), app  # redeliveries answered duplicate
    assert re.fullmatch(r"[\d.]+×", app[5]), app  # a ratio to the floor of the same run
    assert re.fullmatch(r"\d\.\d\d", app[8]), app  # Graph writes per event, from the emulator's totals
    assert app[10] == "0", app  # no course lost, resurrected or left stale
    steady = tables["Webhook path at steady rates (target: 100 events/s with p99 ≤ 1 s)"]
    assert [row[0] for row in steady] == ["100 events/s (target)", "50 events/s"]
    assert [row[1] for row in steady] == ["300", "150"], steady
    assert [row[8] for row in steady] == ["0", "0"], steady  # nothing lost, resurrected or stale
    backlog = tables["Azurite's CPU per queue operation, by backlog"]
    assert [row[0] for row in backlog] == ["50", "1,000"]
    assert all(re.fullmatch(r"\d+\.\d\d ms", cell) for row in backlog for cell in row[1:]), backlog
    assert all(cell != "0.00 ms" for cell in backlog[1][1:]), backlog  # Azurite's CPU was found and read
