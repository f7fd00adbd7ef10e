"""Each LMS client's course list (``courses``) against the emulator's list endpoints: several pages,
a 429 waited out, a refused secret, a next link off the API's origin, and the adapter's records."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from local.lms_emulator import RunningLms, run_in_thread
from shared.lms import ApiSecret, Listed, LmsLister, LmsPermanentError, LmsTransientError, Paging
from shared.lms.canvas import CanvasClient
from shared.lms.moodle import MoodleClient
from shared.lms.openedx import OpenEdxClient
from shared.lms.thinkific import ThinkificClient
from shared.lms_catalog import Listing, records
from shared.settings import parse_sources
from tests.lms_emulator.conftest import SECRET

PLATFORMS = ("canvas", "moodle", "openedx", "thinkific")
COUNT = 7  # with page size 3: pages of 3, 3 and 1


def course(platform: str, n: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    """(course id, body) in the vendor's shape; Moodle ids start at 2 (1 is the site's front page)."""
    if platform == "canvas":
        cid = str(100 + n)
        return cid, {"id": int(cid), "name": f"Canvas {n}", "workflow_state": "available", "locale": "en", **extra}
    if platform == "moodle":
        cid = str(n + 1)
        return cid, {"id": int(cid), "fullname": f"Moodle {n}", "visible": 1, "lang": "en", **extra}
    if platform == "openedx":
        cid = f"course-v1:Org+C{n:02d}+2026"
        return cid, {"id": cid, "name": f"Open edX {n}", "hidden": False, **extra}
    cid = str(500 + n)
    return cid, {"id": int(cid), "name": f"Thinkific {n}", "product_id": 900 + n, "slug": f"c-{n}", **extra}


@pytest.fixture(scope="module")
def lms() -> Iterator[RunningLms]:
    """An emulator of this module's own: a list answers every seeded course, so no other test's may be there."""
    with run_in_thread(secret=SECRET) as running:
        yield running


@pytest.fixture
def seeded(lms: RunningLms, client: httpx.Client) -> Iterator[httpx.Client]:
    """COUNT courses on every platform (Thinkific's products too); removed afterwards."""
    added: list[str] = []
    for platform in PLATFORMS:
        for n in range(1, COUNT + 1):
            cid, body = course(platform, n)
            path = f"/_lms/{platform}/courses/{cid}"
            client.put(path, json=body).raise_for_status()
            added.append(path)
            if platform == "thinkific":
                product = {
                    "id": 900 + n,
                    "name": f"Product {n}",
                    "status": "published",
                    "hidden": n == COUNT,
                    "created_at": "2026-01-02T03:04:05Z",
                }
                client.put(f"/_lms/thinkific/products/{900 + n}", json=product).raise_for_status()
                added.append(f"/_lms/thinkific/products/{900 + n}")
    client.delete("/_lms/requests").raise_for_status()
    yield client
    for path in added:
        client.delete(path).raise_for_status()


def make(platform: str, http: httpx.AsyncClient, lms: RunningLms, secret: str = SECRET) -> LmsLister:
    key = ApiSecret(secret, "LMS_SECRET")
    if platform == "canvas":
        return CanvasClient(http, lms.root("canvas"), key)
    if platform == "moodle":
        return MoodleClient(http, lms.root("moodle"), key)
    if platform == "openedx":
        return OpenEdxClient(http, lms.root("openedx"), lms.config.openedx_client_id, key)
    return ThinkificClient(http, lms.root("thinkific"), lms.config.thinkific_subdomain, key)


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def every(lister: LmsLister, paging: Paging) -> list[Listed]:
    return [item async for item in lister.courses(paging)]


def list_calls(client: httpx.Client, platform: str) -> list[dict[str, Any]]:
    log = client.get("/_lms/requests").json()["value"]
    return [r for r in log if r["platform"] == platform and "products" not in r["path"] and r["method"] == "GET"]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_the_whole_list_comes_page_by_page(
    platform: str, lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    paging = Paging(page_size=3, sleep=Sleeps())
    items = await every(make(platform, http, lms), paging)

    assert [item.course_id for item in items] == [course(platform, n)[0] for n in range(1, COUNT + 1)]
    assert all(item.course is not None and item.problem is None for item in items)
    pages = 1 if platform == "moodle" else 3  # Moodle's function has no pages (and its front page is skipped)
    assert paging.pages == pages + (COUNT if platform == "thinkific" else 0)  # Thinkific: a product per course
    if platform != "moodle":
        assert len(list_calls(seeded, platform)) == pages


async def test_canvas_courses_map_as_fetch_back_maps_them(
    lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    first = (await every(make("canvas", http, lms), Paging(page_size=100)))[0]
    assert first.course is not None
    assert dict(first.course.fields) == {"title": "Canvas 1", "isActive": True, "languageTag": "en"}
    assert first.course.default_url == f"{lms.root('canvas')}/courses/101"


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_429_is_waited_out_and_the_page_read_again(
    platform: str, lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    fault = {"platform": platform, "status": 429, "count": 1, "retryAfter": 2}
    (await http.post(f"{lms.url}/_lms/faults", json=fault)).raise_for_status()
    sleeps = Sleeps()
    items = await every(make(platform, http, lms), Paging(page_size=3, sleep=sleeps))

    assert len(items) == COUNT
    assert sleeps.waits == [2.0]


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_refused_secret_is_permanent_and_names_the_setting_not_the_secret(
    platform: str, lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    sleeps = Sleeps()
    with pytest.raises(LmsPermanentError) as raised:
        await every(make(platform, http, lms, secret="wrong-secret"), Paging(sleep=sleeps))
    assert "LMS_SECRET" in raised.value.message
    assert "wrong-secret" not in str(raised.value)
    assert sleeps.waits == []


async def test_a_lasting_503_gives_up_after_the_attempts(
    lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    fault = {"platform": "canvas", "status": 503, "count": 3}  # as many as the attempts: none left over
    (await http.post(f"{lms.url}/_lms/faults", json=fault)).raise_for_status()
    sleeps = Sleeps()
    with pytest.raises(LmsTransientError):
        await every(make("canvas", http, lms), Paging(attempts=3, sleep=sleeps))
    assert sleeps.waits == [1.0, 2.0]


async def test_a_next_link_off_the_api_origin_is_refused() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = [{"id": 1, "name": "A", "workflow_state": "available"}]
        return httpx.Response(200, json=body, headers={"Link": '<https://elsewhere.example/p2>; rel="next"'})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = CanvasClient(http, "https://canvas.example", ApiSecret("s", "LMS_SECRET"))
        with pytest.raises(LmsPermanentError, match="origin"):
            await every(client, Paging())


@pytest.mark.parametrize("platform", ["canvas", "openedx"])
async def test_a_next_link_back_to_a_page_already_read_is_refused(platform: str) -> None:
    """An LMS whose pages link in a circle would otherwise be listed for ever."""
    served: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":  # Open edX's client-credentials token
            return httpx.Response(200, json={"access_token": "t", "token_type": "JWT", "expires_in": 3600})
        served.append(str(request.url))
        again = "https://lms.example/api/page2"  # page 2 links to itself
        if platform == "canvas":
            body: Any = [{"id": len(served), "name": "A", "workflow_state": "available"}]
            return httpx.Response(200, json=body, headers={"Link": f'<{again}>; rel="next"'})
        course = {"id": f"course-v1:o+n{len(served)}+r", "name": "A", "course_id": "x"}
        return httpx.Response(200, json={"results": [course], "pagination": {"next": again}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client: Any = (
            CanvasClient(http, "https://lms.example", ApiSecret("s", "LMS_SECRET"))
            if platform == "canvas"
            else OpenEdxClient(http, "https://lms.example", "client-id", ApiSecret("s", "LMS_SECRET"))
        )
        with pytest.raises(LmsPermanentError, match="already read"):
            await every(client, Paging())
    assert len([url for url in served if url.endswith("page2")]) == 1


async def test_a_course_whose_product_is_gone_is_a_bad_record_not_a_failed_run() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/courses"):
            courses = [{"id": n, "name": f"C{n}", "product_id": 100 + n, "slug": f"c{n}"} for n in (1, 2)]
            return httpx.Response(200, json={"items": courses, "meta": {"pagination": {"next_page": None}}})
        if request.url.path.endswith("/products/101"):
            return httpx.Response(404, json={"error": "Record not found"})
        return httpx.Response(200, json={"id": 102, "status": "published", "hidden": False, "private": False})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        client = ThinkificClient(http, "https://api.thinkific.example", "acme", ApiSecret("s", "LMS_SECRET"))
        listed = [item async for item in client.courses(Paging())]
    assert [item.course_id for item in listed] == ["1", "2"]
    assert listed[0].problem is not None
    assert "404" in listed[0].problem or "not" in listed[0].problem.lower()


async def test_a_malformed_page_is_permanent_naming_the_lms() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200, json={"x": 1}))) as http:
        client = ThinkificClient(http, "https://api.thinkific.example", "acme", ApiSecret("s", "LMS_SECRET"))
        with pytest.raises(LmsPermanentError, match="Thinkific course list"):
            await every(client, Paging())


async def test_the_adapter_yields_records_problems_and_skips_hidden_when_hidden_means_delete(
    lms: RunningLms, seeded: httpx.Client, http: httpx.AsyncClient
) -> None:
    # Course 3 has a URL the rules refuse; the last course's product is hidden.
    cid, bad = course("thinkific", 3, course_card_image_url="not a url")
    (await http.put(f"{lms.url}/_lms/thinkific/courses/{cid}", json=bad)).raise_for_status()
    config = {
        "kind": "thinkific", "registrationId": "r", "secretSetting": "K", "apiBaseUrl": lms.root("thinkific"),
        "apiSecretSetting": "LMS_SECRET", "apiSubdomain": "acme", "defaultLanguageTag": "en",
        "externalIdPrefix": "th-", "hiddenAs": "delete",
    }  # fmt: skip
    sources = parse_sources(json.dumps({"t": config}))
    source = sources["t"]
    listing = Listing(Paging(page_size=3))
    got = [r async for r in records(make("thinkific", http, lms), source, listing)]  # type: ignore[arg-type]

    assert [r.line for r in got] == [1, 2, 3, 4, 5, 6]  # line 7 (hidden) skipped
    assert listing.skipped_hidden == 1
    assert listing.listed == COUNT
    problem = got[2]
    assert problem.content is None
    assert "Thinkific course 503" in problem.problems[0].message
    assert "thumbnailWebUrl" in problem.problems[0].message
    first = got[0].content
    assert first is not None
    assert first.external_id == "th-501"
    assert first.to_graph()["contentWebUrl"] == "https://acme.thinkific.com/courses/c-1"
    assert first.to_graph()["languageTag"] == "en"
