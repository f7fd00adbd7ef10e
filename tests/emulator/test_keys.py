"""OData key syntax: hostile external ids round-trip, malformed keys are rejected."""

from __future__ import annotations

import httpx
import pytest

from local.graph_emulator.errors import GraphError
from local.graph_emulator.odata import KeyPredicate, parse_segment, split_target
from shared.odata import key_literal

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
    "back\\slash",
    "a/b c'd%e",
]


def key_segment(external_id: str, *, encode_quotes: bool) -> str:
    """``(externalId='…')`` as the product sends it (``shared.odata.key_literal``, the one key function).

    ``encode_quotes`` also sends the literal's quotes as ``%27``: the front door decodes them back.
    """
    literal = key_literal(external_id)
    return "(externalId=" + (literal.replace("'", "%27") if encode_quotes else literal) + ")"


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


def test_a_single_encoded_slash_splits_the_key_at_the_front_door(client: httpx.Client, provider_id: str) -> None:
    """microsoft-graph-docs issue 10167: ``%2F`` gives 400 RequestBroker--ParseUri, ``%252F`` works."""
    single = content_url(provider_id, "(externalId='a%2Fb')")
    response = client.patch(single, json=CONTENT_BODY, headers=APP_WRITE)
    assert_graph_error(response, 400, "RequestBroker--ParseUri", "Resource not found for the segment 'b')'")
    assert_graph_error(client.get(single, headers=APP_READ), 400, "RequestBroker--ParseUri")
    unencoded = content_url(provider_id, "(externalId='a/b')")
    assert_graph_error(client.get(unencoded, headers=APP_READ), 400, "RequestBroker--ParseUri")
    double = content_url(provider_id, "(externalId='a%252Fb')")
    assert client.patch(double, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202
    assert client.get(double, headers=APP_READ).json()["externalId"] == "a/b"
    assert [i["externalId"] for i in client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"]] == [
        "a/b"
    ]


@pytest.mark.parametrize(
    ("segment", "code", "fragment"),
    [
        ("(externalId='a%5Cb')", "RequestBroker--ParseUri", "segment 'b')'"),  # \ is a separator once decoded
        ("(externalId='100%25')", "badRequest", "percent"),  # the key is decoded a second time
        ("(externalId='a%3Fb')", "badRequest", "'?'"),
        ("(externalId='a%23b')", "badRequest", "'#'"),
    ],
)
def test_other_single_encodings_are_refused(
    client: httpx.Client, provider_id: str, segment: str, code: str, fragment: str
) -> None:
    response = client.patch(content_url(provider_id, segment), json=CONTENT_BODY, headers=APP_WRITE)
    assert_graph_error(response, 400, code, fragment)
    assert client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"] == []


def test_a_single_encoded_percent_escape_is_decoded_twice(client: httpx.Client, provider_id: str) -> None:
    # "%41" sent as '%2541' arrives as "A": why every percent-escape in a key is encoded twice.
    url = content_url(provider_id, "(externalId='%2541')")
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).json()["externalId"] == "A"


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
    assert_graph_error(client.get(url, headers=APP_READ), 400, "badRequest", fragment)
    assert_graph_error(client.patch(url, json=CONTENT_BODY, headers=APP_WRITE), 400, "badRequest", fragment)
    assert client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"] == []


def test_segment_parser_units() -> None:
    assert parse_segment("learningContents(externalId='O''Brien')").key == KeyPredicate("externalId", "O'Brien")
    assert parse_segment("learningContents('abc')").key == KeyPredicate(None, "abc")
    assert parse_segment("x(externalId='a%2Fb')").key == KeyPredicate("externalId", "a/b")  # the second decode
    assert parse_segment("x(externalId='a+b')").key == KeyPredicate("externalId", "a+b")
    assert parse_segment("learningContents").key is None
    with pytest.raises(GraphError):
        parse_segment("x(externalId='a'b')")
    # The front door decodes once: %27 becomes a quote, %252F stays %2F, %2F becomes a separator.
    segments, query = split_target("/v1.0/a/b(externalId=%27x%252Fy%27)/?$top=1")
    assert segments == ["v1.0", "a", "b(externalId='x%2Fy')"]
    assert query == "$top=1"
    assert split_target("/v1.0/b(externalId='x%2Fy')")[0] == ["v1.0", "b(externalId='x", "y')"]
