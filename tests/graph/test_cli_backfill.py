"""``vlsync backfill`` and ``vlsync reconcile`` in-process against the Graph emulator and Azurite.

The emulator serves ``POST /$batch`` (``local/graph_emulator``); the tests of the ``cli`` fixture run
over both paths, batched and (with ``$batch`` refused as a whole by a scripted 501) the single-request
fallback."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.backfill import Backfill, ChunkPusher
from shared.catalog import read_file
from shared.checkpoint import Checkpoint, default_path
from shared.graph_batch import BatchWriter
from shared.ledger import Ledger, LedgerEntry, push_timing
from tests.conftest import TENANT_ID
from tests.graph.conftest import CliSide, GraphSide, make_graph
from tests.vlsync_runner import content_line, make_runner

BATCH_PATH = "/$batch"


@pytest.fixture(params=["batch", "fallback"])
def cli(request: pytest.FixtureRequest, cli_side: CliSide) -> CliSide:
    """``cli_side`` with ``$batch`` served or refused."""
    if request.param == "fallback":
        # Refuse every $batch as a service without JSON batching would: 501 for the batch itself.
        cli_side.graph.script_faults([{"status": 501, "match": {"pathContains": "$batch"}}] * 50)
    cli_side.mode = request.param  # type: ignore[attr-defined]
    return cli_side


def write_catalog(path: Path, ids: list[str], **extra: Any) -> Path:
    path.write_text("".join(content_line(i, **extra) + "\n" for i in ids), encoding="utf-8")
    return path


def ids(n: int, prefix: str = "bf") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(1, n + 1)]


def item_writes(cli: CliSide) -> int:
    """Content writes in the emulator's request log: single PATCHes, or requests inside batches."""
    count = 0
    for record in cli.graph_requests():
        if record["method"] == "PATCH" and "learningContents" in record["path"]:
            count += 1
    return count


def graph_items(cli: CliSide) -> dict[str, dict[str, Any]]:
    items = cli.json("content", "list")
    return {item["externalId"]: item for item in items}


def test_backfill_interrupted_at_half_resumes_without_resending(cli: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(60))
    first = cli.json("backfill", str(catalog), "--limit", "30")
    assert first["pushed"] == 30
    assert (tmp_path / "catalog.ndjson.checkpoint.json").exists()
    assert set(graph_items(cli)) == set(ids(60)[:30])
    httpx.delete(f"{cli.graph.url}/_emulator/requests", timeout=10).raise_for_status()

    second = cli.json("backfill", str(catalog))

    assert second["pushed"] == 30
    assert second["alreadyDone"] == 30
    assert set(graph_items(cli)) == set(ids(60))
    assert item_writes(cli) == 30  # the emulator logs each request inside a batch on its own
    if cli.mode == "fallback":  # type: ignore[attr-defined]
        assert second["graphRequests"]["fallback"] is not None
        assert second["graphRequests"]["singleRequests"] == 30
    else:
        batches = [r for r in cli.graph_requests() if r["method"] == "POST" and r["path"].endswith(BATCH_PATH)]
        assert len(batches) <= 4  # 30 items, 20 per batch, chunks of up to 100: two or three batches
        assert second["graphRequests"]["fallback"] is None


