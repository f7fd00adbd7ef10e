"""``--visibility-lag-ms``: an accepted write (202) is readable only once the lag has passed.

No waiting: the lag is measured against the current setting, so lowering it to 0 shows what is due.
"""

from __future__ import annotations

import httpx

from local.graph_emulator.__main__ import parse_args

from .conftest import APP_READ, APP_WRITE, CONTENT_BODY, assert_graph_error, content_url

HOUR_MS = 3_600_000


def lag(client: httpx.Client, ms: int) -> None:
    assert client.patch("/_emulator/settings", json={"visibilityLagMs": ms}).status_code == 200


def listed(client: httpx.Client, provider_id: str) -> list[dict[str, object]]:
    return list(client.get(content_url(provider_id, ""), headers=APP_READ).json()["value"])


def test_a_new_item_is_invisible_until_the_lag_passes(client: httpx.Client, provider_id: str) -> None:
    lag(client, HOUR_MS)
    url = content_url(provider_id, "(externalId='late')")
    accepted = client.patch(url, json=CONTENT_BODY, headers=APP_WRITE)
    assert accepted.status_code == 202
    assert_graph_error(client.get(url, headers=APP_READ), 404, "notFound")
    assert_graph_error(
        client.get(content_url(provider_id, f"/{accepted.json()['id']}"), headers=APP_READ), 404, "notFound"
    )
    assert listed(client, provider_id) == []
    lag(client, 0)
    assert client.get(url, headers=APP_READ).json()["id"] == accepted.json()["id"]
    assert [i["externalId"] for i in listed(client, provider_id)] == ["late"]


def test_an_update_shows_the_previous_version_until_the_lag_passes(client: httpx.Client, provider_id: str) -> None:
    url = content_url(provider_id, "(externalId='v')")
    client.patch(url, json={**CONTENT_BODY, "title": "v1"}, headers=APP_WRITE).raise_for_status()
    lag(client, HOUR_MS)
    assert client.patch(url, json={**CONTENT_BODY, "title": "v2"}, headers=APP_WRITE).json()["title"] == "v2"
    assert client.get(url, headers=APP_READ).json()["title"] == "v1"
    assert [i["title"] for i in listed(client, provider_id)] == ["v1"]
    lag(client, 0)
    assert client.get(url, headers=APP_READ).json()["title"] == "v2"


def test_the_lag_is_a_cli_flag() -> None:
    assert parse_args([]).visibility_lag_ms == 0
    assert parse_args(["--visibility-lag-ms", "1500"]).visibility_lag_ms == 1500
