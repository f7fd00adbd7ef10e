"""The backfill's pure parts: the checkpoint's done ranges, the catalog reader (NDJSON and CSV, with
line numbers), and reconcile's diff."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.catalog import CatalogUnreadable, Record, format_of, read_file, records
from shared.checkpoint import Checkpoint, CheckpointMismatch, DoneRanges, default_path
from shared.reconcile import changed, deactivation, normalised, plan

# -- done ranges ----------------------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=200))
def test_done_ranges_hold_exactly_the_lines_added_in_any_order(lines: list[int]) -> None:
    done = DoneRanges()
    for line in lines:
        done.add(line)
    model = set(lines)
    assert all((n in done) == (n in model) for n in range(0, 302))
    assert done.count() == len(model)
    prefix = 0
    while prefix + 1 in model:
        prefix += 1
    assert done.prefix() == prefix
    ranges = done.ranges()
    assert all(a <= b for a, b in ranges)
    assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(ranges))  # disjoint, not adjacent
    assert DoneRanges(ranges).ranges() == ranges  # what a checkpoint file holds reads back the same


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), max_size=50))
def test_adding_ranges_is_adding_their_lines(spans: list[tuple[int, int]]) -> None:
    done = DoneRanges()
    model: set[int] = set()
    for start, length in spans:
        done.add_range(start, start + length)
        model.update(range(start, start + length + 1))
    assert {n for n in range(0, 230) if n in done} == model


@pytest.mark.parametrize("bad", [[(0, 3)], [(5, 4)], [("1", 2)]])
def test_a_checkpoint_with_impossible_ranges_is_refused(bad: list[tuple[Any, Any]]) -> None:
    with pytest.raises(ValueError, match="range"):
        DoneRanges(bad)


TARGET = {"tenant": "t-1", "registrationId": "reg-1", "graph": "graph.microsoft.com (v1.0)", "storage": "acct"}


def test_a_checkpoint_reads_back_and_refuses_another_input(tmp_path: Path) -> None:
    source = tmp_path / "catalog.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    path = default_path(source)
    assert path.name == "catalog.ndjson.checkpoint.json"
    checkpoint = Checkpoint.open(path, source, target=TARGET)
    for line in (1, 2, 5):
        checkpoint.done.add(line)
    checkpoint.extra["asOf"] = "2026-01-01T00:00:00+00:00"
    checkpoint.save()
    again = Checkpoint.open(path, source)
    assert again.done.ranges() == [(1, 2), (5, 5)]
    assert again.extra == {"asOf": "2026-01-01T00:00:00+00:00"}
    source.write_text("{}\n{}\n", encoding="utf-8")
    with pytest.raises(CheckpointMismatch, match="--restart"):
        Checkpoint.open(path, source)
    assert Checkpoint.open(path, source, restart=True).done.count() == 0
    path.write_text("not json", encoding="utf-8")
    with pytest.raises(CheckpointMismatch, match="--restart"):
        Checkpoint.open(path, source)


def test_saving_never_leaves_half_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "c.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    checkpoint = Checkpoint.open(default_path(source), source, target=TARGET)
    checkpoint.done.add(1)
    checkpoint.save()

    def crash(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    checkpoint.done.add(2)
    with pytest.raises(OSError, match="disk gone"):
        checkpoint.save()
    assert Checkpoint.open(default_path(source), source).done.ranges() == [(1, 1)]


@pytest.mark.parametrize("key", ["tenant", "registrationId", "graph", "storage"])
def test_a_checkpoint_of_another_target_is_refused(tmp_path: Path, key: str) -> None:
    """Lines done against one registration (tenant, Graph, ledger) are not done against another."""
    source = tmp_path / "catalog.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    checkpoint = Checkpoint.open(default_path(source), source, target=TARGET)
    checkpoint.done.add(1)
    checkpoint.save()
    assert Checkpoint.open(default_path(source), source, target=TARGET).done.count() == 1
    elsewhere = {**TARGET, key: "other"}
    with pytest.raises(CheckpointMismatch, match=f"{key} 'other'.*--restart"):
        Checkpoint.open(default_path(source), source, target=elsewhere)
    assert Checkpoint.open(default_path(source), source, target=elsewhere, restart=True).done.count() == 0


def test_a_target_known_later_is_filled_in_and_then_compared(tmp_path: Path) -> None:
    """The CLI knows the tenant only once the token names it: an unknown part is filled in, not compared."""
    source = tmp_path / "catalog.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    checkpoint = Checkpoint.open(default_path(source), source, target={**TARGET, "tenant": None})
    checkpoint.bind(TARGET)
    assert checkpoint.target == TARGET
    checkpoint.save()
    with pytest.raises(CheckpointMismatch, match="tenant"):
        Checkpoint.open(default_path(source), source, target={**TARGET, "tenant": "t-2"})


def test_a_checkpoint_without_its_target_is_refused(tmp_path: Path) -> None:
    """A checkpoint of the first version says nothing of its target: it cannot be trusted for this one."""
    source = tmp_path / "catalog.ndjson"
    source.write_text("{}\n", encoding="utf-8")
    fingerprinted = Checkpoint.open(default_path(source), source).input
    default_path(source).write_text(
        json.dumps({"version": 1, "input": fingerprinted, "done": [[1, 1]], "extra": {}}), encoding="utf-8"
    )
    with pytest.raises(CheckpointMismatch, match="--restart"):
        Checkpoint.open(default_path(source), source, target=TARGET)


# -- the catalog reader ---------------------------------------------------------------------------------


def line(external_id: str, **extra: Any) -> str:
    import json

    body = {"externalId": external_id, "title": "T", "contentWebUrl": "https://x/1", "languageTag": "en-us", **extra}
    return json.dumps(body)


def test_ndjson_records_carry_their_line_numbers_and_problems() -> None:
    text = ["\ufeff" + line("a"), "", "{oops", line("b", level="expert"), "[1]", line("c", id="graph-id")]
    found = list(records(text, "ndjson"))
    assert [r.line for r in found] == [1, 3, 4, 5, 6]
    assert found[0].external_id == "a"
    assert found[1].problems[0].message.startswith("invalid JSON")
    assert (found[2].problems[0].line, found[2].problems[0].pointer) == (4, "/level")
    assert "JSON object" in found[3].problems[0].message
    assert found[4].external_id == "c"  # Graph's read-only id is dropped, as `content list` output has it


def test_csv_cells_become_typed_properties() -> None:
    text = (
        "externalId,title,contentWebUrl,languageTag,skillTags,isPremium,numberOfPages,description\n"
        'a,"A, quoted",https://x/1,en-us,python; data ;,TRUE,12,"Multi\nline"\n'
        "b,B,https://x/2,en-us,,no,12x,\n"
        ",,,,,,,\n"
        "c,C,https://x/3,en-us,,,,extra,cell\n"
    )
    found = list(records(text.splitlines(keepends=True), "csv"))
    assert [r.line for r in found] == [2, 4, 6]
    first = found[0].content
    assert first is not None
    assert first.title == "A, quoted"
    assert first.skill_tags == ["python", "data"]
    assert (first.is_premium, first.number_of_pages, first.description) == (True, 12, "Multi\nline")
    assert [(p.pointer, p.message) for p in found[1].problems] == [
        ("/isPremium", "must be true or false"),
        ("/numberOfPages", "must be an integer"),
    ]
    assert "cells" in found[2].problems[0].message


def test_a_csv_header_with_an_unknown_property_is_refused_whole() -> None:
    with pytest.raises(CatalogUnreadable, match="colour"):
        list(records(["externalId,colour\n", "a,red\n"], "csv"))


def test_the_format_comes_from_the_name_unless_given(tmp_path: Path) -> None:
    assert format_of("x.CSV") == "csv"
    assert format_of("x.jsonl") == "ndjson"
    assert format_of("x.txt", "csv") == "csv"
    with pytest.raises(CatalogUnreadable, match="--format"):
        format_of("x.txt")


def test_a_catalog_file_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    path.write_text("".join(line(f"i{n}") + "\n" for n in range(1000)), encoding="utf-8")
    stream = read_file(path, "ndjson")
    assert next(stream).line == 1  # a generator: nothing read beyond what was asked for
    assert sum(1 for _ in stream) == 999


# -- reconcile's diff -----------------------------------------------------------------------------------


def test_normalised_values_compare_defaults_and_instants() -> None:
    sent = {"externalId": "a", "title": "T", "contentWebUrl": "u", "languageTag": "en-us"}
    stored: dict[str, Any] = {
        **sent,
        "id": "g1",
        "@odata.etag": "x",
        "isActive": True,
        "isPremium": False,
        "skillTags": [],
        "description": None,
    }
    assert normalised(sent) == normalised(stored)
    a = normalised({**sent, "lastModifiedDateTime": "2026-01-01T10:00:00Z"})
    b = normalised({**sent, "lastModifiedDateTime": "2026-01-01T11:00:00+01:00"})
    assert a == b
    assert changed(normalised({**sent, "title": "U"}), normalised(stored)) == ["title"]
    assert deactivation({**stored, "isActive": False}) is None
    hidden = deactivation(stored)
    assert hidden is not None
    assert hidden["isActive"] is False
    assert "id" not in hidden


class FakeGraph:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_contents(self, registration_id: str) -> AsyncIterator[dict[str, Any]]:
        for item in self.items:
            yield item


def body(external_id: str, title: str, active: bool = True) -> dict[str, Any]:
    return {"externalId": external_id, "title": title, "contentWebUrl": "u", "languageTag": "en-us", "isActive": active}


titles = st.sampled_from(["a", "b"])
states = st.dictionaries(st.sampled_from([f"i{n}" for n in range(12)]), st.tuples(titles, st.booleans()), max_size=12)


@settings(max_examples=150, deadline=None)
@given(catalog=st.dictionaries(st.sampled_from([f"i{n}" for n in range(12)]), titles, max_size=12), graph=states)
def test_the_diff_sorts_every_item_into_exactly_one_kind(catalog: dict[str, str], graph: dict[str, Any]) -> None:
    from shared.catalog import validate

    rows = [validate(n, body(eid, title)) for n, (eid, title) in enumerate(sorted(catalog.items()), start=1)]

    def read() -> list[Record]:
        return rows

    listed = [body(eid, title, active) for eid, (title, active) in graph.items()]
    for removal in ("deactivate", "delete"):
        result = asyncio.run(plan(read, FakeGraph(listed), "reg", [], removal=removal))
        assert {e for _, e in result.create} == set(catalog) - set(graph)
        expected_updates = {e for e in set(catalog) & set(graph) if (catalog[e], True) != graph[e]}
        assert {e for _, e, _ in result.update} == expected_updates
        assert result.unchanged == len(set(catalog) & set(graph)) - len(expected_updates)
        gone = set(graph) - set(catalog)
        removed = {str(i["externalId"]) for i in result.remove}
        assert removed == (gone if removal == "delete" else {e for e in gone if graph[e][1]})
        for _, external_id, props in result.update:
            want = {"title"} if catalog[external_id] != graph[external_id][0] else set()
            if not graph[external_id][1]:
                want.add("isActive")
            assert set(props) == want


def test_the_diff_repairs_marked_items_of_the_catalog_and_reports_the_others() -> None:
    from shared.catalog import validate

    rows = [validate(1, body("a", "T")), validate(2, body("b", "T")), validate(3, body("a", "again"))]
    result = asyncio.run(plan(lambda: rows, FakeGraph([body("a", "T"), body("b", "T")]), "reg", ["a", "zz"]))
    assert result.repair == [(1, "a")]
    assert result.repair_missing == ["zz"]
    assert result.unchanged == 1
    assert [(p.line, p.pointer) for p in result.problems] == [(3, "/externalId")]  # a repeated id: the first wins
