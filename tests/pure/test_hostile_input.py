"""Hostile deliveries for every source kind (issue 9, point 13): whatever the body and headers, the
intake answers 202 or a 4xx problem, never a 5xx, and a rejected request queues nothing.

Property-based (hypothesis): random bytes, JSON documents built from hostile values (lone
surrogates, control and bidi characters, huge numbers and strings, deep nesting), and each kind's
own sample with one value replaced by a hostile one, all correctly authenticated so that the parsing
behind the authentication is what is tested. The queue is an in-memory port here, so hundreds of
examples run in seconds; tests/storage proves "nothing queued" against Azurite.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import intake
from shared.queue import SentMessage
from shared.settings import Settings
from shared.signatures import sign
from tests.conftest import SECRET
from tests.payloads import load, raw, thinkific_sign

MOODLE_TOKEN = "moodle-token-for-hostile-tests"
THINKIFIC_KEY = "thinkific-key-for-hostile-tests"
SHARED_KEY = "shared-key-for-hostile-tests"
LANGUAGE = {"defaultLanguageTag": "en"}
SOURCES: dict[str, dict[str, Any]] = {
    "demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "HOSTILE_SECRET"},
    "canvas": {
        "kind": "canvas",
        "registrationId": "reg-1",
        "rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs",
        "acceptUnsigned": True,
        "contentWebUrlTemplate": "https://canvas.example.com/courses/{id}",
        **LANGUAGE,
    },
    "moodle": {
        "kind": "moodle",
        "registrationId": "reg-1",
        "secretSetting": "HOSTILE_MOODLE_TOKEN",
        "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
        **LANGUAGE,
    },
    "openedx": {"kind": "openedx", "registrationId": "reg-1", "secretSetting": "HOSTILE_KEY", **LANGUAGE},
    "thinkific": {"kind": "thinkific", "registrationId": "reg-1", "secretSetting": "HOSTILE_THINKIFIC", **LANGUAGE},
    "docebo": {"kind": "docebo", "registrationId": "reg-1", "secretSetting": "HOSTILE_KEY", **LANGUAGE},
    "eventgrid": {"kind": "eventgrid", "registrationId": "reg-1", "secretSetting": "HOSTILE_KEY"},
    "acme": {
        "kind": "mapped",
        "registrationId": "reg-1",
        "secretSetting": "HOSTILE_SECRET",
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
SAMPLES = {
    "demo": {
        "specversion": "1.0",
        "id": "e-1",
        "source": "lms",
        "type": "course.updated",
        "data": {"externalId": "c-1", "title": "T", "contentWebUrl": "https://lms.example/c", "languageTag": "en"},
    },
    "canvas": load("canvas/course_created"),
    "moodle": load("moodle/course_updated"),
    "openedx": load("openedx/plugin_catalog_info_changed"),
    "thinkific": load("thinkific/product_updated"),
    "docebo": load("docebo/course_updated_grouped"),
    "eventgrid": load("eventgrid/course_events"),
    "acme": load("mapped/acme_course_published"),
}
CONTENT_TYPES = ["application/json", "application/cloudevents+json", "application/cloudevents-batch+json", "text/plain"]


class RecordingQueue:
    """The CommandQueue port in memory: what intake sent, nothing else."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_all(self, texts: Sequence[str]) -> list[SentMessage]:
        self.sent.extend(texts)
        return [SentMessage(f"m-{i}", "receipt") for i in range(len(texts))]

    def withdraw(self, sent: Sequence[SentMessage]) -> int:
        raise AssertionError("no dedupe here: nothing is withdrawn")

    def park(self, text: str) -> str:
        raise AssertionError("the intake never parks")

    hold = park

    def defer(self, text: str, delay_seconds: float) -> str:
        raise AssertionError("the intake never defers")


@pytest.fixture(scope="module", autouse=True)
def secrets() -> Iterator[None]:
    values = {
        "HOSTILE_SECRET": SECRET,
        "HOSTILE_MOODLE_TOKEN": MOODLE_TOKEN,
        "HOSTILE_THINKIFIC": THINKIFIC_KEY,
        "HOSTILE_KEY": SHARED_KEY,
    }
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


APP = Settings(sources_json=json.dumps(SOURCES), storage_connection_string="UseDevelopmentStorage=true")


