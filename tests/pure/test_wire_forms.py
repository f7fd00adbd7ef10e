"""What goes on the wire: key segments (issue 8, point 2) and complete upsert bodies (point 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared import odata
from shared.models import LearningContent, upsert_body

REPO = Path(__file__).resolve().parents[2]
README = REPO / "local/graph_emulator/README.md"


def key_table() -> list[tuple[str, str, str]]:
    """(example id, wire form, evidence) rows of the key table in the emulator's README."""
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- key-table:start -->", 1)[1].split("<!-- key-table:end -->", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows.append((cells[1].strip("`"), cells[2].strip("`"), cells[3]))
    return rows


def test_the_key_table_covers_every_special_character() -> None:
    ids = "".join(example for example, _, _ in key_table())
    for char in ["/", "\\", "%", "#", "?", "+", "&", "'", " "]:
        assert char in ids, char
    assert any(not example.isascii() for example, _, _ in key_table())


@pytest.mark.parametrize(("external_id", "wire", "evidence"), key_table())
def test_key_literal_sends_what_the_table_says(external_id: str, wire: str, evidence: str) -> None:
    assert odata.key_literal(external_id) == wire
    assert evidence


def test_the_double_encoding_of_slash_is_the_reported_one() -> None:
    # microsoft-graph-docs issue 10167: "%2F" fails at Graph's front door, "%252F" works.
    assert odata.key_literal("a/b") == "'a%252Fb'"
    assert "%2F" not in odata.key_literal("a/b").replace("%252F", "")


def test_paths_use_the_one_key_function() -> None:
    assert odata.content_by_external_id("r", "O'Brien/1") == (
        "/employeeExperience/learningProviders/r/learningContents(externalId='O''Brien%252F1')"
    )
    assert odata.content_by_id("r", "a/b") == "/employeeExperience/learningProviders/r/learningContents/a%252Fb"
    assert odata.provider("p q") == "/employeeExperience/learningProviders/p%2520q"
    source = (REPO / "shared/odata.py").read_text(encoding="utf-8")
    assert source.count("quote(") == 1  # only the one encoder percent-encodes


def _metadata_properties() -> dict[str, dict[str, Any]]:
    raw = json.loads((REPO / "local/graph_metadata/learning-schemas.v1.0.json").read_text(encoding="utf-8"))
    return {p["name"]: p for p in raw["entityTypes"]["learningContent"]["properties"]}


def test_an_upsert_body_names_every_property_the_product_manages() -> None:
    minimal = LearningContent.model_validate(
        {"externalId": "x", "title": "t", "contentWebUrl": "https://lms.example/x", "languageTag": "en-us"}
    )
    body = minimal.to_upsert()
    assert set(body) == set(_metadata_properties())
    for name, prop in _metadata_properties().items():
        if name in ("externalId", "title", "contentWebUrl", "languageTag"):
            continue
        expected: Any = [] if prop["type"].startswith("Collection(") else None
        expected = {"isActive": True, "isPremium": False, "isSearchable": True}.get(name, expected)
        assert body[name] == expected, name


def test_given_values_are_kept_and_a_plain_dict_is_completed() -> None:
    full = LearningContent.model_validate(
        {
            "externalId": "x",
            "title": "t",
            "contentWebUrl": "u",
            "languageTag": "en-us",
            "description": "d",
            "skillTags": ["s"],
            "isActive": False,
        }
    ).to_upsert()
    assert (full["description"], full["skillTags"], full["isActive"]) == ("d", ["s"], False)
    completed = upsert_body({"externalId": "x", "title": "t", "level": "advanced"})
    assert completed["level"] == "advanced"
    assert completed["description"] is None
    assert completed["contributors"] == []
    assert re.fullmatch(r"[a-zA-Z]+", "".join(completed)) is not None  # property names only, no annotations
