"""Request-body validation against the CSDL-derived schema."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from local.graph_emulator.schema import check_datetime_offset, check_duration, load_metadata

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url

INVALID_BODIES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("unknown property", {**CONTENT_BODY, "foo": 1}, ("'foo'", "microsoft.graph.learningContent")),
    ("old contributor name", {**CONTENT_BODY, "contributor": "Ada"}, ("'contributor'",)),
    ("missing title", {k: v for k, v in CONTENT_BODY.items() if k != "title"}, ("'title'", "Required")),
    ("missing languageTag", {k: v for k, v in CONTENT_BODY.items() if k != "languageTag"}, ("'languageTag'",)),
    ("level expert", {**CONTENT_BODY, "level": "expert"}, ("level", "expert", "beginner")),
    ("level capitalised on v1.0", {**CONTENT_BODY, "level": "Beginner"}, ("did you mean 'beginner'", "beta")),
    ("level numeric", {**CONTENT_BODY, "level": 1}, ("level",)),
    ("duration PDT1H", {**CONTENT_BODY, "duration": "PDT1H"}, ("duration", "PDT1H")),
    ("duration words", {**CONTENT_BODY, "duration": "20 minutes"}, ("duration",)),
    ("duration bare T", {**CONTENT_BODY, "duration": "PT"}, ("duration",)),
    ("duration years", {**CONTENT_BODY, "duration": "P1Y"}, ("duration",)),
    ("datetime no offset", {**CONTENT_BODY, "createdDateTime": "2024-01-31T08:00:00"}, ("createdDateTime",)),
    ("datetime bad day", {**CONTENT_BODY, "lastModifiedDateTime": "2024-02-30T08:00:00Z"}, ("lastModifiedDateTime",)),
    ("datetime date only", {**CONTENT_BODY, "createdDateTime": "2024-01-31"}, ("createdDateTime",)),
    ("null title", {**CONTENT_BODY, "title": None}, ("'title'", "not nullable")),
    ("null contentWebUrl", {**CONTENT_BODY, "contentWebUrl": None}, ("'contentWebUrl'",)),
    ("id in body", {**CONTENT_BODY, "id": "1"}, ("'id'", "read-only")),
    ("string boolean", {**CONTENT_BODY, "isActive": "true"}, ("isActive",)),
    ("int32 overflow", {**CONTENT_BODY, "numberOfPages": 2**31}, ("numberOfPages", "Int32")),
    ("int32 float", {**CONTENT_BODY, "numberOfPages": 1.5}, ("numberOfPages",)),
    ("int32 bool", {**CONTENT_BODY, "numberOfPages": True}, ("numberOfPages",)),
    ("collection scalar", {**CONTENT_BODY, "skillTags": "python"}, ("skillTags", "array")),
    ("collection item type", {**CONTENT_BODY, "skillTags": ["a", 2]}, ("skillTags[1]",)),
    ("collection null item", {**CONTENT_BODY, "additionalTags": [None]}, ("additionalTags",)),
    ("title number", {**CONTENT_BODY, "title": 5}, ("'title'",)),
    ("odata.type", {**CONTENT_BODY, "@odata.type": "#microsoft.graph.learningProvider"}, ("@odata.type",)),
    ("externalId mismatch", {**CONTENT_BODY, "externalId": "other"}, ("other", "item-1")),
    ("externalId null", {**CONTENT_BODY, "externalId": None}, ("externalId",)),
    ("unknown annotation", {**CONTENT_BODY, "title@odata.foo": 1}, ("title@odata.foo",)),
]


@pytest.mark.parametrize(("body", "fragments"), [c[1:] for c in INVALID_BODIES], ids=[c[0] for c in INVALID_BODIES])
def test_invalid_content_bodies(
    client: httpx.Client, provider_id: str, body: dict[str, Any], fragments: tuple[str, ...]
) -> None:
    url = content_url(provider_id, "(externalId='item-1')")
    assert_graph_error(client.patch(url, json=body, headers=APP_WRITE), 400, "badRequest", *fragments)
    # Nothing was stored.
    assert_graph_error(client.get(url, headers=APP_READ), 404, "notFound")


@pytest.mark.parametrize(
    ("content", "content_type", "status", "fragment"),
    [
        (b'{"title": "x",', "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b'"text"', "application/json", 400, "JSON object"),
        (b"", "application/json", 400, "empty"),
        (b'{"title": "a", "title": "b"}', "application/json", 400, "Duplicate property"),
        (b'{"numberOfPages": NaN}', "application/json", 400, "NaN"),
        (b"\xff\xfe", "application/json", 400, "UTF-8"),
        (b'{"title": "x"}', "text/plain", 415, "text/plain"),
        (b'{"title": "x"}', "application/x-www-form-urlencoded", 415, "use 'application/json'"),
        (b'{"title": "x"}', "application/json; charset=latin-1", 415, "latin-1"),
    ],
    ids=["truncated", "array", "string", "empty", "duplicate", "nan", "bad-utf8", "text", "form", "charset"],
)
def test_malformed_payloads(
    client: httpx.Client, provider_id: str, content: bytes, content_type: str, status: int, fragment: str
) -> None:
    url = content_url(provider_id, "(externalId='m')")
    response = client.patch(url, content=content, headers={**APP_WRITE, "Content-Type": content_type})
    code = "badRequest" if status == 400 else "UnsupportedMediaType"
    assert_graph_error(response, status, code, fragment)


def test_missing_content_type(client: httpx.Client, provider_id: str) -> None:
    # microsoft-graph-docs-contrib issue 6337: Graph's answer to a JSON body without Content-Type.
    request = client.build_request("PATCH", content_url(provider_id, "(externalId='m')"), content=b'{"a": 1}')
    request.headers.update(APP_WRITE)
    assert "Content-Type" not in request.headers
    assert_graph_error(
        client.send(request), 400, "BadRequest", "Unable to read JSON request payload. Please ensure Content-Type"
    )


@pytest.mark.parametrize(
    ("version", "level", "stored"),
    [
        ("beta", "Beginner", "beginner"),
        ("beta", "Advanced", "advanced"),
        ("beta", "unknownFutureValue", "unknownFutureValue"),
        ("v1.0", "unknownFutureValue", "unknownFutureValue"),
        ("beta", "intermediate", "intermediate"),
    ],
)
def test_documented_level_spellings(
    client: httpx.Client, provider_id: str, version: str, level: str, stored: str
) -> None:
    """beta/resources/learningcontent.md lists Beginner, Intermediate, Advanced, unknownFutureValue; the
    CSDL (and v1.0) the lower-case members. Stored as the CSDL member."""
    url = content_url(provider_id, "(externalId='lvl')", version=version)
    response = client.patch(url, json={**CONTENT_BODY, "level": level}, headers=APP_WRITE)
    assert response.status_code == 202, response.text
    assert client.get(content_url(provider_id, "(externalId='lvl')"), headers=APP_READ).json()["level"] == stored


def test_capitalised_levels_are_beta_only(client: httpx.Client, provider_id: str) -> None:
    url = content_url(provider_id, "(externalId='lvl')")
    assert_graph_error(
        client.patch(url, json={**CONTENT_BODY, "level": "Intermediate"}, headers=APP_WRITE), 400, "badRequest"
    )
    beta = content_url(provider_id, "(externalId='lvl')", version="beta")
    assert_graph_error(
        client.patch(beta, json={**CONTENT_BODY, "level": "BEGINNER"}, headers=APP_WRITE), 400, "badRequest"
    )


def test_valid_edge_values_are_accepted(client: httpx.Client, provider_id: str) -> None:
    body = {
        **CONTENT_BODY,
        "externalId": "edge",
        "duration": "P1DT2H",
        "createdDateTime": "2024-01-31T08:00:00+05:30",
        "lastModifiedDateTime": "2024-01-31T08:00Z",
        "numberOfPages": 2**31 - 1,
        "level": "advanced",
        "skillTags": [],
        "description": None,
        "@odata.type": "#microsoft.graph.learningContent",
    }
    response = client.patch(content_url(provider_id, "(externalId='edge')"), json=body, headers=APP_WRITE)
    assert response.status_code == 202, response.text
    assert response.json()["duration"] == "P1DT2H"
    assert response.json()["skillTags"] == []


def test_schema_comes_from_metadata() -> None:
    content = load_metadata().entity("learningContent")
    assert "contributors" in content.properties
    assert "contributor" not in content.properties
    assert content.properties["title"].nullable is False
    assert content.properties["duration"].type == "Edm.Duration"
    assert content.alternate_keys == ("externalId",)
    assert load_metadata().enums["level"] == ("beginner", "intermediate", "advanced", "unknownFutureValue")


@pytest.mark.parametrize("value", ["PT20M", "P1D", "P1DT2H", "PT0.5S", "-PT1H", "P2DT3H4M5.25S"])
def test_duration_accepts(value: str) -> None:
    check_duration(value)


@pytest.mark.parametrize("value", ["PDT1H", "P", "PT", "20 minutes", "P1W", "PT1H1D", "pt1h", "P1.5D"])
def test_duration_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        check_duration(value)


@pytest.mark.parametrize(
    "value", ["2024-01-31T08:00:00", "2024-01-31 08:00:00Z", "2024-13-01T00:00:00Z", "2024-01-31T08:00:00+25:00"]
)
def test_datetime_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"date-time|offset"):
        check_datetime_offset(value)