def authenticated(source: str, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str], dict[str, str]]:
    """The delivery as the platform would authenticate it, so parsing is what gets tested."""
    query: dict[str, str] = {}
    if source in ("demo", "acme"):
        # Not UTF-8: it cannot carry a Standard Webhooks signature, and is refused as such.
        with contextlib.suppress(UnicodeDecodeError):
            headers.update(sign(body, SECRET, webhook_id="msg_hostile", timestamp=int(time.time())))
    elif source == "thinkific":
        headers["X-Thinkific-Hmac-Sha256"] = thinkific_sign(body, THINKIFIC_KEY)
    elif source in ("openedx", "docebo", "eventgrid"):
        query["key"] = SHARED_KEY
    return body, headers, query


def deliver(source: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
    body, headers, query = authenticated(source, body, {"content-type": content_type, **(extra or {})})
    queue = RecordingQueue()
    request = intake.make_request(source, headers, body, query)
    response = intake.receive(request, APP, lambda: queue)
    assert response.status < 500, (response.status, response.body)
    if response.status != 202:
        assert 400 <= response.status < 500
        assert queue.sent == [], "a rejected request queued something"
    json.dumps(response.body).encode("utf-8")  # the answer itself is always encodable


HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=10),
    st.sampled_from(["", ".", "..", "a/../b", "\r\nX-Injected: 1", "\u202egnp.exe", "\ud800", "x" * 70_000]),
)
HOSTILE_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    HOSTILE_TEXT,
)
HOSTILE_JSON = st.recursive(
    HOSTILE_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)),
    max_leaves=20,
)


def leaves(document: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(document, dict):
        return [at, *[p for key, value in document.items() for p in leaves(value, (*at, key))]]
    if isinstance(document, list):
        return [at, *[p for index, value in enumerate(document) for p in leaves(value, (*at, index))]]
    return [at]


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copied = copy.deepcopy(document)
    target = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copied


def with_token(source: str, document: Any) -> Any:
    """Moodle's credential travels in the body: keep it there unless the hostile value replaced it."""
    if source == "moodle" and isinstance(document, dict) and "token" not in document:
        return {**document, "token": MOODLE_TOKEN}
    return document


SOURCE_NAMES = st.sampled_from(sorted(SOURCES))
RUN = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@RUN
@given(source=SOURCE_NAMES, body=st.binary(max_size=600), content_type=st.sampled_from(CONTENT_TYPES))
def test_random_bytes(source: str, body: bytes, content_type: str) -> None:
    deliver(source, body, content_type)


@RUN
@given(source=SOURCE_NAMES, document=HOSTILE_JSON, content_type=st.sampled_from(CONTENT_TYPES))
def test_hostile_json_documents(source: str, document: Any, content_type: str) -> None:
    deliver(source, json.dumps(with_token(source, document)).encode(), content_type)


@RUN
@given(data=st.data(), source=SOURCE_NAMES, value=HOSTILE_JSON)
def test_each_sample_with_one_hostile_value(data: st.DataObject, source: str, value: Any) -> None:
    sample = SAMPLES[source]
    path = data.draw(st.sampled_from(leaves(sample)))
    document = with_token(source, replaced(sample, path, value))
    content_type = "application/cloudevents+json" if source == "demo" else "application/json"
    deliver(source, json.dumps(document).encode(), content_type)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize(
    "make",
    [
        lambda: b"[" * 100_000 + b"]" * 100_000,
        lambda: b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        lambda: b"9" * 100_000,
        lambda: b'"' + b"\\ud800" * 1000 + b'"',
        lambda: b"\xff\xfe\x00\x00garbage",
        lambda: b"",
    ],
    ids=["deep-array", "deep-object", "huge-number", "surrogates", "invalid-utf8", "empty"],
)
def test_pathological_bodies(source: str, make: Callable[[], bytes]) -> None:
    deliver(source, make(), "application/json")


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_crlf_and_control_characters_in_headers(source: str) -> None:
    hostile = {"x-correlation-id": "a\r\nb", "webhook-id": "msg\r\nX: 1", "ce-id": "\x00", "aeg-event-type": "\r\n"}
    deliver(source, raw(SAMPLES[source]), "application/json", hostile)
