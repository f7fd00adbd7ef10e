"""Open edX COURSE_CATALOG_INFO_CHANGED: the openedx-webhooks plugin envelope and the event-bus CloudEvent."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import OpenEdxSource, parse_sources
from shared.signatures import sign
from shared.sources.openedx import OpenEdxAdapter
from tests.conftest import SECRET
from tests.payloads import load, raw, request

KEY = "openedx-shared-key"
CE = "application/cloudevents+json"


def source(**options: Any) -> OpenEdxSource:
    entry = {
        "kind": "openedx",
        "registrationId": "reg-1",
        "secretSetting": "OPENEDX_KEY",
        "contentWebUrlTemplate": "https://lms.example.com/courses/{rawId}/about",
        "defaultLanguageTag": "en",
        **options,
    }
    parsed = parse_sources(json.dumps({"openedx": entry}))["openedx"]
    assert isinstance(parsed, OpenEdxSource)
    return parsed


def deliver(
    body: Any, src: OpenEdxSource | None = None, secret: str = KEY, query: dict[str, str] | None = None, **kw: Any
) -> list[ContentCommand]:
    src = src or source()
    req = request(body, source="openedx", query={"key": KEY} if query is None else query, **kw)
    adapter = OpenEdxAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, secret))


def rejected(body: Any, **kw: Any) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, **kw)
    return info.value


def test_plugin_envelope_field_by_field() -> None:
    [cmd] = deliver(load("openedx/plugin_catalog_info_changed"))
    assert cmd.op == "upsert"
    assert cmd.external_id == "course-v1:edX+DemoX+Demo_Course"  # ':' and '+' kept
    assert cmd.source_event_id == "c8bee32c-a1a5-11ed-baf0-0242ac140007"
    assert cmd.event_time == datetime(2024, 9, 2, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.to_graph() == {
        "externalId": "course-v1:edX+DemoX+Demo_Course",
        "title": "Demonstration Course",
        "contentWebUrl": "https://lms.example.com/courses/course-v1:edX+DemoX+Demo_Course/about",
        "languageTag": "en",
    }


def test_a_plugin_time_without_offset_is_utc() -> None:
    event = load("openedx/plugin_catalog_info_changed")
    event["event_metadata"]["time"] = "2023-01-31 20:24:32.598387"
    [cmd] = deliver(event)
    assert cmd.event_time == datetime(2023, 1, 31, 20, 24, 32, 598387, tzinfo=UTC)


@pytest.mark.parametrize(("hidden", "active"), [(True, False), ("True", False), (False, None), ("false", None)])
def test_hidden_true_hides_the_course(hidden: object, active: bool | None) -> None:
    event = load("openedx/plugin_catalog_info_changed")
    event["openedx_events.content_authoring.data.CourseCatalogData"]["hidden"] = hidden
    [cmd] = deliver(event)
    assert cmd.content is not None
    assert cmd.content.is_active is active


def test_hidden_as_delete() -> None:
    [cmd] = deliver(load("openedx/bus_catalog_info_changed"), source(hiddenAs="delete"), content_type=CE)
    assert cmd.op == "delete"
    assert cmd.external_id == "edX/DemoX/Demo_Course"


def test_event_bus_cloudevent_structured() -> None:
    [cmd] = deliver(load("openedx/bus_catalog_info_changed"), content_type=CE)
    assert cmd.external_id == "edX/DemoX/Demo_Course"  # a legacy key with '/'
    assert cmd.source_event_id == "457f0c26-a1a5-11ed-afe6-0242ac140007"
    assert cmd.content is not None
    assert cmd.content.is_active is False
    assert cmd.content.content_web_url == "https://lms.example.com/courses/edX/DemoX/Demo_Course/about"


def test_event_bus_cloudevent_binary_mode() -> None:
    event = load("openedx/bus_catalog_info_changed")
    headers = {f"ce-{k}": str(v) for k, v in event.items() if k not in ("data", "datacontenttype")}
    [cmd] = deliver(event["data"], headers=headers, content_type="application/json")
    assert cmd.external_id == "edX/DemoX/Demo_Course"
    assert cmd.event_time == datetime(2024, 9, 2, tzinfo=UTC)


def test_other_events_are_ignored() -> None:
    event = load("openedx/plugin_catalog_info_changed")
    event["event_metadata"]["event_type"] = "org.openedx.learning.course.enrollment.created.v1"
    assert deliver(event) == []
    bus = load("openedx/bus_catalog_info_changed")
    bus["type"] = "org.openedx.content_authoring.xblock.published.v1"
    assert deliver(bus, content_type=CE) == []


def test_without_a_template_the_course_is_incomplete() -> None:
    bare = source(contentWebUrlTemplate=None)
    problem = rejected(load("openedx/plugin_catalog_info_changed"), src=bare)
    assert problem.kind.slug == "content-incomplete"
    assert problem.errors[0].pointer == "/openedx_events.content_authoring.data.CourseCatalogData"


def test_a_missing_course_key_is_pointed_at() -> None:
    event = load("openedx/plugin_catalog_info_changed")
    del event["openedx_events.content_authoring.data.CourseCatalogData"]["course_key"]
    problem = rejected(event)
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == [
        "/openedx_events.content_authoring.data.CourseCatalogData/course_key"
    ]


# -- authentication: the plugin signs nothing, so a key in the URL, a header, or Standard Webhooks --


def test_the_query_key_is_required_and_checked() -> None:
    body = load("openedx/plugin_catalog_info_changed")
    assert rejected(body, query={}).kind.slug == "credential-missing"
    assert rejected(body, query={"key": "guess"}).kind.slug == "credential-invalid"
    assert rejected(body, query={"code": KEY}).kind.slug == "credential-missing"


def test_a_header_key() -> None:
    src = source(auth={"scheme": "header-key", "name": "X-Openedx-Key"})
    body = load("openedx/plugin_catalog_info_changed")
    assert deliver(body, src, query={}, headers={"X-Openedx-Key": KEY})
    with pytest.raises(Problem) as info:
        deliver(body, src, query={"key": KEY})
    assert info.value.kind.slug == "credential-missing"


def test_standard_webhooks_from_a_signing_bridge() -> None:
    src = source(auth={"scheme": "standard-webhooks"})
    body = raw(load("openedx/bus_catalog_info_changed"))
    headers = sign(body, SECRET, webhook_id="msg_1", timestamp=int(time.time()))
    [cmd] = deliver(body, src, secret=SECRET, query={}, headers=headers, content_type=CE)
    assert cmd.external_id == "edX/DemoX/Demo_Course"
    stale = sign(body, SECRET, webhook_id="msg_1", timestamp=int(time.time()) - 3600)
    with pytest.raises(Problem) as info:
        deliver(body, src, secret=SECRET, query={}, headers=stale, content_type=CE)
    assert info.value.kind.slug == "signature-expired"
