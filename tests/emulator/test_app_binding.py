"""``--app-binding``: a provider is bound to the app that registered it (issue 13).

Microsoft's unpublished draft ISV guide (microsoft-graph-docs PR 17789) says the registration takes
its app id "from the token (not a request parameter)" and the ISV app pushes content as the same app,
so Graph may refuse content written by another app (inferred). ``strict-app`` (the default) refuses
every content write of another app with 403 ``accessDenied``; ``lenient`` accepts it. Reads are open
to any app with a read permission.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from local import tokens
from local.graph_emulator import EmulatorState, run_in_thread
from local.graph_emulator.__main__ import parse_args
from local.graph_emulator.auth import authenticate

from .conftest import CONTENT_BODY, PROVIDER_BODY, PROVIDERS, assert_graph_error, bearer, content_url

APP_A = "aaaaaaaa-0000-4000-8000-00000000000a"
APP_B = "bbbbbbbb-0000-4000-8000-00000000000b"
REGISTER = ("LearningProvider.ReadWrite",)
WRITE = ("LearningContent.ReadWrite.All",)
READ = ("LearningContent.Read.All",)

ADMIN_A = bearer(scopes=REGISTER, client_id=APP_A)
ADMIN_B = bearer(scopes=REGISTER, client_id=APP_B)
WRITE_A = bearer(roles=WRITE, client_id=APP_A)
WRITE_B = bearer(roles=WRITE, client_id=APP_B)
READ_B = bearer(roles=READ, client_id=APP_B)
USER_READ_B = bearer(scopes=READ, client_id=APP_B)
BOUND = "the registration is bound to the app that registered it"

# Every content write the emulator serves: the upsert, the PATCH by id and the four delete forms
# (under deleteForms "both"). (method, key: "ext" or "id", suffix)
WRITE_FORMS = [
    ("PATCH", "ext", ""),
    ("PATCH", "id", ""),
    ("DELETE", "ext", "/$ref"),
    ("DELETE", "id", "/$ref"),
    ("DELETE", "ext", ""),
    ("DELETE", "id", ""),
]
FORM_IDS = ["upsert", "patch-by-id", "delete-ext-ref", "delete-id-ref", "delete-ext", "delete-id"]


def register(client: httpx.Client, admin: dict[str, str] = ADMIN_A) -> str:
    response = client.post(PROVIDERS, json=PROVIDER_BODY, headers=admin)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def put(client: httpx.Client, provider_id: str, external_id: str, headers: dict[str, str], **body: Any) -> str:
    response = client.patch(
        content_url(provider_id, f"(externalId='{external_id}')"), json={**CONTENT_BODY, **body}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def write(
    client: httpx.Client, provider_id: str, form: tuple[str, str, str], content_id: str, headers: dict[str, str]
) -> httpx.Response:
    method, by, suffix = form
    key = "(externalId='c')" if by == "ext" else f"/{content_id}"
    body = {**CONTENT_BODY, "title": "changed"} if method == "PATCH" else None
    return client.request(method, content_url(provider_id, key + suffix), json=body, headers=headers)


def settings(client: httpx.Client, **changes: object) -> dict[str, Any]:
    response = client.patch("/_emulator/settings", json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


def registrations(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/_emulator/providers")
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


# -- the binding ---------------------------------------------------------------------------------
def test_the_token_app_id_reaches_the_caller() -> None:
    caller = authenticate(WRITE_A["Authorization"])
    assert (caller.kind, caller.app_id) == ("app", APP_A)
    assert authenticate(ADMIN_B["Authorization"]).app_id == APP_B
    claims = {"aud": tokens.GRAPH_AUDIENCE, "tid": tokens.DEFAULT_TENANT_ID, "exp": 4_102_444_800}
    no_appid = jwt.encode({**claims, "idtyp": "app", "roles": list(WRITE)}, tokens.signing_key(), algorithm="HS256")
    assert authenticate(f"Bearer {no_appid}").app_id is None
    v2 = jwt.encode({**claims, "idtyp": "app", "roles": list(WRITE), "azp": APP_B}, tokens.signing_key(), "HS256")
    assert authenticate(f"Bearer {v2}").app_id == APP_B


def test_registration_records_the_app_of_the_delegated_token(client: httpx.Client) -> None:
    created = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN_A)
    assert created.status_code == 201
    provider_id = created.json()["id"]
    assert registrations(client) == [
        {
            "tenantId": tokens.DEFAULT_TENANT_ID,
            "id": provider_id,
            "displayName": PROVIDER_BODY["displayName"],
            "registeredByAppId": APP_A,
        }
    ]
    # Bookkeeping, not a Graph property: no Graph answer shows it, and a body cannot set it.
    assert "registeredByAppId" not in created.json()
    assert "registeredByAppId" not in client.get(f"{PROVIDERS}/{provider_id}", headers=ADMIN_A).json()
    assert "registeredByAppId" not in client.get(PROVIDERS, headers=ADMIN_A).json()["value"][0]
    refused = client.post(PROVIDERS, json={**PROVIDER_BODY, "registeredByAppId": APP_B}, headers=ADMIN_A)
    assert_graph_error(refused, 400, "badRequest", "registeredByAppId")
    assert [r["registeredByAppId"] for r in registrations(client)] == [APP_A]
    state = client.get("/_emulator/state").json()
    assert state["tenants"][tokens.DEFAULT_TENANT_ID]["providers"][0]["registeredByAppId"] == APP_A
    assert client.post("/_emulator/providers").status_code == 405


def test_providers_view_covers_every_tenant(client: httpx.Client) -> None:
    other_tenant = "00000000-0000-0000-0000-0000000000b2"
    first = register(client, ADMIN_A)
    second = register(client, bearer(scopes=REGISTER, client_id=APP_B, tenant_id=other_tenant))
    assert sorted((r["tenantId"], r["id"], r["registeredByAppId"]) for r in registrations(client)) == sorted(
        [(tokens.DEFAULT_TENANT_ID, first, APP_A), (other_tenant, second, APP_B)]
    )
    assert client.post("/_emulator/reset").status_code == 204
    assert registrations(client) == []


def test_the_registering_app_writes_every_form(client: httpx.Client) -> None:
    settings(client, deleteForms="both")
    provider_id = register(client)
    for form in WRITE_FORMS:
        content_id = put(client, provider_id, "c", WRITE_A)
        response = write(client, provider_id, form, content_id, WRITE_A)
        assert response.status_code == (202 if form[0] == "PATCH" else 204), (form, response.text)


def test_app_ids_compare_case_insensitively(client: httpx.Client) -> None:
    provider_id = register(client)
    put(client, provider_id, "c", bearer(roles=WRITE, client_id=APP_A.upper()))


@pytest.mark.parametrize("form", WRITE_FORMS, ids=FORM_IDS)
def test_strict_app_refuses_another_app(client: httpx.Client, form: tuple[str, str, str]) -> None:
    assert client.get("/_emulator/settings").json()["appBinding"] == "strict-app"  # the default
    settings(client, deleteForms="both")
    provider_id = register(client)
    content_id = put(client, provider_id, "c", WRITE_A, title="original")
    response = write(client, provider_id, form, content_id, WRITE_B)
    error = assert_graph_error(response, 403, "accessDenied", APP_A, APP_B, provider_id, BOUND)
    assert error["message"].index(APP_B) < error["message"].index(APP_A)  # the caller, then the bound app
    # Nothing changed: the item is there with its old title.
    kept = client.get(content_url(provider_id, "(externalId='c')"), headers=READ_B)
    assert kept.status_code == 200
    assert (kept.json()["id"], kept.json()["title"]) == (content_id, "original")


@pytest.mark.parametrize("form", WRITE_FORMS, ids=FORM_IDS)
def test_refused_before_the_item_and_the_body(client: httpx.Client, form: tuple[str, str, str]) -> None:
    # The binding is about who writes, so it answers before a missing item (404) or a bad body (400).
    settings(client, deleteForms="both")
    provider_id = register(client)
    method, by, suffix = form
    key = "(externalId='missing')" if by == "ext" else "/00000000-0000-4000-8000-000000000000"
    body = {"title": 1} if method == "PATCH" else None
    response = client.request(method, content_url(provider_id, key + suffix), json=body, headers=WRITE_B)
    assert_graph_error(response, 403, "accessDenied", APP_A, APP_B)


def test_a_token_without_app_id_is_refused(client: httpx.Client) -> None:
    provider_id = register(client)
    claims = {"aud": tokens.GRAPH_AUDIENCE, "tid": tokens.DEFAULT_TENANT_ID, "exp": 4_102_444_800}
    token = jwt.encode({**claims, "idtyp": "app", "roles": list(WRITE)}, tokens.signing_key(), algorithm="HS256")
    response = client.patch(
        content_url(provider_id, "(externalId='c')"), json=CONTENT_BODY, headers={"Authorization": f"Bearer {token}"}
    )
    assert_graph_error(response, 403, "accessDenied", APP_A, "'(none)'", BOUND)


@pytest.mark.parametrize("form", WRITE_FORMS, ids=FORM_IDS)
def test_lenient_accepts_another_app(client: httpx.Client, form: tuple[str, str, str]) -> None:
    assert settings(client, deleteForms="both", appBinding="lenient")["appBinding"] == "lenient"
    provider_id = register(client)
    content_id = put(client, provider_id, "c", WRITE_A)
    response = write(client, provider_id, form, content_id, WRITE_B)
    assert response.status_code == (202 if form[0] == "PATCH" else 204), response.text
    got = client.get(content_url(provider_id, "(externalId='c')"), headers=READ_B)
    if form[0] == "PATCH":
        assert got.json()["title"] == "changed"
    else:
        assert_graph_error(got, 404, "notFound")
    # The binding itself stays: back under strict-app, B is refused again.
    settings(client, appBinding="strict-app")
    assert [r["registeredByAppId"] for r in registrations(client)] == [APP_A]
    assert_graph_error(write(client, provider_id, ("PATCH", "ext", ""), content_id, WRITE_B), 403, "accessDenied")


def test_reads_stay_open_to_any_app(client: httpx.Client) -> None:
    provider_id = register(client)
    content_id = put(client, provider_id, "c", WRITE_A)
    for headers in (READ_B, WRITE_B, USER_READ_B):
        assert client.get(content_url(provider_id, ""), headers=headers).json()["value"][0]["id"] == content_id
        assert client.get(content_url(provider_id, "(externalId='c')"), headers=headers).status_code == 200
        assert client.get(content_url(provider_id, f"/{content_id}"), headers=headers).status_code == 200


def test_a_provider_update_keeps_the_binding(client: httpx.Client) -> None:
    provider_id = register(client)
    patched = client.patch(f"{PROVIDERS}/{provider_id}", json={"displayName": "Renamed"}, headers=ADMIN_B)
    assert patched.status_code == 204
    [view] = registrations(client)
    assert (view["displayName"], view["registeredByAppId"]) == ("Renamed", APP_A)  # not rebound to B
    put(client, provider_id, "c", WRITE_A)
    assert_graph_error(write(client, provider_id, ("PATCH", "ext", ""), "", WRITE_B), 403, "accessDenied")


def test_a_new_registration_binds_to_its_own_app(client: httpx.Client) -> None:
    by_a, by_b = register(client, ADMIN_A), register(client, ADMIN_B)
    put(client, by_b, "c", WRITE_B)
    assert_graph_error(write(client, by_b, ("PATCH", "ext", ""), "", WRITE_A), 403, "accessDenied", APP_B, APP_A)
    put(client, by_a, "c", WRITE_A)


# -- settings -------------------------------------------------------------------------------------
def test_the_setting_is_a_cli_flag_and_a_run_in_thread_argument() -> None:
    assert parse_args([]).app_binding == "strict-app"
    assert parse_args(["--app-binding", "lenient"]).app_binding == "lenient"
    assert parse_args(["--app-binding", "strict-app"]).app_binding == "strict-app"
    with pytest.raises(SystemExit):
        parse_args(["--app-binding", "strict"])
    with run_in_thread(app_binding="lenient") as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        assert client.get("/_emulator/settings").json()["appBinding"] == "lenient"
        provider_id = register(client)
        put(client, provider_id, "c", WRITE_B)  # lenient from the start
        settings(client, appBinding="strict-app")
        assert_graph_error(write(client, provider_id, ("PATCH", "ext", ""), "", WRITE_B), 403, "accessDenied")
        assert client.post("/_emulator/reset").status_code == 204
        assert client.get("/_emulator/settings").json()["appBinding"] == "lenient"  # the start-up value


def test_the_settings_api_switches_it(client: httpx.Client) -> None:
    provider_id = register(client)
    assert settings(client, appBinding="lenient") == {
        "deleteForms": "documented",
        "patchSemantics": "merge",
        "visibilityLagMs": 0,
        "appBinding": "lenient",
        "batch": "on",
        "latencyMs": 0,
    }
    put(client, provider_id, "c", WRITE_B)
    assert settings(client, appBinding="strict-app")["appBinding"] == "strict-app"
    assert_graph_error(write(client, provider_id, ("PATCH", "ext", ""), "", WRITE_B), 403, "accessDenied")
    assert_graph_error(client.patch("/_emulator/settings", json={"appBinding": "off"}), 400, "badRequest")


# -- persistence ----------------------------------------------------------------------------------
def test_the_snapshot_keeps_the_binding(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        provider_id = register(client)
        put(client, provider_id, "c", WRITE_A)
        renamed = client.patch(f"{PROVIDERS}/{provider_id}", json={"displayName": "Renamed"}, headers=ADMIN_B)
        assert renamed.status_code == 204
    saved = json.loads(snapshot.read_text(encoding="utf-8"))
    assert saved["tenants"][tokens.DEFAULT_TENANT_ID]["providers"][0]["registeredByAppId"] == APP_A

    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        assert [(r["id"], r["registeredByAppId"]) for r in registrations(client)] == [(provider_id, APP_A)]
        assert "registeredByAppId" not in client.get(f"{PROVIDERS}/{provider_id}", headers=ADMIN_A).json()
        assert_graph_error(write(client, provider_id, ("PATCH", "ext", ""), "", WRITE_B), 403, "accessDenied", APP_A)
        put(client, provider_id, "c", WRITE_A, title="again")


def test_an_older_snapshot_loads_unbound(tmp_path: Path) -> None:
    # Written before the binding existed: no registeredByAppId. Nobody knows the app, so any app may write.
    snapshot = tmp_path / "graph.json"
    provider = {**PROVIDER_BODY, "id": "p-old", "learningContents": []}
    snapshot.write_text(json.dumps({"version": 1, "tenants": {tokens.DEFAULT_TENANT_ID: {"providers": [provider]}}}))
    assert EmulatorState(snapshot).registered_by_app_id(tokens.DEFAULT_TENANT_ID, "p-old") is None
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url, timeout=5) as client:
        assert [(r["id"], r["registeredByAppId"]) for r in registrations(client)] == [("p-old", None)]
        put(client, "p-old", "c", WRITE_A)
        put(client, "p-old", "c", WRITE_B, title="by B")
        assert "registeredByAppId" not in client.get(f"{PROVIDERS}/p-old", headers=ADMIN_A).json()
