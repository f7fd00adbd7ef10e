"""Fetch-back end to end: a real thin webhook of each platform through the intake (queue in Azurite),
then the worker completes it from the LMS emulator (local/lms_emulator) and pushes it to the Graph
emulator with the real credential; the stored learningContent is checked field by field.

The LMS emulator serves each vendor's documented endpoint (Canvas courses API, Moodle's
core_course_get_courses_by_field, the Open edX Courses API with client credentials, Thinkific's Admin
API course and product) with the courses seeded from local/samples/lms/<platform>/api_*.json.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from shared import intake
from shared.fetchback import LmsFetcher
from shared.ledger import Ledger
from shared.lms import LmsTransientError
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.graph.conftest import GraphSide, make_graph, no_sleep
from tests.payloads import load, thinkific_headers
from tests.queues import peek_json, peek_texts

LMS_SECRET = "lms-api-secret-1"  # the emulator's one API secret (token, key, client secret)
CANVAS_ACCOUNT = "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"  # the sample Live Event's root account
MOODLE_WEBHOOK_TOKEN = "moodle-service-token-1"  # the sample event's body token
OPENEDX_WEBHOOK_KEY = "openedx-webhook-key-1"
THINKIFIC_WEBHOOK_KEY = "thinkific-webhook-key-1"
API_SETTINGS = {
    "canvas": "LMS_CANVAS_TOKEN",
    "moodle": "LMS_MOODLE_TOKEN",
    "openedx": "LMS_OPENEDX_SECRET",
    "thinkific": "LMS_THINKIFIC_KEY",
}


@pytest.fixture(scope="module")
def lms() -> Iterator[Any]:
    from local.lms_emulator import run_in_thread

    with run_in_thread(secret=LMS_SECRET) as running:
        yield running


@dataclass
class Stack:
    settings: Settings
    graph: GraphSide
    lms: Any
    ports: WorkerPorts

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, f"{self.lms.url}/_lms{path}", timeout=10, **kwargs)
        response.raise_for_status()
        return response

    def seed(self, platform: str, collection: str, course: dict[str, Any]) -> None:
        self.admin("PUT", f"/{platform}/{collection}/{course['id']}", json=course)

    def lms_calls(self) -> list[tuple[str, int]]:
        """The course API calls (the Canvas key set the intake reads to check a signature aside)."""
        log = self.admin("GET", "/requests").json()["value"]
        return [(r["path"], r["status"]) for r in log if not r["path"].endswith("/jwks")]

    def deliver(self, kind: str, body: Any, headers: dict[str, str] | None = None, **query: str) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = intake.make_request(kind, {"content-type": "application/json", **(headers or {})}, raw, query)
        response = intake.receive(request, self.settings, lambda: StorageCommandQueue.from_settings(self.settings))
        assert response.status == 202, response.body

    def take(self) -> list[tuple[bytes, MessageInfo]]:
        """Receive (and delete) the queued messages as the worker gets them."""
        client = QueueClient.from_connection_string(
            self.settings.storage_connection_string or "", self.settings.content_queue_name
        )
        taken = []
        for message in client.receive_messages(messages_per_page=32, max_messages=32):
            taken.append((base64.b64decode(message.content), MessageInfo(message.id, message.dequeue_count or 1)))
            client.delete_message(message)
        return taken

    async def work(self) -> list[Outcome]:
        return [await process(body, info, self.ports) for body, info in self.take()]

    def poison(self) -> list[dict[str, Any]]:
        return [
            json.loads(t)
            for t in peek_texts(self.settings.storage_connection_string or "", self.settings.poison_queue_name)
        ]

    def pushes(self, external_id: str) -> int:
        log = httpx.get(f"{self.graph.url}/_emulator/requests", timeout=10).json()
        entries = log.get("value", log) if isinstance(log, dict) else log
        return sum(1 for r in entries if r.get("method") == "PATCH" and external_id in r.get("path", ""))


@pytest.fixture
def stack(
    graph_side: GraphSide,
    settings: Settings,
    http: httpx.AsyncClient,
    queue: StorageCommandQueue,
    ledger: Ledger,
    lms: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Stack:
    reg = graph_side.registration_id
    for setting in API_SETTINGS.values():
        monkeypatch.setenv(setting, LMS_SECRET)
    monkeypatch.setenv("MOODLE_WEBHOOK_TOKEN", MOODLE_WEBHOOK_TOKEN)
    monkeypatch.setenv("OPENEDX_WEBHOOK_KEY", OPENEDX_WEBHOOK_KEY)
    monkeypatch.setenv("THINKIFIC_WEBHOOK_KEY", THINKIFIC_WEBHOOK_KEY)
    sources = {
        "canvas": {"kind": "canvas", "rootAccountUuid": CANVAS_ACCOUNT, "jwksUrl": f"{lms.url}/canvas/jwks"},
        "moodle": {"kind": "moodle", "secretSetting": "MOODLE_WEBHOOK_TOKEN"},
        "openedx": {
            "kind": "openedx",
            "secretSetting": "OPENEDX_WEBHOOK_KEY",
            "apiClientId": lms.config.openedx_client_id,
            "defaultLanguageTag": "en",
        },
        "thinkific": {
            "kind": "thinkific",
            "secretSetting": "THINKIFIC_WEBHOOK_KEY",
            "apiSubdomain": lms.config.thinkific_subdomain,
            "defaultLanguageTag": "en",
        },
    }
    for kind, entry in sources.items():
        entry.update(registrationId=reg, apiBaseUrl=lms.root(kind), apiSecretSetting=API_SETTINGS[kind])
    app_settings = settings.model_copy(update={"sources_json": json.dumps(sources)})
    fetcher = LmsFetcher(
        http, app_settings.sources, request_timeout=5, deadline_seconds=30, max_inline_retry_seconds=5, sleep=no_sleep
    )
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger, fetch=fetcher)
    stack = Stack(app_settings, graph_side, lms, ports)
    for platform, collection, name in (
        ("canvas", "courses", "canvas/api_course"),
        ("moodle", "courses", "moodle/api_course"),
        ("openedx", "courses", "openedx/api_course"),
        ("thinkific", "courses", "thinkific/api_course"),
        ("thinkific", "products", "thinkific/api_product"),
    ):
        stack.seed(platform, collection, load(name))
    stack.admin("DELETE", "/requests")
    return stack


def canvas_body(stack: Stack, claims: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """A signed Live Event, as Canvas sends it with "Sign Payload" on (the emulator's dev key)."""
    token = stack.admin("POST", "/canvas/sign", json=claims or load("canvas/course_created")).json()["jwt"]
    return token.encode(), {"content-type": "application/jwt"}


def deliver_thin(stack: Stack, kind: str) -> str:
    """Send the platform's sample thin event; the externalId it names."""
    if kind == "canvas":
        body, headers = canvas_body(stack)
        stack.deliver(kind, body, headers)
        return "21070000000000056"
    if kind == "moodle":
        stack.deliver(kind, load("moodle/course_updated"))
        return "7"
    if kind == "openedx":
        stack.deliver(kind, load("openedx/plugin_catalog_info_changed"), key=OPENEDX_WEBHOOK_KEY)
        return "course-v1:edX+DemoX+Demo_Course"
    body = load("thinkific/product_updated")
    stack.deliver(kind, body, thinkific_headers(body, THINKIFIC_WEBHOOK_KEY))
    return "123"


def expected(kind: str, lms_url: str) -> dict[str, Any]:
    """What the LMS's API answer becomes in Graph (local/samples/lms/<kind>/api_*.json)."""
    return {
        "canvas": {
            "title": "Linear Algebra",
            "description": "Vectors, matrices & linear maps, from first principles.",
            "contentWebUrl": f"{lms_url}/canvas/courses/21070000000000056",
            "languageTag": "en-GB",
            "thumbnailWebUrl": "https://oxana.instructure.com/images/thumbnails/21070000000000777/linear-algebra.png",
            "duration": None,
            "createdDateTime": "2024-09-02T13:38:00Z",
            "lastModifiedDateTime": "2024-09-02T13:38:00.218Z",  # the event's; the course API has none
            "isActive": True,
        },
        "moodle": {
            "title": "Linear algebra",
            "description": "Vectors, matrices & maps.\n\nWeek 1: intro",
            "contentWebUrl": f"{lms_url}/moodle/course/view.php?id=7",
            "languageTag": "fr-CA",
            "thumbnailWebUrl": "https://moodle.example.com/pluginfile.php/42/course/overviewfiles/algebra.png",
            "duration": None,
            "createdDateTime": "2024-09-01T16:00:00Z",
            "lastModifiedDateTime": "2024-09-02T16:00:00Z",
            "isActive": True,
        },
        "openedx": {
            "title": "Demonstration Course",
            "description": "An introduction to the Open edX platform.",
            "contentWebUrl": f"{lms_url}/openedx/courses/course-v1:edX+DemoX+Demo_Course/about",
            "languageTag": "en",
            "thumbnailWebUrl": "https://lms.example.com/asset-v1:edX+DemoX+Demo_Course+type@asset+block@images_course_image.jpg",
            "duration": "PT2H30M",
            "createdDateTime": None,
            "lastModifiedDateTime": None,
            "isActive": True,
        },
        "thinkific": {
            "title": "Intro to Widgets",
            "description": "Build widgets that last.",
            "contentWebUrl": "https://acme.thinkific.com/courses/intro-to-widgets",
            "languageTag": "en",
            "thumbnailWebUrl": "https://cdn.thinkific.example/card.png",
            "duration": None,
            "createdDateTime": "2024-08-01T09:00:00Z",
            "lastModifiedDateTime": None,
            "isActive": True,
        },
    }[kind]


@pytest.mark.parametrize("kind", ["canvas", "moodle", "openedx", "thinkific"])
async def test_a_thin_event_is_completed_from_the_lms_field_by_field(stack: Stack, kind: str) -> None:
    external_id = deliver_thin(stack, kind)
    # Intake stays fast: a fetch command is queued and the LMS was not called.
    [queued] = peek_json(stack.settings.storage_connection_string or "", stack.settings.content_queue_name)
    assert queued["fetch"]["kind"] == kind
    assert "content" not in queued
    assert stack.lms_calls() == []

    assert await stack.work() == [Outcome.UPSERTED]
    stored = stack.graph.get_content(external_id)
    assert stored.status_code == 200, stored.text
    item = stored.json()
    assert {name: item.get(name) for name in expected(kind, stack.lms.url)} == expected(kind, stack.lms.url)
    assert stack.poison() == []
    assert all(status == 200 for _, status in stack.lms_calls())


async def test_a_course_missing_from_the_lms_is_parked_with_its_reason(stack: Stack) -> None:
    stack.admin("DELETE", "/moodle/courses/7")
    deliver_thin(stack, "moodle")
    assert await stack.work() == [Outcome.PARKED]
    [parked] = stack.poison()
    assert parked["fetch"]["courseId"] == "7"  # the fetch command itself: a replay asks the LMS again
    assert parked["lastError"]["kind"] == "permanent"
    assert parked["lastError"]["status"] == 404
    assert parked["lastError"]["code"] == "not-found"
    assert "course 7 does not exist in Moodle" in parked["lastError"]["message"]
    assert stack.graph.get_content("7").status_code == 404


async def test_an_lms_503_is_retried_and_the_course_applied_once(stack: Stack) -> None:
    # One 503: retried inside the invocation.
    stack.admin("POST", "/faults", json={"platform": "canvas", "status": 503, "count": 1})
    external_id = deliver_thin(stack, "canvas")
    assert await stack.work() == [Outcome.UPSERTED]
    assert [status for _, status in stack.lms_calls()] == [503, 200]
    assert stack.pushes(external_id) == 1

    # Three 503s outlast the inline attempts: the queue redelivers, and the second delivery applies it.
    stack.admin("DELETE", "/requests")
    claims = load("canvas/course_created")
    claims["metadata"]["event_time"] = "2024-09-03T10:00:00Z"
    claims["metadata"]["event_name"] = "course_updated"
    stack.admin("POST", "/faults", json={"platform": "canvas", "status": 503, "count": 3})
    body, headers = canvas_body(stack, claims)
    stack.deliver("canvas", body, headers)
    [(message, info)] = stack.take()
    with pytest.raises(LmsTransientError):
        await process(message, info, stack.ports)
    redelivered = MessageInfo(info.message_id, info.dequeue_count + 1)
    assert await process(message, redelivered, stack.ports) is Outcome.UPSERTED
    assert [status for _, status in stack.lms_calls()] == [503, 503, 503, 200]
    assert stack.pushes(external_id) == 2  # one per event, none for the failed attempts
    assert stack.poison() == []


async def test_an_lms_retry_after_longer_than_the_budget_defers_the_command(stack: Stack) -> None:
    stack.admin("POST", "/faults", json={"platform": "thinkific", "status": 429, "count": 1, "retryAfter": 120})
    deliver_thin(stack, "thinkific")
    assert await stack.work() == [Outcome.DEFERRED]
    # Back in the queue, hidden for the LMS's Retry-After, counting its deferral.
    assert peek_texts(stack.settings.storage_connection_string or "", stack.settings.content_queue_name) == []
    assert stack.poison() == []
    assert stack.graph.get_content("123").status_code == 404


@pytest.mark.parametrize("kind", ["thinkific", "openedx"])
async def test_a_wrong_lms_secret_is_parked_naming_the_setting(
    stack: Stack, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_SETTINGS[kind], "not-the-secret")
    external_id = deliver_thin(stack, kind)
    assert await stack.work() == [Outcome.PARKED]
    [parked] = stack.poison()
    error = parked["lastError"]
    assert error["kind"] == "permanent"
    assert error["status"] == 401
    assert API_SETTINGS[kind] in error["message"]
    assert "not-the-secret" not in json.dumps(parked)
    assert stack.graph.get_content(external_id).status_code == 404


async def test_a_course_deleted_in_canvas_is_deleted_in_graph(stack: Stack) -> None:
    external_id = deliver_thin(stack, "canvas")
    assert await stack.work() == [Outcome.UPSERTED]
    stack.seed("canvas", "courses", {**load("canvas/api_course"), "workflow_state": "deleted"})
    claims = load("canvas/course_created")
    claims["metadata"].update(event_name="course_updated", event_time="2024-09-04T10:00:00Z")
    body, headers = canvas_body(stack, claims)
    stack.deliver("canvas", body, headers)
    assert await stack.work() == [Outcome.DELETED]
    assert stack.graph.get_content(external_id).status_code == 404


async def test_a_course_hidden_in_the_lms_is_stored_inactive(stack: Stack) -> None:
    stack.seed("moodle", "courses", {**load("moodle/api_course"), "visible": 0})
    deliver_thin(stack, "moodle")  # the event itself does not say hidden: the LMS does
    assert await stack.work() == [Outcome.UPSERTED]
    assert stack.graph.get_content("7").json()["isActive"] is False


async def test_a_fetch_command_overtaken_by_a_recorded_event_is_stale_not_parked(stack: Stack) -> None:
    deliver_thin(stack, "moodle")  # E1: course_updated, a fetch command
    stack.deliver("moodle", load("moodle/course_deleted"))  # E2: course_deleted, a day later
    taken = stack.take()
    [updated] = [m for m in taken if json.loads(m[0]).get("fetch")]
    [deleted] = [m for m in taken if json.loads(m[0])["op"] == "delete"]
    stack.admin("DELETE", "/moodle/courses/7")  # the LMS no longer has the course
    assert await process(*deleted, stack.ports) is Outcome.ALREADY_ABSENT  # E2 recorded first
    # E1 arrives late: the LMS answers 404, but the ledger holds a newer event, so E1 is merely stale.
    assert await process(*updated, stack.ports) is Outcome.SKIPPED_STALE
    assert stack.poison() == []
    assert len(stack.lms_calls()) == 1  # asked once (Moodle says "no such course" with an empty list)


async def test_a_redelivered_fetch_command_whose_course_is_gone_is_stale_not_parked(stack: Stack) -> None:
    deliver_thin(stack, "moodle")
    [(message, info)] = stack.take()
    assert await process(message, info, stack.ports) is Outcome.UPSERTED  # recorded
    stack.admin("DELETE", "/moodle/courses/7")
    # A redelivery of the same message (the host lost the completion): the ledger holds this very event.
    assert await process(message, MessageInfo(info.message_id, 2), stack.ports) is Outcome.SKIPPED_STALE
    assert stack.poison() == []
