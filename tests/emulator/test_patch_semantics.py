"""PATCH: merge (default) or replace (``--patch-semantics``), explicit nulls, partial PATCH by id.

learningcontent-update.md says the PATCH "replaces" the metadata; its property-table include says
absent properties "maintain their previous values". The emulator serves either reading; a client
that sends every managed property gets the same result under both.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url

WITH_DESCRIPTION = {**CONTENT_BODY, "description": "old", "skillTags": ["a"], "isPremium": True}
EXPLICIT_ABSENT: dict[str, Any] = {
    "description": None,
    "thumbnailWebUrl": None,
    "sourceName": None,
    "format": None,
    "level": None,
    "duration": None,
    "numberOfPages": None,
    "contributors": [],
    "additionalTags": [],
    "skillTags": [],
    "createdDateTime": None,
    "lastModifiedDateTime": None,
    "isActive": True,
    "isPremium": False,
    "isSearchable": True,
}


def semantics(client: httpx.Client, value: str) -> None:
    assert client.patch("/_emulator/settings", json={"patchSemantics": value}).status_code == 200


def test_merge_is_the_default_and_keeps_what_is_not_sent(client: httpx.Client, provider_id: str) -> None:
    url = content_url(provider_id, "(externalId='m')")
    assert client.patch(url, json=WITH_DESCRIPTION, headers=APP_WRITE).status_code == 202
    after = client.patch(url, json={**CONTENT_BODY, "title": "new"}, headers=APP_WRITE).json()
    assert (after["title"], after["description"], after["skillTags"], after["isPremium"]) == ("new", "old", ["a"], True)


def test_replace_resets_what_is_not_sent(client: httpx.Client, provider_id: str) -> None:
    semantics(client, "replace")
    url = content_url(provider_id, "(externalId='r')")
    first = client.patch(url, json=WITH_DESCRIPTION, headers=APP_WRITE).json()
    after = client.patch(url, json={**CONTENT_BODY, "title": "new"}, headers=APP_WRITE).json()
    assert after["id"] == first["id"]
    assert (after["description"], after["skillTags"], after["isPremium"]) == (None, None, False)


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_explicit_nulls_and_empty_collections_clear_under_both(
    client: httpx.Client, provider_id: str, mode: str
) -> None:
    semantics(client, mode)
    url = content_url(provider_id, "(externalId='c')")
    client.patch(url, json=WITH_DESCRIPTION, headers=APP_WRITE).raise_for_status()
    response = client.patch(url, json={**CONTENT_BODY, **EXPLICIT_ABSENT}, headers=APP_WRITE)
    assert response.status_code == 202, response.text
    stored = client.get(url, headers=APP_READ).json()
    for name, value in EXPLICIT_ABSENT.items():
        assert stored[name] == value, name


@pytest.mark.parametrize("name", ["title", "contentWebUrl", "languageTag", "externalId"])
def test_null_for_a_non_nullable_property_is_refused(client: httpx.Client, provider_id: str, name: str) -> None:
    url = content_url(provider_id, "(externalId='n')")
    response = client.patch(url, json={**CONTENT_BODY, **EXPLICIT_ABSENT, name: None}, headers=APP_WRITE)
    assert_graph_error(response, 400, "badRequest", f"'{name}'")


def test_partial_patch_by_id_is_accepted_under_merge(client: httpx.Client, provider_id: str) -> None:
    created = client.patch(
        content_url(provider_id, "(externalId='p')"), json=WITH_DESCRIPTION, headers=APP_WRITE
    ).json()
    by_id = content_url(provider_id, f"/{created['id']}")
    response = client.patch(by_id, json={"description": "only this"}, headers=APP_WRITE)
    assert response.status_code == 202, response.text
    stored = client.get(by_id, headers=APP_READ).json()
    assert (stored["description"], stored["title"], stored["externalId"]) == ("only this", CONTENT_BODY["title"], "p")


def test_partial_patch_by_id_needs_the_required_properties_under_replace(
    client: httpx.Client, provider_id: str
) -> None:
    semantics(client, "replace")
    created = client.patch(content_url(provider_id, "(externalId='q')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    response = client.patch(content_url(provider_id, f"/{created['id']}"), json={"description": "x"}, headers=APP_WRITE)
    assert_graph_error(response, 400, "badRequest", "Required property 'title'")
