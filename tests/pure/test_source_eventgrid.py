"""Azure Event Grid: the validation handshake, the CloudEvents OPTIONS preflight, keys and both schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import EventGridSource, SourceConfig, parse_sources
from shared.sources import Reply, preflight
from shared.sources.eventgrid import EventGridAdapter
from tests.payloads import load, request
from tests.webhooks import content, event

KEY = "eventgrid-key-1"


def source(**options: Any) -> EventGridSource:
    entry = {"kind": "eventgrid", "registrationId": "reg-1", "secretSetting": "EG_KEY", **options}
    parsed = parse_sources(json.dumps({"eg": entry}))["eg"]
    assert isinstance(parsed, EventGridSource)
    return parsed


def deliver(
    body: Any, src: EventGridSource | None = None, query: dict[str, str] | None = None, **kw: Any
) -> list[ContentCommand]:
    src = src or source()
    req = request(body, source="eg", query={"key": KEY} if query is None else query, **kw)
    adapter = EventGridAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, KEY))


def rejected(body: Any, **kw: Any) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, **kw)
    return info.value


# -- the Event Grid schema -------------------------------------------------------------------------


def test_subscription_validation_echoes_the_code() -> None:
    with pytest.raises(Reply) as info:
        deliver(load("eventgrid/subscription_validation"), headers={"aeg-event-type": "SubscriptionValidation"})
    assert info.value.status == 200
    assert info.value.body == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def test_the_handshake_needs_the_key_too() -> None:
    problem = rejected(load("eventgrid/subscription_validation"), query={})
    assert problem.kind.slug == "credential-missing"


def test_a_validation_code_that_is_not_a_guid_is_not_echoed() -> None:
    body = load("eventgrid/subscription_validation")
    body[0]["data"]["validationCode"] = "<script>"
    problem = rejected(body)
    assert [e.pointer for e in problem.errors] == ["/0/data/validationCode"]


def test_a_validation_delivery_without_its_event_is_refused() -> None:
    problem = rejected(load("eventgrid/course_events"), headers={"aeg-event-type": "SubscriptionValidation"})
    assert problem.kind.slug == "schema-violation"


def test_notifications_with_graph_data() -> None:
    upsert, delete = deliver(load("eventgrid/course_events"), headers={"aeg-event-type": "Notification"})
    assert (upsert.op, upsert.external_id) == ("upsert", "eg-101")
    assert upsert.source_event_id == "b3f1a8e2-0000-4000-8000-000000000001"
    assert upsert.content is not None
    assert upsert.content.title == "Event Grid course"
    assert (delete.op, delete.external_id) == ("delete", "eg-102")  # from the subject


def test_errors_point_at_the_event_grid_fields() -> None:
    body = load("eventgrid/course_events")
    body[0]["eventType"] = "Contoso.Lms.Course.Archived"
    body[1]["eventTime"] = "yesterday"
    problem = rejected(body)
    assert sorted(e.pointer or "" for e in problem.errors) == ["/0/eventType", "/1/eventTime"]


def test_the_body_is_an_array() -> None:
    assert rejected(load("eventgrid/course_events")[0]).errors[0].pointer == ""


@pytest.mark.parametrize(("query", "slug"), [({}, "credential-missing"), ({"key": "nope"}, "credential-invalid")])
def test_the_key_is_checked(query: dict[str, str], slug: str) -> None:
    assert rejected(load("eventgrid/course_events"), query=query).kind.slug == slug


def test_a_header_key_from_delivery_properties() -> None:
    src = source(auth={"scheme": "header-key", "name": "X-Vlsync-Key"})
    assert deliver(load("eventgrid/course_events"), src, query={}, headers={"X-Vlsync-Key": KEY})


def test_a_mapping_reads_any_data_shape() -> None:
    src = source(
        mapping={
            "actions": {"Contoso.Catalog.ItemPublished": "upsert", "Contoso.Catalog.ItemRetired": "delete"},
            "externalId": "data.itemId",
            "fields": {"title": "data.name", "contentWebUrl": "data.url"},
        },
        defaultLanguageTag="de_de",
    )
    body = [
        {
            "id": "e1",
            "topic": "/t",
            "subject": "items/1",
            "eventType": "Contoso.Catalog.ItemPublished",
            "eventTime": "2024-09-02T10:00:00Z",
            "data": {"itemId": "I-1", "name": "Eins", "url": "https://lms.example/i/1"},
        },
        {"id": "e2", "subject": "items/2", "eventType": "Contoso.Catalog.ItemRetired", "data": {"itemId": "I-2"}},
    ]
    first, second = deliver(body, src)
    assert first.content is not None
    assert (first.external_id, first.content.language_tag, first.source_event_id) == ("I-1", "de-DE", "e1")
    assert (second.op, second.external_id) == ("delete", "I-2")


# -- the CloudEvents schema ------------------------------------------------------------------------


def test_cloudevents_schema_with_graph_data() -> None:
    src = source(schema="cloudevents")
    body = event("contoso.course.created", content("ce-1"), time="2024-09-02T10:00:00Z")
    [cmd] = deliver(body, src, content_type="application/cloudevents+json")
    assert cmd.external_id == "ce-1"


def test_cloudevents_schema_with_a_mapping() -> None:
    src = source(
        schema="cloudevents",
        mapping={"actions": {"x.updated": "upsert"}, "externalId": "data.k", "fields": {"title": "data.t"}},
        contentWebUrlTemplate="https://lms.example/k/{id}",
        defaultLanguageTag="en",
    )
    body = event("x.updated", {"k": "K 1", "t": "Tee"}, time="2024-09-02T10:00:00Z")
    [cmd] = deliver(body, src, content_type="application/cloudevents+json")
    assert cmd.content is not None
    assert cmd.content.content_web_url == "https://lms.example/k/K%201"


# -- the OPTIONS preflight (CloudEvents abuse protection) --------------------------------------------


def options(src: SourceConfig, headers: dict[str, str], query: dict[str, str] | None = None) -> Reply:
    req = request(b"", source="eg", headers=headers, query={"key": KEY} if query is None else query)
    return preflight(req, src, KEY)


def test_an_allowed_origin_is_granted() -> None:
    reply = options(source(schema="cloudevents"), {"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert reply.status == 200
    assert reply.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert reply.headers["WebHook-Allowed-Rate"] == "*"


def test_another_origin_is_refused_and_a_missing_one_is_a_bad_request() -> None:
    src = source(schema="cloudevents")
    assert options(src, {"WebHook-Request-Origin": "evil.example"}).status == 403
    assert options(src, {}).status == 400
    assert options(source(allowedOrigins=["hub.example"]), {"WebHook-Request-Origin": "HUB.example"}).status == 200


def test_the_preflight_needs_the_key() -> None:
    with pytest.raises(Problem) as info:
        options(source(), {"WebHook-Request-Origin": "eventgrid.azure.net"}, query={})
    assert info.value.kind.slug == "credential-missing"


def test_sources_without_a_preflight_answer_405() -> None:
    moodle = parse_sources(json.dumps({"m": {"kind": "moodle", "registrationId": "r", "secretSetting": "S"}}))["m"]
    reply = options(moodle, {"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert (reply.status, reply.headers) == (405, {"Allow": "POST"})