async def test_a_run_cancelled_midway_keeps_its_checkpoint_and_the_next_sends_only_the_rest(
    graph_side: GraphSide, http: httpx.AsyncClient, ledger: Ledger, tmp_path: Path
) -> None:
    """Ctrl-C (the run's task cancelled) after about half: what finished is in the checkpoint; the leases
    of the items whose requests were still out are kept until those cannot land any more (the margin),
    the others' are given back; the next run sends only what is not done, and finds the items still
    leased busy until their leases end."""
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(400))
    graph = make_graph(graph_side, http)
    timing = push_timing(graph.timeout_seconds, graph.max_inline_retry_seconds)
    target = {"tenant": TENANT_ID, "registrationId": graph_side.registration_id, "graph": graph_side.url}

    async def start(limit_event: asyncio.Event | None, later: timedelta = timedelta(0)) -> Backfill:
        checkpoint = Checkpoint.open(default_path(catalog), catalog, target=target)
        async with BatchWriter(graph, concurrency=2) as writer:
            pusher = ChunkPusher(
                graph, ledger, writer, graph_side.registration_id, timing, lambda: datetime.now(UTC) + later
            )
            run = Backfill(pusher, checkpoint, datetime(2026, 1, 1, tzinfo=UTC), chunk_size=20, in_flight=2)
            if limit_event is not None:
                run.progress = lambda tally: limit_event.set() if tally.pushed >= 200 else None
            await run.run(read_file(catalog, "ndjson"))
        return run

    half = asyncio.Event()
    task = asyncio.create_task(start(half))
    await half.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = Checkpoint.open(default_path(catalog), catalog, target=target)
    done = saved.done.count()
    assert 200 <= done < 400
    assert saved.done.prefix() >= 200 - 2 * 20  # out-of-order completion stays within the chunks in flight
    assert all(ledger.last_push(graph_side.registration_id, i) is not None for i in ids(400)[: saved.done.prefix()])
    (await http.delete(f"{graph_side.url}/_emulator/requests")).raise_for_status()

    second = await start(None)

    assert second.tally.already_done == done
    # Not one finished item is sent again; an item whose record landed just before the cancel (not yet in
    # the checkpoint) is judged stale by the ledger instead of being sent; an item whose request was out
    # at the cancel is still leased (busy): it is not sent either.
    assert await item_writes_since(graph_side, http) == second.tally.pushed
    assert second.tally.pushed + second.tally.stale + second.tally.busy == 400 - done
    assert second.tally.busy <= 2 * 20  # at most the chunks that were in flight

    # Once those leases have ended (a run on a clock past them), the rest goes, and nothing else.
    (await http.delete(f"{graph_side.url}/_emulator/requests")).raise_for_status()
    third = await start(None, later=timedelta(seconds=timing.lease_seconds + timing.margin_seconds + 1))
    assert third.tally.pushed + third.tally.stale == second.tally.busy
    assert third.tally.busy == 0
    assert await item_writes_since(graph_side, http) == third.tally.pushed
    assert all(ledger.last_push(graph_side.registration_id, i) is not None for i in ids(400))


async def item_writes_since(graph_side: GraphSide, http: httpx.AsyncClient) -> int:
    """Content writes in the emulator's log since it was last cleared."""
    log = (await http.get(f"{graph_side.url}/_emulator/requests")).json()["value"]
    return sum(1 for r in log if r["method"] == "PATCH" and "learningContents" in r["path"])


def test_backfill_never_overwrites_a_newer_ledger_event(cli: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(5))
    as_of = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = ledger_of(cli)
    newer = LedgerEntry(cli.registration_id, "bf-003", "upsert", as_of + timedelta(minutes=1), as_of, "worker")
    assert ledger.record(newer)

    summary = cli.json("backfill", str(catalog), "--as-of", "2026-01-01T00:00:00Z")

    assert summary["pushed"] == 4
    assert summary["skippedStale"] == 1
    assert "bf-003" not in graph_items(cli)
    assert ledger.last_push(cli.registration_id, "bf-003") == newer
    # lastModifiedDateTime, when a record has one, is its event time: newer than the ledger's, it goes.
    newest = write_catalog(tmp_path / "newest.ndjson", ["bf-003"], lastModifiedDateTime="2026-01-01T00:05:00Z")
    assert cli.json("backfill", str(newest))["pushed"] == 1
    assert "bf-003" in graph_items(cli)


def ledger_of(cli: CliSide) -> Ledger:
    from azure.data.tables import TableServiceClient

    table = TableServiceClient.from_connection_string(cli.env["LearningSyncStorage"]).get_table_client(
        cli.env["LEDGER_TABLE_NAME"]
    )
    return Ledger(table, tenant_id=TENANT_ID, state_cache_seconds=0)


def test_backfill_reads_csv_and_reports_bad_lines_by_number(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "externalId,title,contentWebUrl,languageTag,skillTags,isPremium,numberOfPages\n"
        "csv-1,One,https://lms.example/1,en-us,python;data,true,10\n"
        '"csv-2","Two, quoted",https://lms.example/2,en-us,,,\n'
        "csv-3,Three,https://lms.example/3,en-us,,maybe,\n"
        "csv-4,,https://lms.example/4,en-us,,,\n"
        "csv-5,Five,https://lms.example/5,en-us,,,\n",
        encoding="utf-8",
    )
    result = cli_side.run("--json", "backfill", str(catalog))
    assert result.exit_code == 1, result.stdout + result.stderr
    error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    assert [(p["line"], p["pointer"]) for p in error["problems"]] == [(4, "/isPremium"), (5, "/title")]
    assert error["pushed"] == 3
    items = graph_items(cli_side)
    assert set(items) == {"csv-1", "csv-2", "csv-5"}
    assert items["csv-1"]["skillTags"] == ["python", "data"]
    assert items["csv-1"]["isPremium"] is True
    assert items["csv-2"]["title"] == "Two, quoted"


