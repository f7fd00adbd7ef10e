"""Provider CRUD (delegated-only), authentication and tenant isolation."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from local import tokens

from .conftest import ADMIN, APP_WRITE, PROVIDER_BODY, PROVIDERS, assert_graph_error, bearer, content_url

READER = bearer(scopes=("LearningProvider.Read",))
FOREIGN_TOKEN, _ = tokens.mint(
    tokens.TokenRequest(scopes=("LearningProvider.Read",)), key="another-signing-key-that-is-long-enough-for-hs256"
)


def test_provider_lifecycle(client: httpx.Client) -> None:
    created = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN)
    assert created.status_code == 201
    body = created.json()
    provider_id = body["id"]
    uuid.UUID(provider_id)
    assert body["displayName"] == "Contoso Academy"
    assert body["isCourseActivitySyncEnabled"] is False
    assert body["loginWebUrl"] is None
    assert body["@odata.context"].endswith("/v1.0/$metadata#employeeExperience/learningProviders/$entity")
    assert created.headers["Location"].endswith(f"learningProviders('{provider_id}')")

    got = client.get(f"{PROVIDERS}/{provider_id}", headers=READER)
    assert got.status_code == 200
    assert got.json()["longLogoWebUrlForLightTheme"] == PROVIDER_BODY["longLogoWebUrlForLightTheme"]

    listed = client.get(PROVIDERS, headers=READER)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["value"]] == [provider_id]

    updated = client.patch(
        f"{PROVIDERS}/{provider_id}",
        json={"isCourseActivitySyncEnabled": True, "loginWebUrl": "https://x"},
        headers=ADMIN,
    )
    assert updated.status_code == 204
    assert updated.content == b""
    after = client.get(f"{PROVIDERS}('{provider_id}')", headers=READER).json()
    assert after["isCourseActivitySyncEnabled"] is True
    assert after["loginWebUrl"] == "https://x"
    assert after["displayName"] == "Contoso Academy"  # partial update keeps the rest

    assert client.delete(f"{PROVIDERS}/{provider_id}", headers=ADMIN).status_code == 204
    assert_graph_error(client.get(f"{PROVIDERS}/{provider_id}", headers=READER), 404, "notFound", provider_id)
    assert_graph_error(client.delete(f"{PROVIDERS}/{provider_id}", headers=ADMIN), 404, "notFound")


def test_provider_select(client: httpx.Client, provider_id: str) -> None:
    one = client.get(f"{PROVIDERS}/{provider_id}?$select=displayName,id", headers=READER).json()
    assert set(one) == {"@odata.context", "id", "displayName"}
    assert one["@odata.context"].endswith("learningProviders(displayName,id)/$entity")
    many = client.get(f"{PROVIDERS}?$select=displayName", headers=READER).json()
    assert many["value"] == [{"displayName": "Contoso Academy"}]
    assert_graph_error(client.get(f"{PROVIDERS}?$select=nope", headers=READER), 400, "badRequest", "'nope'")


def test_app_token_is_rejected_for_providers(client: httpx.Client) -> None:
    app = bearer(roles=("LearningProvider.ReadWrite", "LearningContent.ReadWrite.All"))
    assert_graph_error(
        client.get(PROVIDERS, headers=app), 403, "forbidden", "Application permissions are not supported"
    )
    assert_graph_error(client.post(PROVIDERS, json=PROVIDER_BODY, headers=APP_WRITE), 403, "forbidden")


def test_provider_scopes(client: httpx.Client, provider_id: str) -> None:
    assert_graph_error(client.post(PROVIDERS, json=PROVIDER_BODY, headers=READER), 403, "forbidden", "ReadWrite")
    assert_graph_error(
        client.patch(f"{PROVIDERS}/{provider_id}", json={"displayName": "x"}, headers=READER), 403, "forbidden"
    )
    other_scope = bearer(scopes=("User.Read",))
    assert_graph_error(client.get(PROVIDERS, headers=other_scope), 403, "forbidden", "LearningProvider.Read")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Access token is empty."),
        ({"Authorization": "Bearer"}, "Access token is empty."),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Access token is empty."),
        ({"Authorization": "Bearer not-a-jwt"}, "Access token validation failure"),
        (bearer(scopes=("LearningProvider.Read",), audience="api://someone-else"), "Invalid audience."),
        (bearer(scopes=("LearningProvider.Read",), lifetime_seconds=-120), "expired"),
        ({"Authorization": f"Bearer {FOREIGN_TOKEN}"}, "Access token validation failure"),
        (bearer(), "Either scp or roles claim"),
    ],
    ids=["none", "empty", "basic", "garbage", "audience", "expired", "signature", "no-claims"],
)
def test_authentication_failures(client: httpx.Client, headers: dict[str, str], message: str) -> None:
    response = client.get(PROVIDERS, headers=headers)
    assert_graph_error(response, 401, "InvalidAuthenticationToken", message)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_tenants_are_isolated(client: httpx.Client, provider_id: str) -> None:
    other_admin = bearer(scopes=("LearningProvider.ReadWrite",), tenant_id=str(uuid.uuid4()))
    assert client.get(PROVIDERS, headers=other_admin).json()["value"] == []
    assert_graph_error(client.get(f"{PROVIDERS}/{provider_id}", headers=other_admin), 404, "notFound")
    other_app = bearer(roles=("LearningContent.ReadWrite.All",), tenant_id=str(uuid.uuid4()))
    assert_graph_error(
        client.get(content_url(provider_id, ""), headers=other_app), 400, "badRequest", "Invalid registrationId"
    )


def test_provider_validation(client: httpx.Client, provider_id: str) -> None:
    missing = {k: v for k, v in PROVIDER_BODY.items() if k != "longLogoWebUrlForDarkTheme"}
    assert_graph_error(
        client.post(PROVIDERS, json=missing, headers=ADMIN), 400, "badRequest", "'longLogoWebUrlForDarkTheme'"
    )
    assert_graph_error(
        client.patch(f"{PROVIDERS}/{provider_id}", json={"displayName": None}, headers=ADMIN),
        400,
        "badRequest",
        "'displayName'",
        "not nullable",
    )
    assert_graph_error(
        client.patch(f"{PROVIDERS}/{provider_id}", json={"isCourseActivitySyncEnabled": "yes"}, headers=ADMIN),
        400,
        "badRequest",
        "isCourseActivitySyncEnabled",
    )
    assert_graph_error(
        client.post(PROVIDERS, json={**PROVIDER_BODY, "learningContents": []}, headers=ADMIN),
        400,
        "badRequest",
        "learningContents",
    )
    # Nothing above changed the stored provider.
    assert client.get(f"{PROVIDERS}/{provider_id}", headers=ADMIN).json()["displayName"] == "Contoso Academy"


def test_deleting_a_provider_deletes_its_content(client: httpx.Client, provider_id: str) -> None:
    body = {"title": "t", "contentWebUrl": "https://c", "languageTag": "en-us"}
    assert client.patch(content_url(provider_id, "(externalId='a')"), json=body, headers=APP_WRITE).status_code == 202
    assert client.delete(f"{PROVIDERS}/{provider_id}", headers=ADMIN).status_code == 204
    assert_graph_error(
        client.get(content_url(provider_id, "(externalId='a')"), headers=APP_WRITE), 400, "badRequest", provider_id
    )
    state = client.get("/_emulator/state").json()
    assert all(not t["providers"] for t in state["tenants"].values())


def test_request_ids(client: httpx.Client) -> None:
    echoed = client.get(PROVIDERS, headers={**ADMIN, "client-request-id": "my-correlation-id"})
    assert echoed.headers["client-request-id"] == "my-correlation-id"
    uuid.UUID(echoed.headers["request-id"])
    failed = client.get(PROVIDERS, headers={"client-request-id": "abc"})
    error = assert_graph_error(failed, 401, "InvalidAuthenticationToken")
    assert error["innerError"]["client-request-id"] == "abc"
    generated = client.get(PROVIDERS, headers=ADMIN)
    uuid.UUID(generated.headers["client-request-id"])
    assert time.strftime("%Y") in failed.json()["error"]["innerError"]["date"]
