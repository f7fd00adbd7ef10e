"""List paging: $top/$skip, page size cap and @odata.nextLink chains."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from local.graph_emulator import run_in_thread

from .conftest import (
    ADMIN,
    APP_READ,
    APP_WRITE,
    CONTENT_BODY,
    PROVIDER_BODY,
    PROVIDERS,
    assert_graph_error,
    content_url,
)


@pytest.fixture(scope="module")
def paged() -> Iterator[tuple[httpx.Client, str]]:
    """A private emulator (default page size 100) with 250 items seeded through the real API."""
    with run_in_thread() as emu, httpx.Client(base_url=emu.url, timeout=10) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        for index in range(250):
            url = content_url(provider_id, f"(externalId='item-{index:03d}')")
            response = client.patch(url, json={**CONTENT_BODY, "title": f"Item {index}"}, headers=APP_WRITE)
            assert response.status_code == 202
        yield client, provider_id


def collect(client: httpx.Client, url: str) -> tuple[list[dict[str, Any]], list[str]]:
    items: list[dict[str, Any]] = []
    links: list[str] = []
    next_url: str | None = url
    while next_url:
        page = client.get(next_url, headers=APP_READ)
        assert page.status_code == 200, page.text
        body = page.json()
        assert "@odata.context" in body
        items.extend(body["value"])
        next_url = body.get("@odata.nextLink")
        if next_url:
            links.append(next_url)
    return items, links


def test_next_link_chain_returns_everything_in_order(paged: tuple[httpx.Client, str]) -> None:
    client, provider_id = paged
    items, links = collect(client, content_url(provider_id, ""))
    assert [item["externalId"] for item in items] == [f"item-{i:03d}" for i in range(250)]
    assert len(links) == 2
    assert all(link.startswith(str(client.base_url).rstrip("/") + "/v1.0/") for link in links)
    assert links[0].endswith("$skip=100")
    assert links[1].endswith("$skip=200")


def test_top_and_skip(paged: tuple[httpx.Client, str]) -> None:
    client, provider_id = paged
    body = client.get(content_url(provider_id, "?$top=7&$skip=3"), headers=APP_READ).json()
    assert [item["externalId"] for item in body["value"]] == [f"item-{i:03d}" for i in range(3, 10)]
    assert "$top=7" in body["@odata.nextLink"]
    assert "$skip=10" in body["@odata.nextLink"]
    tail = client.get(content_url(provider_id, "?$skip=245"), headers=APP_READ).json()
    assert len(tail["value"]) == 5
    assert "@odata.nextLink" not in tail
    one_left = client.get(content_url(provider_id, "?$top=100&$skip=149"), headers=APP_READ).json()
    assert len(one_left["value"]) == 100
    assert one_left["@odata.nextLink"].endswith("$skip=249")
    past_end = client.get(content_url(provider_id, "?$skip=1000"), headers=APP_READ).json()
    assert past_end["value"] == []
    assert "@odata.nextLink" not in past_end


def test_top_is_capped_to_page_size(paged: tuple[httpx.Client, str]) -> None:
    client, provider_id = paged
    body = client.get(content_url(provider_id, "?$top=1000"), headers=APP_READ).json()
    assert len(body["value"]) == 100
    items, _ = collect(client, content_url(provider_id, "?$top=1000"))
    assert len(items) == 250


def test_next_link_keeps_select(paged: tuple[httpx.Client, str]) -> None:
    client, provider_id = paged
    items, links = collect(client, content_url(provider_id, "?$select=externalId&$top=120"))
    assert len(items) == 250
    assert all(set(item) == {"externalId"} for item in items)
    assert all("$select=externalId" in link for link in links)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("$top=-1", "$top"),
        ("$top=abc", "$top"),
        ("$skip=1.5", "$skip"),
        ("$top=1&$top=2", "more than once"),
        ("$filter=title eq 'a'", "$filter"),
        ("$orderby=title", "$orderby"),
        ("$count=true", "$count"),
        ("$expand=x", "$expand"),
    ],
)
def test_bad_query_options(paged: tuple[httpx.Client, str], query: str, fragment: str) -> None:
    client, provider_id = paged
    assert_graph_error(client.get(content_url(provider_id, f"?{query}"), headers=APP_READ), 400, "badRequest", fragment)


def test_configured_page_size() -> None:
    with run_in_thread(page_size=4) as emu, httpx.Client(base_url=emu.url) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        for index in range(10):
            url = content_url(provider_id, f"(externalId='{index}')")
            assert client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).status_code == 202
        first = client.get(content_url(provider_id, ""), headers=APP_READ).json()
        assert len(first["value"]) == 4
        items, links = collect(client, content_url(provider_id, ""))
        assert [item["externalId"] for item in items] == [str(i) for i in range(10)]
        assert len(links) == 2
        providers = client.get(f"{PROVIDERS}?$top=1", headers=ADMIN).json()
        assert len(providers["value"]) == 1
        assert "@odata.nextLink" not in providers
