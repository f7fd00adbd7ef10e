"""Thinkific: X-Thinkific-Hmac-Sha256 over the raw body, product and course events field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import ThinkificSource, parse_sources
from shared.sources.thinkific import ThinkificAdapter
from tests.payloads import load, raw, request, thinkific_headers

API_KEY = "thinkific-api-key-1"


def source(**options: Any) -> ThinkificSource:
    entry = {
        "kind": "thinkific",
        "registrationId": "reg-1",
        "secretSetting": "THINKIFIC_API_KEY",
        "contentWebUrlTemplate": "https://acme.thinkific.com/courses/{slug}",
        "defaultLanguageTag": "en",
        **options,
    }
    parsed = parse_sources(json.dumps({"thinkific": entry}))["thinkific"]
    assert isinstance(parsed, ThinkificSource)
    return parsed


def deliver(
    body: Any, *, headers: dict[str, str] | None = None, secret: str = API_KEY, src: ThinkificSource | None = None
) -> list[ContentCommand]:
    src = src or source()
    req = request(body, source="thinkific", headers=thinkific_headers(body, API_KEY) if headers is None else headers)
    adapter = ThinkificAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, secret))


def rejected(body: Any, **kw: Any) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, **kw)
    return info.value


# -- the HMAC ----------------------------------------------------------------------------------------


def test_a_missing_signature_is_401() -> None:
    problem = rejected(load("thinkific/product_updated"), headers={})
    assert problem.kind.slug == "signature-missing"
    assert problem.kind.status == 401


def test_a_signature_with_another_key_is_forged() -> None:
    body = load("thinkific/product_updated")
    assert rejected(body, headers=thinkific_headers(body, "someone-elses-key")).kind.slug == "signature-invalid"


def test_a_tampered_body_does_not_match() -> None:
    body = raw(load("thinkific/product_updated"))
    headers = thinkific_headers(body, API_KEY)
    tampered = body.replace(b"Intro to Widgets", b"Intro to Gadgets")
    assert rejected(tampered, headers=headers).kind.slug == "signature-invalid"


def test_whitespace_changes_count_as_tampering() -> None:
    body = raw(load("thinkific/product_updated"))
    assert rejected(body + b" ", headers=thinkific_headers(body, API_KEY)).kind.slug == "signature-invalid"


@pytest.mark.parametrize("value", ["sha256=abc", "zz" * 32, "ab" * 31])
def test_a_malformed_signature_is_invalid(value: str) -> None:
    problem = rejected(load("thinkific/product_updated"), headers={"X-Thinkific-Hmac-Sha256": value})
    assert problem.kind.slug == "signature-invalid"


def test_upper_case_hex_and_rotated_keys_verify() -> None:
    body = load("thinkific/product_updated")
    upper = {"X-Thinkific-Hmac-Sha256": thinkific_headers(body, API_KEY)["X-Thinkific-Hmac-Sha256"].upper()}
    assert deliver(body, headers=upper)
    assert deliver(body, secret=f"old-key {API_KEY}")


# -- events ------------------------------------------------------------------------------------------


def test_product_updated_field_by_field() -> None:
    [cmd] = deliver(load("thinkific/product_updated"))
    assert cmd.op == "upsert"
    assert cmd.external_id == "123"  # the course (productable_id), not the product 990
    assert cmd.source_event_id == "20240902100000000001"
    assert cmd.event_time == datetime(2024, 9, 2, 10, 0, 0, 123000, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.to_graph() == {
        "externalId": "123",
        "title": "Intro to Widgets",
        "contentWebUrl": "https://acme.thinkific.com/courses/intro-to-widgets",
        "languageTag": "en",
        "description": "Build widgets that last.",
        "thumbnailWebUrl": "https://cdn.thinkific.example/card.png",
        "createdDateTime": "2024-08-01T09:00:00Z",
    }


def test_course_and_product_events_name_the_same_item() -> None:
    event = load("thinkific/product_updated")
    event["resource"] = "course"
    event["payload"]["id"] = 123
    del event["payload"]["productable_id"], event["payload"]["productable_type"]
    [cmd] = deliver(event)
    assert cmd.external_id == "123"


def test_course_deleted() -> None:
    [cmd] = deliver(load("thinkific/course_deleted"))
    assert cmd.op == "delete"
    assert cmd.external_id == "123"
    assert cmd.source_event_id == "20240903100000000002"


@pytest.mark.parametrize(("change", "active"), [({"status": "draft"}, False), ({"hidden": True}, False)])
def test_draft_or_hidden_hides(change: dict[str, Any], active: bool) -> None:
    event = load("thinkific/product_updated")
    event["payload"].update(change)
    [cmd] = deliver(event)
    assert cmd.content is not None
    assert cmd.content.is_active is active


def test_unpublish_as_delete() -> None:
    event = load("thinkific/product_updated")
    event["payload"]["status"] = "draft"
    [cmd] = deliver(event, src=source(hiddenAs="delete"))
    assert cmd.op == "delete"


def test_other_products_and_topics_are_ignored() -> None:
    bundle = load("thinkific/product_updated")
    bundle["payload"]["productable_type"] = "Bundle"
    assert deliver(bundle) == []
    enrollment = load("thinkific/product_updated")
    enrollment["resource"] = "enrollment"
    assert deliver(enrollment) == []


def test_a_template_needing_a_slug_the_event_lacks_is_incomplete() -> None:
    event = load("thinkific/product_updated")
    del event["payload"]["slug"]
    problem = rejected(event)
    assert problem.kind.slug == "content-incomplete"
    assert [e.pointer for e in problem.errors] == ["/payload"]
    assert "slug" in problem.errors[0].detail


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"card_image_url": "/images/card.png"}, "/payload/card_image_url"),
        ({"created_at": "2024-08-01"}, "/payload/created_at"),
        ({"productable_id": None, "id": None}, "/payload/id"),
    ],
)
def test_bad_values_are_pointed_at(change: dict[str, Any], pointer: str) -> None:
    event = load("thinkific/product_updated")
    event["payload"].update(change)
    problem = rejected(event)
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == [pointer]
