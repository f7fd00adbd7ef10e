"""learningContent: upsert, reads by both keys, $select, deletes and permissions."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .conftest import (
    APP_READ,
    APP_WRITE,
    CONTENT_BODY,
    USER_CONTENT_READ,
    assert_graph_error,
    bearer,
    content_url,
)

FULL_BODY = {
    **CONTENT_BODY,
    "externalId": "course-1",
    "description": "Learn Python",
    "thumbnailWebUrl": "https://contoso.example/t.png",
    "sourceName": "Contoso",
    "format": "Course",
    "level": "intermediate",
    "duration": "PT1H30M",
    "numberOfPages": 12,
    "contributors": ["Ada", "Linus"],
    "additionalTags": ["python"],
    "skillTags": ["programming"],
    "createdDateTime": "2024-01-31T08:00:00Z",
    "lastModifiedDateTime": "2024-02-01T10:15:30.1234567+02:00",
    "isActive": False,
    "isPremium": True,
    "isSearchable": False,
    "@odata.type": "#microsoft.graph.learningContent",
}


def test_upsert_creates_then_replaces(client: httpx.Client, provider_id: str) -> None:
    assert client.patch("/_emulator/settings", json={"patchSemantics": "replace"}).status_code == 200
    url = content_url(provider_id, "(externalId='course-1')")
    created = client.patch(url, json=FULL_BODY, headers=APP_WRITE)
    assert created.status_code == 202, created.text
    body = created.json()
    content_id = body["id"]
    uuid.UUID(content_id)
    assert body["@odata.context"].endswith(f"learningProviders('{provider_id}')/learningContents/$entity")
    assert body["externalId"] == "course-1"
    assert body["contributors"] == ["Ada", "Linus"]
    assert body["isPremium"] is True

    # Replace: properties not sent go back to their defaults, the id stays.
    replaced = client.patch(url, json={**CONTENT_BODY, "title": "Python 2"}, headers=APP_WRITE)
    assert replaced.status_code == 202
    after = replaced.json()
    assert after["id"] == content_id
    assert after["title"] == "Python 2"
    assert after["isActive"] is True
    assert after["isPremium"] is False
    assert after["isSearchable"] is True
    for reset in ("description", "level", "duration", "numberOfPages", "contributors", "createdDateTime"):
        assert after[reset] is None, reset
    stored = client.get(url, headers=APP_READ).json()
    assert {k: v for k, v in stored.items() if k != "@odata.context"} == {
        k: v for k, v in after.items() if k != "@odata.context"
    }
    assert len(client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"]) == 1


def test_get_by_external_id_and_by_id(client: httpx.Client, provider_id: str) -> None:
    created = client.patch(content_url(provider_id, "(externalId='abc')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    by_external = client.get(content_url(provider_id, "(externalId='abc')"), headers=APP_READ)
    by_id = client.get(content_url(provider_id, f"/{created['id']}"), headers=APP_READ)
    by_paren_id = client.get(content_url(provider_id, f"('{created['id']}')"), headers=APP_READ)
    assert by_external.status_code == by_id.status_code == by_paren_id.status_code == 200
    assert by_external.json()["id"] == by_id.json()["id"] == by_paren_id.json()["id"] == created["id"]
    assert by_id.json()["title"] == CONTENT_BODY["title"]
    assert_graph_error(
        client.get(content_url(provider_id, "(externalId='zzz')"), headers=APP_READ), 404, "notFound", "zzz"
    )
    assert_graph_error(client.get(content_url(provider_id, "/nope"), headers=APP_READ), 404, "notFound")


def test_patch_by_id(client: httpx.Client, provider_id: str) -> None:
    created = client.patch(content_url(provider_id, "(externalId='x1')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    url = content_url(provider_id, f"/{created['id']}")
    updated = client.patch(url, json={**CONTENT_BODY, "title": "new"}, headers=APP_WRITE)
    assert updated.status_code == 202
    assert updated.json()["title"] == "new"
    assert updated.json()["externalId"] == "x1"
    assert_graph_error(
        client.patch(url, json={**CONTENT_BODY, "externalId": "other"}, headers=APP_WRITE), 400, "badRequest", "other"
    )
    missing = content_url(provider_id, f"/{uuid.uuid4()}")
    assert_graph_error(client.patch(missing, json=CONTENT_BODY, headers=APP_WRITE), 404, "notFound")


def test_select(client: httpx.Client, provider_id: str) -> None:
    client.patch(content_url(provider_id, "(externalId='s')"), json=FULL_BODY | {"externalId": "s"}, headers=APP_WRITE)
    one = client.get(content_url(provider_id, "(externalId='s')?$select=title,externalId"), headers=APP_READ).json()
    assert set(one) == {"@odata.context", "title", "externalId"}
    assert one["@odata.context"].endswith("learningContents(title,externalId)/$entity")
    many = client.get(content_url(provider_id, "?$select=id,level"), headers=APP_READ).json()
    assert [set(item) for item in many["value"]] == [{"id", "level"}]
    assert_graph_error(
        client.get(content_url(provider_id, "?$select=title,foo"), headers=APP_READ), 400, "badRequest", "'foo'"
    )
    assert_graph_error(client.get(content_url(provider_id, "?$select="), headers=APP_READ), 400, "badRequest")


@pytest.mark.parametrize("by", ["externalId", "id"])
def test_delete(client: httpx.Client, provider_id: str, by: str) -> None:
    suffix = "/$ref"  # the documented form; test_delete_forms.py covers the others
    created = client.patch(content_url(provider_id, "(externalId='d')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    key = "(externalId='d')" if by == "externalId" else f"/{created['id']}"
    url = content_url(provider_id, key + suffix)
    response = client.delete(url, headers=APP_WRITE)
    assert response.status_code == 204
    assert response.content == b""
    assert_graph_error(client.get(content_url(provider_id, key), headers=APP_READ), 404, "notFound")
    assert_graph_error(client.delete(url, headers=APP_WRITE), 404, "notFound")
    # A re-created item gets a new id.
    again = client.patch(content_url(provider_id, "(externalId='d')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    assert again["id"] != created["id"]


def test_ref_only_for_delete(client: httpx.Client, provider_id: str) -> None:
    client.patch(content_url(provider_id, "(externalId='r')"), json=CONTENT_BODY, headers=APP_WRITE)
    response = client.get(content_url(provider_id, "(externalId='r')/$ref"), headers=APP_READ)
    assert_graph_error(response, 405, "methodNotAllowed")
    assert response.headers["Allow"] == "DELETE"


def test_permissions(client: httpx.Client, provider_id: str) -> None:
    url = content_url(provider_id, "(externalId='p')")
    delegated_writer = bearer(scopes=("LearningContent.ReadWrite.All", "LearningContent.Read.All"))
    assert_graph_error(client.patch(url, json=CONTENT_BODY, headers=delegated_writer), 403, "forbidden", "Delegated")
    assert_graph_error(client.delete(url + "/$ref", headers=USER_CONTENT_READ), 403, "forbidden")
    assert_graph_error(
        client.patch(url, json=CONTENT_BODY, headers=APP_READ), 403, "forbidden", "LearningContent.ReadWrite.All"
    )
    assert_graph_error(client.get(url, headers=bearer(roles=("User.Read.All",))), 403, "forbidden")
    assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202
    # Delegated LearningContent.Read.All may read.
    assert client.get(url, headers=USER_CONTENT_READ).status_code == 200
    assert client.get(content_url(provider_id, ""), headers=USER_CONTENT_READ).status_code == 200
    assert_graph_error(
        client.get(url, headers=bearer(scopes=("LearningProvider.Read",))), 403, "forbidden", "LearningContent.Read.All"
    )


def test_unknown_provider(client: httpx.Client) -> None:
    unknown = str(uuid.uuid4())
    for response in (
        client.get(content_url(unknown, ""), headers=APP_READ),
        client.get(content_url(unknown, "(externalId='a')"), headers=APP_READ),
        client.patch(content_url(unknown, "(externalId='a')"), json=CONTENT_BODY, headers=APP_WRITE),
        client.delete(content_url(unknown, "(externalId='a')/$ref"), headers=APP_WRITE),
    ):
        assert_graph_error(response, 400, "badRequest", "Invalid registrationId", unknown)


def test_no_token_on_content(client: httpx.Client, provider_id: str) -> None:
    url = content_url(provider_id, "(externalId='a')")
    assert_graph_error(client.patch(url, json=CONTENT_BODY), 401, "InvalidAuthenticationToken", "empty")


def test_beta_and_v1_share_data(client: httpx.Client, provider_id: str) -> None:
    beta = client.patch(
        content_url(provider_id, "(externalId='b')", version="beta"), json=CONTENT_BODY, headers=APP_WRITE
    )
    assert beta.status_code == 202
    assert "/beta/$metadata#" in beta.json()["@odata.context"]
    v1 = client.get(content_url(provider_id, "(externalId='b')"), headers=APP_READ)
    assert v1.status_code == 200
    assert "/v1.0/$metadata#" in v1.json()["@odata.context"]
    beta_providers = client.get(
        "/beta/employeeExperience/learningProviders", headers=bearer(scopes=("LearningProvider.Read",))
    )
    assert [p["id"] for p in beta_providers.json()["value"]] == [provider_id]
