"""Docebo course webhooks (payload shape unconfirmed): grouped deliveries, key auth, a mapping override."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import DoceboSource, parse_sources
from shared.sources.docebo import DoceboAdapter
from tests.payloads import load, request

KEY = "docebo-key-1"


def source(**options: Any) -> DoceboSource:
    entry = {
        "kind": "docebo",
        "registrationId": "reg-1",
        "secretSetting": "DOCEBO_KEY",
        "contentWebUrlTemplate": "https://acme.docebosaas.com/learn/course/{id}",
        "defaultLanguageTag": "en",
        **options,
    }
    parsed = parse_sources(json.dumps({"docebo": entry}))["docebo"]
    assert isinstance(parsed, DoceboSource)
    return parsed


def deliver(
    body: Any, src: DoceboSource | None = None, query: dict[str, str] | None = None, **kw: Any
) -> list[ContentCommand]:
    src = src or source()
    req = request(body, source="docebo", query={"key": KEY} if query is None else query, **kw)
    adapter = DoceboAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, KEY))


def rejected(body: Any, **kw: Any) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, **kw)
    return info.value


def test_a_grouped_delivery_becomes_one_command_per_course() -> None:
    first, second = deliver(load("docebo/course_updated_grouped"))
    assert (first.op, first.external_id, first.source_event_id) == ("upsert", "42", "wh-msg-6f1c#0")
    assert (second.external_id, second.source_event_id) == ("43", "wh-msg-6f1c#1")
    assert first.content is not None
    assert first.content.to_graph() == {
        "externalId": "42",
        "title": "Workplace safety",
        "contentWebUrl": "https://acme.docebosaas.com/learn/course/42",
        "languageTag": "en-US",
        "description": "Stay safe.",
        "createdDateTime": "2024-08-01T09:00:00Z",
        "lastModifiedDateTime": "2024-09-02T10:00:00Z",
    }
    assert second.content is not None
    assert second.content.language_tag == "en"  # "italian" is no language tag: the source's default


def test_the_largest_group_of_25() -> None:
    body = load("docebo/course_updated_grouped")
    body["payloads"] = [{**body["payloads"][0], "course_id": i} for i in range(25)]
    commands = deliver(body)
    assert [c.external_id for c in commands] == [str(i) for i in range(25)]
    assert len({c.source_event_id for c in commands}) == 25


def test_a_single_payload_delete() -> None:
    [cmd] = deliver(load("docebo/course_deleted"))
    assert (cmd.op, cmd.external_id, cmd.source_event_id) == ("delete", "42", "wh-msg-7a2d")


def test_other_events_are_ignored() -> None:
    body = load("docebo/course_deleted")
    body["event"] = "course.enrollment.completed"
    assert deliver(body) == []


def test_a_bad_value_in_a_group_points_at_its_item() -> None:
    body = load("docebo/course_updated_grouped")
    body["payloads"][1]["creation_date"] = "first of august"
    problem = rejected(body)
    assert [e.pointer for e in problem.errors] == ["/payloads/1/creation_date"]


def test_the_key_in_the_query_is_required() -> None:
    body = load("docebo/course_deleted")
    assert rejected(body, query={}).kind.slug == "credential-missing"
    assert rejected(body, query={"key": "docebo-key-2"}).kind.slug == "credential-invalid"


def test_a_header_key() -> None:
    src = source(auth={"scheme": "header-key", "name": "X-Docebo-Key"})
    assert deliver(load("docebo/course_deleted"), src, query={}, headers={"x-docebo-key": KEY})


def test_a_real_payload_that_differs_is_handled_by_configuration() -> None:
    mapping = {
        "events": "data.courses",
        "type": "event_name",
        "id": "uuid",
        "actions": {"course.updated": "upsert"},
        "externalId": {"path": "id", "convert": "string"},
        "fields": {"title": "title"},
    }
    body = {"event_name": "course.updated", "uuid": "u-1", "data": {"courses": [{"id": 9, "title": "Nine"}]}}
    [cmd] = deliver(body, source(mapping=mapping))
    assert (cmd.external_id, cmd.source_event_id) == ("9", "u-1")
    assert cmd.content is not None
    assert cmd.content.title == "Nine"
