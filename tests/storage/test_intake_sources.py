"""Every platform kind through the real intake and queue (Azurite): an authentic delivery is queued;
a forged, expired or tampered one is a 401 problem and nothing is queued."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

from shared import intake
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.signatures import sign
from tests.conftest import SECRET
from tests.payloads import CanvasKeys, canvas_keys, load, raw, thinkific_headers
from tests.queues import peek_json

MOODLE_TOKEN = "moodle-service-token-1"
THINKIFIC_KEY = "thinkific-api-key-1"
SHARED_KEY = "shared-query-key-1"
CE = "application/cloudevents+json"
LANGUAGE = {"defaultLanguageTag": "en"}
# The Canvas account of the sample Live Events (tests/payloads/canvas).
ACCOUNT = {"rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"}


class KeySet(BaseHTTPRequestHandler):
    """Serves a JWKS as Canvas's key endpoint does, so the real HTTPS fetcher's code path runs."""

    document: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url() -> Iterator[str]:
    handler = type("Keys", (KeySet,), {"document": json.dumps(canvas_keys().jwks()).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def lms(settings: Settings, jwks_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test app with one source of every kind."""
    for name, value in {
        "MOODLE_TOKEN": MOODLE_TOKEN,
        "THINKIFIC_API_KEY": THINKIFIC_KEY,
        "SHARED_KEY": SHARED_KEY,
        "ACME_WEBHOOK_SECRET": SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    sources = {
        "canvas": {
            "kind": "canvas",
            **ACCOUNT,
            "registrationId": "reg-1",
            "jwksUrl": jwks_url,
            "contentWebUrlTemplate": "https://canvas.example.com/courses/{id}",
            **LANGUAGE,
        },
        "canvas-thin": {"kind": "canvas", "registrationId": "reg-1", "jwksUrl": jwks_url, **ACCOUNT},
        "canvas-keys-down": {
            "kind": "canvas",
            "registrationId": "reg-1",
            "jwksUrl": "http://127.0.0.1:9/jwks",
            **ACCOUNT,
        },
        "moodle": {
            "kind": "moodle",
            "registrationId": "reg-1",
            "secretSetting": "MOODLE_TOKEN",
            "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
            **LANGUAGE,
        },
        "openedx": {
            "kind": "openedx",
            "registrationId": "reg-1",
            "secretSetting": "SHARED_KEY",
            "contentWebUrlTemplate": "https://lms.example.com/courses/{rawId}/about",
            **LANGUAGE,
        },
        "thinkific": {
            "kind": "thinkific",
            "registrationId": "reg-1",
            "secretSetting": "THINKIFIC_API_KEY",
            "contentWebUrlTemplate": "https://acme.thinkific.com/courses/{slug}",
            **LANGUAGE,
        },
        "docebo": {
            "kind": "docebo",
            "registrationId": "reg-1",
            "secretSetting": "SHARED_KEY",
            "contentWebUrlTemplate": "https://acme.docebosaas.com/learn/course/{id}",
            **LANGUAGE,
        },
        "eventgrid": {"kind": "eventgrid", "registrationId": "reg-1", "secretSetting": "SHARED_KEY"},
        "acme": {
            "kind": "mapped",
            "registrationId": "reg-1",
            "secretSetting": "ACME_WEBHOOK_SECRET",
            "mapping": {
                "actions": {"academy.course.published": "upsert"},
                "externalId": {"path": "data.course.uid", "convert": "string"},
                "fields": {
                    "title": "data.course.headline",
                    "contentWebUrl": "data.course.link",
                    "languageTag": {"path": "data.course.locale", "convert": "language"},
                },
            },
        },
    }
    return settings.model_copy(update={"sources_json": json.dumps(sources)})


def queued(settings: Settings) -> list[dict[str, Any]]:
    return peek_json(settings.storage_connection_string or "", settings.content_queue_name)


def post(
    settings: Settings,
    source: str,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    query: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> intake.IntakeResponse:
    request = intake.make_request(source, {"content-type": content_type, **(headers or {})}, raw(body), query)
    return intake.receive(request, settings, lambda: StorageCommandQueue.from_settings(settings))


def standard_webhooks(body: Any, *, secret: str = SECRET, age: int = 0) -> dict[str, str]:
    return sign(raw(body), secret, webhook_id="msg_1", timestamp=int(time.time()) - age)


@dataclass(frozen=True)
class Sent:
    """One delivery as a platform sends it."""

    source: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def canvas_body(keys: CanvasKeys | None = None, **claims: Any) -> bytes:
    keys = keys or canvas_keys()
    return keys.sign(load("canvas/course_created"), kid="2024-09", **claims)


def thinkific_body() -> dict[str, Any]:
    return load("thinkific/product_updated")


def acme(**signing: Any) -> Sent:
    body = load("mapped/acme_course_published")
    return Sent("acme", body, standard_webhooks(body, **signing), content_type=CE)


AUTHENTIC: dict[str, tuple[Callable[[], Sent], list[tuple[str, str]]]] = {
    "canvas": (
        lambda: Sent("canvas", canvas_body(), content_type="application/jwt"),
        [("upsert", "21070000000000056")],
    ),
    "moodle": (lambda: Sent("moodle", load("moodle/course_updated")), [("upsert", "7")]),
    "openedx": (
        lambda: Sent("openedx", load("openedx/bus_catalog_info_changed"), query={"key": SHARED_KEY}, content_type=CE),
        [("upsert", "edX/DemoX/Demo_Course")],
    ),
    "thinkific": (
        lambda: Sent("thinkific", thinkific_body(), thinkific_headers(thinkific_body(), THINKIFIC_KEY)),
        [("upsert", "123")],
    ),
    "docebo": (
        lambda: Sent("docebo", load("docebo/course_updated_grouped"), query={"key": SHARED_KEY}),
        [("upsert", "42"), ("upsert", "43")],
    ),
    "eventgrid": (
        lambda: Sent(
            "eventgrid", load("eventgrid/course_events"), {"aeg-event-type": "Notification"}, {"key": SHARED_KEY}
        ),
        [("upsert", "eg-101"), ("delete", "eg-102")],
    ),
    "mapped": (acme, [("upsert", "88123")]),
}


@pytest.mark.parametrize("platform", sorted(AUTHENTIC))
def test_an_authentic_delivery_is_queued(lms: Settings, platform: str) -> None:
    delivery, expected = AUTHENTIC[platform]
    sent = delivery()
    response = post(lms, sent.source, sent.body, sent.headers, query=sent.query, content_type=sent.content_type)
    assert response.status == 202, response.body
    assert response.body["accepted"] == len(expected)
    messages = queued(lms)
    assert sorted((m["op"], m["externalId"]) for m in messages) == sorted(expected)
    for message in messages:
        assert message["v"] == 1
        assert message["registrationId"] == "reg-1"
        assert message["source"] == sent.source
        assert message["correlationId"] == response.body["correlationId"]
        assert message["sourceEventId"]


def moodle_with_token(token: Any) -> dict[str, Any]:
    body = load("moodle/course_updated")
    body["token"] = token
    return body


def tampered_thinkific() -> tuple[bytes, dict[str, str]]:
    body = raw(thinkific_body())
    return body.replace(b"Intro to Widgets", b"Intro to Gadgets"), thinkific_headers(body, THINKIFIC_KEY)


def tampered_mapped() -> tuple[bytes, dict[str, str]]:
    body = raw(load("mapped/acme_course_published"))
    return body.replace(b"88123", b"88124"), standard_webhooks(body)


JWT = "application/jwt"
REJECTED: dict[str, tuple[Callable[[], Sent], str]] = {
    "canvas forged": (
        lambda: Sent("canvas", canvas_body(CanvasKeys(kids=("2024-09",))), content_type=JWT),
        "signature-invalid",
    ),
    "canvas tampered": (lambda: Sent("canvas", _tamper_jwt(canvas_body()), content_type=JWT), "signature-invalid"),
    "canvas expired": (
        lambda: Sent("canvas", canvas_body(exp=int(time.time()) - 3600), content_type=JWT),
        "signature-expired",
    ),
    "canvas unsigned": (lambda: Sent("canvas", load("canvas/course_created")), "signature-missing"),
    "moodle wrong token": (lambda: Sent("moodle", moodle_with_token("guess")), "credential-invalid"),
    "moodle no token": (lambda: Sent("moodle", moodle_with_token(None)), "credential-missing"),
    "openedx wrong key": (
        lambda: Sent("openedx", load("openedx/bus_catalog_info_changed"), query={"key": "guess"}, content_type=CE),
        "credential-invalid",
    ),
    "openedx no key": (
        lambda: Sent("openedx", load("openedx/bus_catalog_info_changed"), content_type=CE),
        "credential-missing",
    ),
    "thinkific forged": (
        lambda: Sent("thinkific", thinkific_body(), thinkific_headers(thinkific_body(), "other-key")),
        "signature-invalid",
    ),
    "thinkific tampered": (lambda: Sent("thinkific", *tampered_thinkific()), "signature-invalid"),
    "thinkific unsigned": (lambda: Sent("thinkific", thinkific_body()), "signature-missing"),
    "docebo wrong key": (
        lambda: Sent("docebo", load("docebo/course_updated_grouped"), query={"key": "guess"}),
        "credential-invalid",
    ),
    "eventgrid wrong key": (
        lambda: Sent("eventgrid", load("eventgrid/course_events"), query={"key": "guess"}),
        "credential-invalid",
    ),
    "eventgrid handshake without key": (
        lambda: Sent("eventgrid", load("eventgrid/subscription_validation")),
        "credential-missing",
    ),
    "mapped forged": (lambda: acme(secret="whsec_Zm9yZ2VkLWtleQ=="), "signature-invalid"),
    "mapped expired": (lambda: acme(age=3600), "signature-expired"),
    "mapped tampered": (lambda: Sent("acme", *tampered_mapped(), content_type=CE), "signature-invalid"),
}


def _tamper_jwt(token: bytes) -> bytes:
    header, payload, signature = token.split(b".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["body"]["workflow_state"] = "deleted"
    return b".".join((header, jwt.utils.base64url_encode(json.dumps(claims).encode()), signature))


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_forged_expired_or_tampered_delivery_is_401_and_nothing_is_queued(lms: Settings, case: str) -> None:
    delivery, slug = REJECTED[case]
    sent = delivery()
    response = post(lms, sent.source, sent.body, sent.headers, query=sent.query, content_type=sent.content_type)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert response.body["type"] == f"urn:vlsync:problem:{slug}"
    assert response.body["instance"] == f"/api/webhooks/{sent.source}"
    assert queued(lms) == []


def test_a_thin_event_that_cannot_be_completed_is_422_and_nothing_is_queued(lms: Settings) -> None:
    response = post(lms, "canvas-thin", canvas_body(), content_type="application/jwt")
    assert response.status == 422
    assert response.body["type"] == "urn:vlsync:problem:content-incomplete"
    assert [e["pointer"] for e in response.body["errors"]] == ["/body", "/body"]
    assert queued(lms) == []


def test_unreadable_signing_keys_are_503_with_retry_after_and_nothing_is_queued(lms: Settings) -> None:
    response = post(lms, "canvas-keys-down", canvas_body(), content_type="application/jwt")
    assert response.status == 503
    assert response.body["type"] == "urn:vlsync:problem:keys-unavailable"
    assert response.headers["Retry-After"] == "60"
    assert queued(lms) == []


def test_events_that_are_not_about_the_catalog_are_accepted_and_ignored(lms: Settings) -> None:
    body = load("moodle/course_updated")
    body["eventname"] = "\\core\\event\\user_loggedin"
    response = post(lms, "moodle", body)
    assert response.status == 202
    assert response.body["accepted"] == 0
    assert queued(lms) == []


def test_a_batch_is_all_or_nothing(lms: Settings) -> None:
    body = load("docebo/course_updated_grouped")
    body["payloads"][1]["creation_date"] = "first of august"
    response = post(lms, "docebo", body, query={"key": SHARED_KEY})
    assert response.status == 400
    assert [e["pointer"] for e in response.body["errors"]] == ["/payloads/1/creation_date"]
    assert queued(lms) == []


def test_the_event_grid_handshake_is_answered_and_nothing_is_queued(lms: Settings) -> None:
    answer = {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    handshake = load("eventgrid/subscription_validation")
    headers = {"aeg-event-type": "SubscriptionValidation"}
    response = post(lms, "eventgrid", handshake, headers, query={"key": SHARED_KEY})
    assert (response.status, response.body) == (200, answer)
    assert queued(lms) == []


def test_the_options_preflight_goes_through_the_intake(lms: Settings) -> None:
    def options(source: str, query: dict[str, str]) -> intake.IntakeResponse:
        request = intake.make_request(source, {"WebHook-Request-Origin": "eventgrid.azure.net"}, b"", query)
        return intake.preflight(request, lms)

    allowed = options("eventgrid", {"key": SHARED_KEY})
    assert allowed.status == 200
    assert allowed.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert options("eventgrid", {}).status == 401
    assert options("moodle", {}).status == 405
    assert options("nope", {}).status == 404
    assert queued(lms) == []
