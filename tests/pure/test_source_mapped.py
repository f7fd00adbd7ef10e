"""Generic mapped sources: a new LMS onboarded by configuration alone (the fictional Acme Academy of
docs/sources.md), expressions, converters, status values, grouped bodies and Standard Webhooks."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import MappedSource, parse_sources
from shared.signatures import sign
from shared.sources.mapped import MappedAdapter
from shared.sources.mapping import MISSING, evaluate, pointer_of
from tests.conftest import SECRET
from tests.payloads import load, raw, request

CE = "application/cloudevents+json"

# The SOURCES entry of docs/sources.md's worked example, verbatim in spirit: nothing else is needed.
ACME: dict[str, Any] = {
    "kind": "mapped",
    "registrationId": "reg-1",
    "secretSetting": "ACME_WEBHOOK_SECRET",
    "externalIdPrefix": "acme-",
    "mapping": {
        "actions": {
            "academy.course.published": "upsert",
            "academy.course.updated": "upsert",
            "academy.course.unpublished": "hidden",
            "academy.course.deleted": "delete",
        },
        "externalId": {"path": "data.course.uid", "convert": "string"},
        "status": {"path": "data.course.state", "values": {"live": "active", "draft": "hidden", "retired": "deleted"}},
        "fields": {
            "title": "data.course.headline",
            "description": {"path": "data.course.summary_html", "convert": "html"},
            "contentWebUrl": "data.course.link",
            "languageTag": {"path": "data.course.locale", "convert": "language"},
            "duration": {"path": "data.course.length_minutes", "convert": "duration-minutes"},
            "createdDateTime": {"path": "data.course.published_at", "convert": "epoch-milliseconds"},
            "skillTags": "data.course.tags",
            "sourceName": {"value": "Acme Academy"},
        },
    },
}


def source(entry: dict[str, Any] | None = None, **options: Any) -> MappedSource:
    parsed = parse_sources(json.dumps({"acme": {**(entry or ACME), **options}}))["acme"]
    assert isinstance(parsed, MappedSource)
    return parsed


def deliver(
    body: Any, src: MappedSource | None = None, *, content_type: str = CE, timestamp: int | None = None, **kw: Any
) -> list[ContentCommand]:
    src = src or source()
    data = raw(body)
    headers = {
        **sign(data, SECRET, webhook_id="msg_abc", timestamp=timestamp or int(time.time())),
        **kw.pop("headers", {}),
    }
    req = request(data, source="acme", headers=headers, content_type=content_type, received_at=datetime.now(UTC), **kw)
    adapter = MappedAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, SECRET))


def rejected(body: Any, src: MappedSource | None = None, **kw: Any) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, src, **kw)
    return info.value


def acme(**course: Any) -> dict[str, Any]:
    event = load("mapped/acme_course_published")
    event["data"]["course"].update(course)
    return event


def test_a_fictional_lms_is_onboarded_by_configuration_alone() -> None:
    [cmd] = deliver(load("mapped/acme_course_published"))
    assert cmd.op == "upsert"
    assert cmd.external_id == "acme-88123"
    assert cmd.source_event_id == "evt_01J7ACME0001"
    assert cmd.event_time == datetime(2024, 9, 2, 8, 0, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.to_graph() == {
        "externalId": "acme-88123",
        "title": "Negotiation basics",
        "contentWebUrl": "https://academy.acme.example/c/88123",
        "languageTag": "fr-CA",
        "description": "Win–win deals.",
        "sourceName": "Acme Academy",
        "duration": "PT1H35M",
        "skillTags": ["sales", "soft skills"],
        "createdDateTime": "2024-09-02T08:00:00Z",
    }


@pytest.mark.parametrize(
    ("state", "op", "active"), [("live", "upsert", None), ("draft", "upsert", False), ("retired", "delete", None)]
)
def test_status_values_mean_active_hidden_or_deleted(state: str, op: str, active: bool | None) -> None:
    [cmd] = deliver(acme(state=state))
    assert cmd.op == op
    assert (cmd.content.is_active if cmd.content else None) is active


def test_an_unmapped_status_is_refused_unless_there_is_a_default() -> None:
    problem = rejected(acme(state="archived"))
    assert problem.kind.slug == "schema-violation"
    assert problem.errors[0].pointer == "/data/course/state"
    assert "draft, live, retired" in problem.errors[0].detail
    lenient = json.loads(json.dumps(ACME))
    lenient["mapping"]["status"]["default"] = "active"
    assert deliver(acme(state="archived"), source(lenient))[0].op == "upsert"


def test_event_types_map_to_actions_and_others_are_ignored() -> None:
    event = acme()
    event["type"] = "academy.course.unpublished"
    [cmd] = deliver(event)
    assert cmd.content is not None
    assert cmd.content.is_active is False
    event["type"] = "academy.course.deleted"
    assert deliver(event)[0].op == "delete"
    event["type"] = "academy.learner.enrolled"
    assert deliver(event) == []


def test_hidden_as_delete() -> None:
    [cmd] = deliver(acme(state="draft"), source(hiddenAs="delete"))
    assert cmd.op == "delete"


def test_a_batch_of_cloudevents() -> None:
    first, second = acme(uid=1), acme(uid=2)
    second["id"] = "evt_2"
    commands = deliver([first, second], content_type="application/cloudevents-batch+json")
    assert [c.external_id for c in commands] == ["acme-1", "acme-2"]


def test_a_binary_mode_cloudevent_points_into_its_data() -> None:
    event = acme(locale="klingon!")
    headers = {f"ce-{k}": v for k, v in event.items() if k not in ("data", "datacontenttype")}
    problem = rejected(event["data"], content_type="application/json", headers=headers)
    assert [e.pointer for e in problem.errors] == ["/course/locale"]


def test_every_failing_value_is_reported_with_its_pointer() -> None:
    problem = rejected(acme(length_minutes="long", link="/c/88123", published_at="when"))
    assert problem.kind.slug == "schema-violation"
    assert sorted(e.pointer or "" for e in problem.errors) == [
        "/data/course/length_minutes",
        "/data/course/link",
        "/data/course/published_at",
    ]


def test_missing_required_fields_are_content_incomplete() -> None:
    event = acme()
    del event["data"]["course"]["link"]
    problem = rejected(event)
    assert problem.kind.slug == "content-incomplete"
    assert [e.detail.split(":")[0] for e in problem.errors] == ["contentWebUrl is required"]
    templated = source(contentWebUrlTemplate="https://academy.acme.example/c/{id}")
    assert deliver(event, templated)[0].content.content_web_url == "https://academy.acme.example/c/88123"  # type: ignore[union-attr]


def test_a_missing_external_id_is_pointed_at() -> None:
    event = acme()
    del event["data"]["course"]["uid"]
    assert [e.pointer for e in rejected(event).errors] == ["/data/course/uid"]


# -- Standard Webhooks authenticity ---------------------------------------------------------------


def test_forged_expired_and_tampered_deliveries_are_401() -> None:
    body = raw(load("mapped/acme_course_published"))
    src = source()
    adapter = MappedAdapter()

    def problem(data: bytes, headers: dict[str, str]) -> str:
        with pytest.raises(Problem) as info:
            adapter.authenticate(request(data, headers=headers, content_type=CE), src, SECRET)
        return info.value.kind.slug

    now = int(time.time())
    forged = sign(body, "whsec_" + "Zm9yZ2VkLWtleS1mb3ItdGVzdHM=", webhook_id="m", timestamp=now)
    assert problem(body, forged) == "signature-invalid"
    assert problem(body, sign(body, SECRET, webhook_id="m", timestamp=now - 3600)) == "signature-expired"
    assert problem(body.replace(b"88123", b"88124"), sign(body, SECRET, webhook_id="m", timestamp=now)) == (
        "signature-invalid"
    )
    assert problem(body, {}) == "signature-missing"


# -- the Standard Webhooks envelope, JSON pointers, grouped bodies ------------------------------------

SW: dict[str, Any] = {
    "kind": "mapped",
    "registrationId": "reg-1",
    "secretSetting": "S",
    "envelope": "standard-webhooks",
    "defaultLanguageTag": "en",
    "mapping": {
        "events": "items",
        "actions": {"*": "upsert", "catalog.removed": "delete"},
        "externalId": "/sku",
        "fields": {
            "title": "/label",
            "contentWebUrl": "/href",
            "duration": {"path": "secs", "convert": "duration-seconds"},
        },
    },
}


def test_standard_webhooks_envelope_with_a_list_of_items() -> None:
    body = {
        "type": "catalog.changed",
        "timestamp": "2024-09-02T10:00:00Z",
        "items": [
            {"sku": "A/1", "label": "Alpha", "href": "https://lms.example/a", "secs": 600},
            {"sku": "B~2", "label": "Beta", "href": "https://lms.example/b"},
        ],
    }
    commands = deliver(body, source(SW), content_type="application/json")
    assert [(c.external_id, c.source_event_id) for c in commands] == [("A/1", "msg_abc#0"), ("B~2", "msg_abc#1")]
    assert commands[0].content is not None
    assert commands[0].content.duration == "PT10M"
    assert all(c.event_time == datetime(2024, 9, 2, 10, 0, tzinfo=UTC) for c in commands)


def test_items_inherit_the_body_type_and_errors_point_into_the_list() -> None:
    body = {"type": "catalog.changed", "items": [{"sku": "A", "label": "x", "href": "nope"}]}
    problem = rejected(body, source(SW), content_type="application/json")
    assert [e.pointer for e in problem.errors] == ["/items/0/href"]


def test_an_item_may_carry_its_own_type() -> None:
    body = {"type": "catalog.changed", "items": [{"sku": "A", "type": "catalog.removed"}]}
    [cmd] = deliver(body, source(SW), content_type="application/json")
    assert cmd.op == "delete"


def test_a_single_event_keeps_the_webhook_id() -> None:
    entry = json.loads(json.dumps(SW))
    del entry["mapping"]["events"]
    body = {"type": "x", "sku": "A", "label": "t", "href": "https://lms.example/a"}
    [cmd] = deliver(body, source(entry), content_type="application/json")
    assert cmd.source_event_id == "msg_abc"
    assert cmd.event_time.year >= 2025  # no timestamp in the body: the delivery's webhook-timestamp


# -- expressions -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("data.course.uid", 88123),
        ("/data/course/uid", 88123),
        ("data.course.tags[1]", "soft skills"),
        ("/data/course/tags/0", "sales"),
        ("data.course.missing", MISSING),
        ("/data/nope/x", MISSING),
        ("data.course.tags[?@ == 'sales'] | [0]", "sales"),
        ("join(' ', data.course.tags)", "sales soft skills"),
    ],
)
def test_jmespath_and_json_pointers(expression: str, value: Any) -> None:
    assert evaluate(expression, load("mapped/acme_course_published")) == value


def test_pointers_of_simple_paths() -> None:
    assert pointer_of("data.course.tags[1]") == "/data/course/tags/1"
    assert pointer_of("/a~1b") == "/a~1b"
    assert pointer_of("join(' ', tags)") is None


# Ids as LMSs make them: digits, course keys with ':' '+' '/', quotes, spaces, non-ASCII letters.
ids = st.text(
    st.characters(
        blacklist_categories=("Cc", "Cs"),
        blacklist_characters="\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    min_size=1,
    max_size=60,
)


@settings(database=None, deadline=None, max_examples=60)
@given(ids)
def test_any_platform_id_is_the_external_id_as_is(course_id: str) -> None:
    entry = json.loads(json.dumps(ACME))
    del entry["mapping"]["fields"]["contentWebUrl"]
    src = source(entry, contentWebUrlTemplate="https://academy.acme.example/c/{id}")
    event = acme(uid=course_id)
    [cmd] = deliver(event, src)
    assert cmd.external_id == "acme-" + course_id
    assert cmd.content is not None
    assert cmd.content.content_web_url.startswith("https://academy.acme.example/c/")


@pytest.mark.parametrize(
    ("where", "expression"),
    [("events", "sort_by(data.courses, &updated)"), ("field", "sort_by(data.course.tags, &@)[0]")],
)
def test_an_expression_that_fails_on_the_senders_data_is_a_400_not_a_crash(where: str, expression: str) -> None:
    mapping = json.loads(json.dumps(ACME["mapping"]))
    course = {"uid": 7, "state": "live", "headline": "T", "link": "https://acme.example/7", "locale": "en"}
    if where == "events":
        mapping["events"] = expression
        mapping["externalId"] = {"path": "uid", "convert": "string"}
        mapping.pop("status")
        mapping["fields"] = {"title": "headline", "contentWebUrl": "link", "languageTag": "locale"}
        data = {"courses": [{**course, "updated": "a"}, {**course, "uid": 8, "updated": 5}]}
    else:
        mapping["fields"]["skillTags"] = expression
        data = {"course": {**course, "tags": ["a", 1]}}
    event = {"specversion": "1.0", "id": "e1", "source": "acme", "type": "academy.course.updated", "data": data}
    problem = rejected(event, source({**ACME, "mapping": mapping}))
    assert problem.kind.slug == "schema-violation"
    assert "cannot be read with" in problem.errors[0].detail
