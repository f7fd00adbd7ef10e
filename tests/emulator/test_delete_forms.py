"""Which delete forms the emulator accepts (``--delete-forms``), and how it refuses the others.

The docs show only ``…/$ref`` (learningprovider-delete-learningcontents.md); the official SDK sends
the form without it. Default ``documented``: the strict reading of the docs.
"""

from __future__ import annotations

import httpx
import pytest

from local.graph_emulator import run_in_thread
from local.graph_emulator.__main__ import parse_args

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url

ACCEPTED = {"documented": {"/$ref"}, "sdk": {""}, "both": {"", "/$ref"}}


def settings(client: httpx.Client, **changes: object) -> dict[str, object]:
    response = client.patch("/_emulator/settings", json=changes)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_default_is_the_documented_form_only(client: httpx.Client) -> None:
    assert client.get("/_emulator/settings").json()["deleteForms"] == "documented"
    assert parse_args([]).delete_forms == "documented"
    assert parse_args(["--delete-forms", "sdk"]).delete_forms == "sdk"
    with pytest.raises(SystemExit):
        parse_args(["--delete-forms", "maybe"])


@pytest.mark.parametrize("forms", ["documented", "sdk", "both"])
@pytest.mark.parametrize("suffix", ["", "/$ref"], ids=["sdk-form", "documented-form"])
@pytest.mark.parametrize("by", ["externalId", "id"])
def test_delete_forms(client: httpx.Client, provider_id: str, forms: str, suffix: str, by: str) -> None:
    assert settings(client, deleteForms=forms)["deleteForms"] == forms
    created = client.patch(content_url(provider_id, "(externalId='d')"), json=CONTENT_BODY, headers=APP_WRITE).json()
    key = "(externalId='d')" if by == "externalId" else f"/{created['id']}"
    response = client.delete(content_url(provider_id, key + suffix), headers=APP_WRITE)
    if suffix in ACCEPTED[forms]:
        assert response.status_code == 204
        assert_graph_error(client.get(content_url(provider_id, key), headers=APP_READ), 404, "notFound")
        assert_graph_error(client.delete(content_url(provider_id, key + suffix), headers=APP_WRITE), 404, "notFound")
    elif suffix == "":
        # The Viva error tables list 405 methodNotAllowed; the entity itself takes GET and PATCH only.
        assert_graph_error(response, 405, "methodNotAllowed", "DELETE")
        assert response.headers["Allow"] == "GET, PATCH"
        assert client.get(content_url(provider_id, key), headers=APP_READ).status_code == 200
    else:
        # A service that does not route $ref answers like its front door does for any unknown segment.
        assert_graph_error(response, 400, "RequestBroker--ParseUri", "Resource not found for the segment '$ref'")
        assert client.get(content_url(provider_id, key), headers=APP_READ).status_code == 200


def test_refused_forms_are_refused_before_the_lookup(client: httpx.Client, provider_id: str) -> None:
    # A refused form says so even for an item that does not exist: it is the form, not the item.
    settings(client, deleteForms="documented")
    assert client.delete(content_url(provider_id, "(externalId='nope')"), headers=APP_WRITE).status_code == 405
    settings(client, deleteForms="sdk")
    assert client.delete(content_url(provider_id, "(externalId='nope')/$ref"), headers=APP_WRITE).status_code == 400


def test_settings_api(client: httpx.Client) -> None:
    view = client.get("/_emulator/settings").json()
    assert view == {
        "deleteForms": "documented",
        "patchSemantics": "merge",
        "visibilityLagMs": 0,
        "appBinding": "strict-app",
        "batch": "on",
        "latencyMs": 0,
    }
    assert settings(client, deleteForms="both", visibilityLagMs=5)["visibilityLagMs"] == 5
    bad_settings = (
        {"deleteForms": "all"},
        {"patchSemantics": "upsert"},
        {"visibilityLagMs": -1},
        {"appBinding": "strict"},
        {"batch": "maybe"},
        {"latencyMs": -1},
        {"pageSize": 3},
    )
    for bad in bad_settings:
        assert_graph_error(client.patch("/_emulator/settings", json=bad), 400, "badRequest", "Invalid settings")
    assert client.post("/_emulator/reset").status_code == 204
    assert client.get("/_emulator/settings").json() == view  # a reset restores the start-up settings


def test_run_in_thread_takes_the_settings() -> None:
    with run_in_thread(
        delete_forms="sdk",
        patch_semantics="replace",
        visibility_lag_ms=7,
        app_binding="lenient",
        batch="off",
        latency_ms=2,
    ) as emu:
        view = httpx.get(f"{emu.url}/_emulator/settings", timeout=5).json()
    assert view == {
        "deleteForms": "sdk",
        "patchSemantics": "replace",
        "visibilityLagMs": 7,
        "appBinding": "lenient",
        "batch": "off",
        "latencyMs": 2,
    }
