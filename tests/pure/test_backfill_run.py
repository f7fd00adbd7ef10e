"""The backfill run's rules without storage or Graph: which lines are done (a run-level failure marks
none), a contended ledger row fails its chunk only, a repeated externalId is an invalid line; and
reconcile's diff within a source's externalIdPrefix, and the timer's export time."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.backfill import Backfill, ChunkPusher, RunStopped, Tally
from shared.catalog import Record, validate
from shared.checkpoint import Checkpoint, default_path
from shared.graph import Deadline, GraphClient, GraphError, GraphPermanentError, GraphTransientError
from shared.graph_batch import BatchRequestError, BatchWriter
from shared.ledger import BatchEvent, LeasedBatch, Ledger, LedgerConflict, Push, push_timing
from shared.reconcile import plan
from shared.scheduled_reconcile import BadExportTime, export_time

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = {"tenant": "t", "registrationId": "reg", "graph": "g", "storage": "s"}


def body(external_id: str, title: str = "T", active: bool = True) -> dict[str, Any]:
    return {"externalId": external_id, "title": title, "contentWebUrl": "u", "languageTag": "en-us", "isActive": active}


def rows(ids: list[str]) -> list[Record]:
    return [validate(line, body(external_id)) for line, external_id in enumerate(ids, start=1)]


class FakeLedger:
    """``Ledger.pushing_many``'s contract: every item leased; what succeeded is recorded. ``conflict``:
    the ids whose chunk's transaction kept being overtaken (``LedgerConflict``)."""

    def __init__(self, conflict: frozenset[str] = frozenset(), out: set[str] | None = None) -> None:
        self.conflict = conflict
        self.recorded: list[str] = []
        self.out = out if out is not None else set()  # the writer's requests still out
        self.out_at_release: set[str] | None = None  # what was out when a failed batch gave its leases back

    @contextlib.asynccontextmanager
    async def pushing_many(
        self, registration_id: str, events: list[BatchEvent], **_: Any
    ) -> AsyncIterator[LeasedBatch]:
        if any(event.external_id in self.conflict for event in events):
            raise LedgerConflict("the ledger rows kept changing")
        pushes = {e.external_id: Push("owner", Deadline.after(60)) for e in events}
        batch = LeasedBatch("owner", pushes, {})
        try:
            yield batch
        except BaseException:
            self.out_at_release = set(self.out)
            raise
        batch.recorded = set(batch._done)
        self.recorded.extend(sorted(batch._done))


class FakeWriter:
    """``BatchWriter.upsert``: each id answered by ``answers`` (an error raised, else success)."""

    def __init__(self, answers: Callable[[str], GraphError | None] = lambda _: None) -> None:
        self.answers = answers
        self.sent: list[str] = []

    async def upsert(
        self, registration_id: str, content: dict[str, Any], *, deadline: Deadline | None
    ) -> dict[str, Any]:
        external_id = str(content["externalId"])
        self.sent.append(external_id)
        error = self.answers(external_id)
        if error is not None:
            raise error
        return content


def backfill(
    ledger: FakeLedger, writer: FakeWriter, checkpoint: Checkpoint | None = None, chunk_size: int = 3
) -> Backfill:
    pusher = ChunkPusher(
        cast(GraphClient, None),
        cast(Ledger, ledger),
        cast(BatchWriter, writer),
        "reg",
        push_timing(10, 10),
        lambda: AS_OF,
    )
    return Backfill(pusher, checkpoint, AS_OF, chunk_size=chunk_size, in_flight=2)


def checkpoint_of(tmp_path: Path) -> Checkpoint:
    source = tmp_path / "catalog.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    return Checkpoint.open(default_path(source), source, target=TARGET)