def test_backfill_stops_at_the_first_bad_line_when_asked(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.ndjson"
    lines = [content_line("nd-1"), "{not json", content_line("nd-3")]
    catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli_side.run("--json", "backfill", str(catalog), "--on-invalid", "stop")
    assert result.exit_code == 1
    error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    assert error["problems"][0]["line"] == 2
    assert error["problems"][0]["message"].startswith("invalid JSON")
    assert "nd-3" not in graph_items(cli_side)
    # Going on past it (the default) pushes the rest; line 2 stays not done, for a fixed file.
    result = cli_side.run("--json", "backfill", str(catalog))
    assert result.exit_code == 1
    assert set(graph_items(cli_side)) == {"nd-1", "nd-3"}


def test_backfill_dry_run_sends_nothing(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(3))
    assert cli_side.json("backfill", str(catalog), "--dry-run") == {
        "valid": 3,
        "invalid": 0,
        "problems": [],
        "dryRun": True,
    }
    assert graph_items(cli_side) == {}


def test_a_checkpoint_of_another_file_is_refused(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(3))
    cli_side.json("backfill", str(catalog), "--limit", "1")
    write_catalog(catalog, ids(4))  # edited: the lines no longer mean what the checkpoint says
    result = cli_side.run("backfill", str(catalog))
    assert result.exit_code == 1
    assert "--restart" in result.stderr
    assert cli_side.json("backfill", str(catalog), "--restart")["pushed"] == 4


# -- reconcile ---------------------------------------------------------------------------------------


def test_reconcile_apply_makes_graph_equal_the_file(cli: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(40, "rc"))
    cli.json("backfill", str(catalog))
    kept = ids(40, "rc")[10:]  # the first 10 deleted from the source
    changed = set(kept[:10])  # and 10 others changed
    source = tmp_path / "source.ndjson"
    source.write_text(
        "".join(
            content_line(i, title=f"Renamed {i}", skillTags=["new"]) + "\n" if i in changed else content_line(i) + "\n"
            for i in [*kept, "rc-new"]
        ),
        encoding="utf-8",
    )

    diff = cli.json("reconcile", str(source))["diff"]
    assert diff["create"] == ["rc-new"]
    assert {u["externalId"] for u in diff["update"]} == changed
    assert all(u["properties"] == ["skillTags", "title"] for u in diff["update"])
    assert set(diff["deactivate"]) == set(ids(40, "rc")[:10])
    assert diff["unchanged"] == 20

    whole = cli.json("reconcile", str(source), "--apply")
    applied = whole["applied"]
    assert applied["pushed"] == 1 + 10 + 10  # create, update, deactivate
    items = graph_items(cli)
    for external_id in [*kept, "rc-new"]:
        expected = f"Renamed {external_id}" if external_id in changed else f"Course {external_id}"
        assert items[external_id]["title"] == expected
        assert items[external_id]["isActive"] is True
    assert all(items[i]["isActive"] is False for i in ids(40, "rc")[:10])
    after = cli.json("reconcile", str(source))["diff"]
    assert (after["create"], after["update"], after["deactivate"]) == ([], [], [])

    deleted = cli.json("reconcile", str(source), "--apply", "--delete")
    assert set(deleted["diff"]["delete"]) == set(ids(40, "rc")[:10])
    assert set(graph_items(cli)) == {*kept, "rc-new"}


def test_reconcile_repairs_items_marked_needs_repair(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(3, "rp"))
    cli_side.json("backfill", str(catalog))
    ledger = ledger_of(cli_side)
    last = ledger.last_push(cli_side.registration_id, "rp-002")
    assert last is not None
    ledger.mark_repair(last)  # Graph looks equal to the file: only the mark says otherwise

    view = cli_side.json("reconcile", str(catalog), "--apply")

    assert view["diff"]["repair"] == ["rp-002"]
    assert view["applied"]["pushed"] == 1
    assert ledger.needs_repair(cli_side.registration_id) == []


def test_an_inner_429_is_retried_alone(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(20))
    # The first PATCH inside the first batch is throttled, with its own Retry-After; the other 19 land.
    cli_side.graph.script_faults(
        [{"status": 429, "retryAfterSeconds": 1, "match": {"methods": ["PATCH"], "pathContains": "learningContents"}}]
    )
    summary = cli_side.json("backfill", str(catalog))
    assert summary["pushed"] == 20
    assert summary["graphRequests"]["innerRetries"] == 1
    assert summary["graphRequests"]["batchRequests"] == 2  # the 20, then the throttled one alone
    batches: dict[str, list[int]] = {}
    for record in cli_side.graph_requests():
        if record.get("batchRequestId") and record["method"] == "PATCH":
            batches.setdefault(record["batchRequestId"], []).append(record["status"])
    shapes = sorted((len(s), sum(1 for status in s if status == 429)) for s in batches.values())
    assert shapes == [(1, 0), (20, 1)]
    assert set(graph_items(cli_side)) == set(ids(20))


def test_the_human_output_says_what_was_done(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(3))
    result = cli_side.run("backfill", str(catalog))
    assert result.exit_code == 0, result.stderr
    assert f"backfilled 3 item(s) into registration {cli_side.registration_id}" in result.stdout
    diff = cli_side.run("reconcile", str(write_catalog(tmp_path / "less.ndjson", ids(2))))
    assert diff.exit_code == 0, diff.stderr
    assert "to deactivate: 1\n  bf-003" in diff.stdout


# -- run-level failures, the checkpoint's target, the shared budget ---------------------------------------


def test_a_batch_refused_for_want_of_permission_stops_the_run_and_marks_nothing_done(
    cli_side: CliSide, tmp_path: Path
) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(50))
    cli_side.graph.script_faults([{"status": 403, "match": {"pathContains": "$batch"}}] * 20)
    result = cli_side.run("--json", "backfill", str(catalog))
    assert result.exit_code == 1, result.stdout + result.stderr
    error = json.loads(result.stderr.strip().splitlines()[-1])["error"]
    assert "a failure of the run, not of an item" in error["message"]
    assert error["doneLines"] == 0
    assert error["pushed"] == 0
    saved = json.loads(default_path(catalog).read_text(encoding="utf-8"))
    assert saved["done"] == []


