"""OData key syntax: hostile external ids round-trip, malformed keys are rejected."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from local.graph_emulator.errors import GraphError
from local.graph_emulator.odata import KeyPredicate, parse_segment, split_target

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url

HOSTILE_IDS = [
    "O'Brien",
    "''",
    "a/b/c",
    "1+1",
    "C#",
    "100%",
    "%41",
    "two words",
    "Ünïcödé-日本語",
    "a)b(c",
    "x=y,z",
    "?q=1&r=2",
    "$ref",
    "trailing/",
    "emoji 🎓",
]


def key_segment(external_id: str, *, encode_quotes: bool) -> str:
    """Build ``(externalId='…')`` with the literal's quotes doubled, then percent-encoded."""
    literal = "'" + external_id.replace("'", "''") + "'"
    encoded = quote(literal, safe="" if encode_quotes else "'")
    return f"(externalId={encoded})"


@pytest.mark.parametrize("external_id", HOSTILE_IDS)
@pytest.mark.parametrize("encode_quotes", [False, True], ids=["raw-quotes", "encoded-quotes"])
def test_hostile_external_ids_round_trip(
    client: httpx.Client, provider_id: str, external_id: str, encode_quotes: bool
) -> None:
    url = content_url(provider_id, key_segment(external_id, encode_quotes=encode_quotes))
    created = client.patch(url, json=CONTENT_BODY, headers=APP_WRITE)
    assert created.status_code == 202, created.text
    assert created.json()["externalId"] == external_id

    got = client.get(url, headers=APP_READ)
    assert got.status_code == 200, got.text
    assert got.json()["externalId"] == external_id
    assert got.json()["id"] == created.json()["id"]

    listed = client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"]
    assert [item["externalId"] for item in listed] == [external_id]

    assert client.delete(url + "/$ref", headers=APP_WRITE).status_code == 204
    assert client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"] == []


def test_ids_differing_only_in_encoding_are_distinct(client: httpx.Client, provider_id: str) -> None:
    for external_id in ("a b", "a+b", "a%20b"):
        url = content_url(provider_id, key_segment(external_id, encode_quotes=False))
        assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202
    listed = client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"]
    assert [item["externalId"] for item in listed] == ["a b", "a+b", "a%20b"]


@pytest.mark.parametrize(
    ("segment", "fragment"),
    [
        ("(externalId='O'Brien')", "two single quotes"),
        ("(externalId=abc)", "single quotes"),
        ("(externalId='abc)", "not terminated"),
        ("(externalId='')", "empty"),
        ("(externalID='abc')", "'externalID' is not a key"),
        ("(title='abc')", "'title' is not a key"),
        ("(externalId='abc')junk", "after ')'"),
        ("(externalId='abc'", "missing ')'"),
        ("(externalId='a','b')", "composite"),
        ("(externalId= 'abc')", "single quotes"),
        ("(abc)", "single quotes"),
        ("()", "single quotes"),
        ("(externalId='%FF')", "UTF-8"),
    ],
)
def test_malformed_keys(client: httpx.Client, provider_id: str, segment: str, fragment: str) -> None:
    url = content_url(provider_id, segment)
    assert_graph_error(client.get(url, headers=APP_READ), 400, "BadRequest", fragment)
    assert_graph_error(client.patch(url, json=CONTENT_BODY, headers=APP_WRITE), 400, "BadRequest", fragment)
    assert client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"] == []


def test_encoded_slash_does_not_split_segments(client: httpx.Client, provider_id: str) -> None:
    # Decoding before splitting would read this as the segment "b')" after "(externalId='a".
    url = content_url(provider_id, "(externalId='a%2Fb')")
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202
    assert client.get(url, headers=APP_READ).json()["externalId"] == "a/b"
    unencoded = content_url(provider_id, "(externalId='a/b')")
    assert client.get(unencoded, headers=APP_READ).status_code == 400


def test_segment_parser_units() -> None:
    assert parse_segment("learningContents(externalId='O''Brien')").key == KeyPredicate("externalId", "O'Brien")
    assert parse_segment("learningContents('abc')").key == KeyPredicate(None, "abc")
    assert parse_segment("x(externalId=%27a%2Fb%27)").key == KeyPredicate("externalId", "a/b")
    assert parse_segment("x(externalId='a+b')").key == KeyPredicate("externalId", "a+b")
    assert parse_segment("learningContents").key is None
    with pytest.raises(GraphError):
        parse_segment("x(externalId='a'b')")
    segments, query = split_target("/v1.0/a/b(externalId='x%2Fy')/?$top=1")
    assert segments == ["v1.0", "a", "b(externalId='x%2Fy')"]
    assert query == "$top=1"