# -- repeated externalIds --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=30))
def test_a_repeated_external_id_is_an_invalid_line_naming_the_first(ids: list[str]) -> None:
    writer = FakeWriter()
    run = backfill(FakeLedger(), writer)
    tally = asyncio.run(run.run(rows(ids)))
    first = {external_id: ids.index(external_id) + 1 for external_id in ids}
    assert sorted(writer.sent) == sorted(first)  # each id sent once: the first record's
    assert tally.pushed == len(first)
    assert tally.invalid == len(ids) - len(first)
    repeats = [(p.line, p.message) for p in tally.problems]
    assert repeats == [
        (line, f"{external_id!r} repeats line {first[external_id]}")
        for line, external_id in enumerate(ids, start=1)
        if first[external_id] != line
    ]


def test_a_limited_run_over_a_list_read_again_moves_on_to_positions_not_done(tmp_path: Path) -> None:
    """``vlsync backfill --source NAME --limit N`` started again: the LMS's list is read again and its
    done positions go to the ledger (which judges them), but only the others count toward the limit."""
    checkpoint = checkpoint_of(tmp_path)
    ledger, writer = FakeLedger(), FakeWriter()
    for _ in range(3):
        run = backfill(ledger, writer, checkpoint, chunk_size=1)
        run.limit, run.skip_done_lines = 2, False
        asyncio.run(run.run(rows(["a", "b", "c", "d", "e"])))
    assert sorted(set(writer.sent)) == ["a", "b", "c", "d", "e"]  # 2, then 2 more, then the last


def test_a_resumed_run_still_knows_the_ids_of_the_done_lines(tmp_path: Path) -> None:
    checkpoint = checkpoint_of(tmp_path)
    checkpoint.done.add_range(1, 2)
    writer = FakeWriter()
    tally = asyncio.run(backfill(FakeLedger(), writer, checkpoint).run(rows(["a", "b", "c", "a"])))
    assert writer.sent == ["c"]
    assert tally.already_done == 2
    assert [p.message for p in tally.problems] == ["'a' repeats line 1"]
    assert 4 not in checkpoint.done


# -- what is done ----------------------------------------------------------------------------------------


def test_an_items_own_4xx_is_done_and_a_transient_failure_is_not(tmp_path: Path) -> None:
    answers: dict[str, GraphError] = {
        "bad": GraphPermanentError(400, "BadRequest", "title too long"),
        "slow": GraphTransientError(503, "ServiceUnavailable", "later"),
    }
    checkpoint = checkpoint_of(tmp_path)
    tally = asyncio.run(backfill(FakeLedger(), FakeWriter(answers.get), checkpoint).run(rows(["ok", "bad", "slow"])))
    assert (tally.pushed, tally.failed) == (1, 2)
    assert checkpoint.done.ranges() == [(1, 2)]  # "slow" (line 3) is tried again by the next run


@pytest.mark.parametrize(
    "error",
    [
        GraphPermanentError(401, "InvalidAuthenticationToken", "expired"),
        GraphPermanentError(403, "Forbidden", "no permission"),
        GraphPermanentError(404, "NotFound", "the registration does not exist"),
        BatchRequestError(413, "RequestEntityTooLarge", "the $batch as a whole"),
    ],
    ids=["401", "403", "404-registration", "batch-as-a-whole"],
)
def test_a_run_level_failure_stops_the_run_and_marks_nothing_done(tmp_path: Path, error: GraphError) -> None:
    checkpoint = checkpoint_of(tmp_path)
    ledger, writer = FakeLedger(), FakeWriter(lambda _: error)
    run = backfill(ledger, writer, checkpoint, chunk_size=2)
    with pytest.raises(RunStopped, match=str(error.status)) as stopped:
        asyncio.run(run.run(rows([f"i{n}" for n in range(40)])))
    assert stopped.value.error is error
    assert checkpoint.done.count() == 0
    assert ledger.recorded == []
    # The chunks in flight when it failed were sent; the reading stopped there (2 chunks of 2 in flight).
    assert len(writer.sent) <= 8
    saved = json.loads(default_path(tmp_path / "catalog.ndjson").read_text(encoding="utf-8"))
    assert saved["done"] == []