def test_a_checkpoint_of_another_registration_is_refused(cli_side: CliSide, tmp_path: Path) -> None:
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(3))
    assert cli_side.json("backfill", str(catalog), "--limit", "2")["pushed"] == 2
    elsewhere = make_runner({**cli_side.env, "REGISTRATION_ID": "another-registration"})
    result = elsewhere("backfill", str(catalog))
    assert result.exit_code == 1
    assert "registrationId 'another-registration'" in result.stderr
    assert "--restart" in result.stderr


def test_a_backfill_spends_from_the_budget_the_worker_spends_from(cli_side: CliSide, tmp_path: Path) -> None:
    """A backfill drains the registration's shared bucket: the worker's budget for the same registration
    then has no room for a full batch, as if the worker had sent those writes itself."""
    from azure.data.tables import TableServiceClient

    from shared.graph import Deadline, GraphTransientError
    from shared.ratebudget import Policy, RateBudgets

    slow = {"GRAPH_WRITE_RATE_PER_SECOND": "1", "GRAPH_WRITE_BURST": "20", "GRAPH_WRITE_BLOCK_LIMIT": "0"}
    runner = make_runner({**cli_side.env, **slow})
    catalog = write_catalog(tmp_path / "catalog.ndjson", ids(22))
    result = runner("--json", "backfill", str(catalog), "--batch-size", "20")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["pushed"] == 22

    table = TableServiceClient.from_connection_string(cli_side.env["LearningSyncStorage"]).get_table_client(
        cli_side.env["LEDGER_TABLE_NAME"]
    )
    worker_budgets = RateBudgets(table, Policy.from_figures(1, 20), home_tenant=TENANT_ID, max_wait_seconds=1)
    budget = worker_budgets.for_registration(None, cli_side.registration_id)
    # 22 writes from a bucket of 20 refilled at 1/s: a full batch now waits about 20 s, far past 1 s.
    with pytest.raises(GraphTransientError) as waited:
        asyncio.run(budget.acquire(20, Deadline.after(60)))
    assert waited.value.code == "RateBudget"


def test_reconcile_within_a_prefix_leaves_the_other_sources_items_alone(cli_side: CliSide, tmp_path: Path) -> None:
    cli_side.json("backfill", str(write_catalog(tmp_path / "all.ndjson", ["a-1", "a-2", "b-1"])))
    mine = write_catalog(tmp_path / "a.ndjson", ["a-1"])

    view = cli_side.json("reconcile", str(mine), "--apply", "--external-id-prefix", "a-")

    assert view["diff"]["deactivate"] == ["a-2"]
    assert view["diff"]["outsidePrefix"] == 1
    items = graph_items(cli_side)
    assert items["a-2"]["isActive"] is False
    assert items["b-1"]["isActive"] is True