def test_a_contended_ledger_row_fails_its_chunk_not_the_run(tmp_path: Path) -> None:
    checkpoint = checkpoint_of(tmp_path)
    ledger = FakeLedger(conflict=frozenset({"i4"}))
    tally = asyncio.run(backfill(ledger, FakeWriter(), checkpoint).run(rows([f"i{n}" for n in range(1, 10)])))
    # chunks of 3: i4 is in lines 4-6, which fail (not done); the others are pushed and done.
    assert tally.pushed == 6
    assert tally.failed == 3
    assert {f["code"] for f in tally.failures} == {"LedgerConflict"}
    assert checkpoint.done.ranges() == [(1, 3), (7, 9)]


def test_tally_codes_name_the_conflict() -> None:
    tally = Tally()
    tally.fail(1, "a", LedgerConflict("kept changing"))
    assert tally.failures[0]["code"] == "LedgerConflict"


# -- reconcile within a prefix ---------------------------------------------------------------------------


class ListedGraph:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_contents(self, registration_id: str) -> AsyncIterator[dict[str, Any]]:
        for item in self.items:
            yield item


def test_the_diff_sees_only_the_sources_prefix() -> None:
    """Another source's items in a shared registration are neither removed nor updated."""
    catalog = [validate(1, body("a:1")), validate(2, body("a:2", "New")), validate(3, body("3"))]
    graph = ListedGraph([body("a:2"), body("a:gone"), body("b:1"), body("b:2", active=False), body("c")])
    result = asyncio.run(plan(lambda: catalog, graph, "reg", ["b:1", "a:9"], removal="delete", prefix="a:"))
    assert [e for _, e in result.create] == ["a:1"]
    assert [(e, props) for _, e, props in result.update] == [("a:2", ["title"])]
    assert [str(i["externalId"]) for i in result.remove] == ["a:gone"]
    assert result.outside_prefix == 3
    assert result.repair_missing == ["a:9"]  # "b:1" is the other source's
    assert [(p.line, p.pointer) for p in result.problems] == [(3, "/externalId")]
    assert "does not start with the source's externalIdPrefix 'a:'" in result.problems[0].message


def test_removal_can_be_refused_and_is_counted() -> None:
    catalog = [validate(1, body("x"))]
    graph = ListedGraph([body("x"), body("y"), body("z")])
    result = asyncio.run(plan(lambda: catalog, graph, "reg", [], may_remove=False))
    assert result.remove == []
    assert result.removal_refused == 2
    assert result.view("deactivate")["removalRefused"] == 2


# -- the timer's export time -----------------------------------------------------------------------------


def test_the_export_time_comes_from_the_metadata_else_last_modified() -> None:
    uploaded = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert export_time({"exportedAt": "2026-03-01T03:00:00Z"}, uploaded) == (
        datetime(2026, 3, 1, 3, tzinfo=UTC),
        "exportedAt",
    )
    assert export_time({"ExportedAt": "2026-03-01T03:00:00+01:00"}, uploaded)[0] == datetime(2026, 3, 1, 2, tzinfo=UTC)
    assert export_time({}, uploaded) == (uploaded, "Last-Modified")
    assert export_time(None, uploaded.replace(tzinfo=None)) == (uploaded, "Last-Modified")
    with pytest.raises(BadExportTime, match="exportedAt"):
        export_time({"exportedAt": "yesterday"}, uploaded)


def test_an_unexpected_failure_of_one_item_stops_its_chunk_mates_before_the_leases_are_judged() -> None:
    """Else an item still queued in the writer would be sent after its lease was given back."""
    out: set[str] = set()

    class SlowWriter(FakeWriter):
        async def upsert(self, registration_id: str, content: dict[str, Any], *, deadline: Deadline | None) -> Any:
            external_id = str(content["externalId"])
            if external_id == "boom":
                raise RuntimeError("a bug")
            out.add(external_id)
            try:
                await asyncio.sleep(0.05)
            finally:
                out.discard(external_id)
            return content

    ledger = FakeLedger(out=out)
    with pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(backfill(ledger, SlowWriter()).run(rows(["slow-1", "boom", "slow-2"])))
    assert ledger.out_at_release == set()  # nothing of the chunk was still on its way
    assert ledger.recorded == []
