"""The SOURCES setting per kind: one JSON document, a discriminated union on ``kind``, clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.settings import (
    CANVAS_JWKS_URL,
    CanvasSource,
    CloudEventsSource,
    DoceboSource,
    EventGridSource,
    KeyAuth,
    MappedSource,
    MoodleSource,
    OpenEdxSource,
    SignedAuth,
    SourcesError,
    ThinkificSource,
    parse_sources,
    source_secret,
)
from shared.sources import adapters

MAPPING = {"actions": {"course.published": "upsert"}, "externalId": "data.id"}
MINIMAL: dict[str, dict[str, Any]] = {
    "cloudevents": {"secretSetting": "S"},
    "canvas": {"rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"},
    "moodle": {"secretSetting": "S"},
    "openedx": {"secretSetting": "S"},
    "thinkific": {"secretSetting": "S"},
    "docebo": {"secretSetting": "S"},
    "eventgrid": {"secretSetting": "S"},
    "mapped": {"secretSetting": "S", "mapping": MAPPING},
}
CLASSES = {
    "cloudevents": CloudEventsSource,
    "canvas": CanvasSource,
    "moodle": MoodleSource,
    "openedx": OpenEdxSource,
    "thinkific": ThinkificSource,
    "docebo": DoceboSource,
    "eventgrid": EventGridSource,
    "mapped": MappedSource,
}


def one(entry: dict[str, Any]) -> Any:
    return parse_sources(json.dumps({"lms": {"registrationId": "reg-1", **entry}}))["lms"]


def error(entry: dict[str, Any]) -> str:
    with pytest.raises(SourcesError) as info:
        one(entry)
    return str(info.value)


def test_every_kind_has_an_adapter_and_a_config_class() -> None:
    assert set(adapters()) == set(MINIMAL) == set(CLASSES)
    for kind, adapter in adapters().items():
        assert adapter().kind == kind


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_each_kind_parses_with_its_defaults(kind: str) -> None:
    source = one({"kind": kind, **MINIMAL[kind]})
    assert type(source) is CLASSES[kind]
    assert source.kind == kind
    assert source.registration_id == "reg-1"


def test_kind_defaults_to_cloudevents_as_before() -> None:
    assert type(one({"secretSetting": "S"})) is CloudEventsSource


def test_lms_defaults() -> None:
    source = one({"kind": "moodle", "secretSetting": "S"})
    assert source.external_id_prefix == ""
    assert source.default_language_tag is None
    assert source.content_web_url_template is None
    assert source.hidden_as == "inactive"


def test_lms_options_are_normalised() -> None:
    source = one(
        {
            "kind": "moodle",
            "secretSetting": "S",
            "externalIdPrefix": "moodle:",
            "defaultLanguageTag": "fr_ca",
            "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
            "hiddenAs": "delete",
        }
    )
    assert source.default_language_tag == "fr-CA"
    assert source.hidden_as == "delete"


def test_canvas_defaults_to_the_published_key_set_and_signed_events() -> None:
    source = one({"kind": "canvas", "rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs"})
    assert source.jwks_url == CANVAS_JWKS_URL
    assert source.accept_unsigned is False
    assert source_secret(source) is None


def test_key_auth_defaults_to_a_query_key_and_can_be_a_header_or_signatures() -> None:
    assert one({"kind": "eventgrid", "secretSetting": "S"}).auth == KeyAuth(scheme="query-key", name="key")
    header = one({"kind": "docebo", "secretSetting": "S", "auth": {"scheme": "header-key", "name": "X-Lms-Key"}})
    assert header.auth == KeyAuth(scheme="header-key", name="X-Lms-Key")
    signed = one({"kind": "openedx", "secretSetting": "S", "auth": {"scheme": "standard-webhooks"}})
    assert isinstance(signed.auth, SignedAuth)


def test_event_grid_schema_and_origins() -> None:
    source = one({"kind": "eventgrid", "secretSetting": "S", "schema": "cloudevents", "allowedOrigins": ["a.example"]})
    assert source.schema_ == "cloudevents"
    assert source.allowed_origins == ("a.example",)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "moodle"}, "secretSetting: Field required"),
        ({"kind": "blackboard", "secretSetting": "S"}, "kind 'blackboard' is not one of cloudevents, canvas"),
        ({"kind": "canvas", "rootAccountId": "1", "secretSetting": "S"}, "remove secretSetting"),
        ({"kind": "canvas"}, "give rootAccountUuid"),
        (
            {"kind": "canvas", "rootAccountId": "1", "jwksUrl": "http://keys.example/jwks"},
            "jwksUrl: must be an https URL",
        ),
        ({"kind": "canvas", "rootAccountId": "1", "maxTokenAgeSeconds": 5}, "maxTokenAgeSeconds"),
        ({"kind": "moodle", "secretSetting": "S", "token": "inline"}, "token: Extra inputs are not permitted"),
        ({"kind": "moodle", "secretSetting": "not a name"}, "secretSetting: String should match pattern"),
        ({"kind": "moodle", "secretSetting": "S", "contentWebUrlTemplate": "https://x.example/{course}"}, "{course}"),
        ({"kind": "moodle", "secretSetting": "S", "contentWebUrlTemplate": "/course/{id}"}, "absolute http"),
        ({"kind": "moodle", "secretSetting": "S", "defaultLanguageTag": "english!"}, "defaultLanguageTag"),
        (
            {"kind": "moodle", "secretSetting": "S", "externalIdPrefix": "a\u202eb"},
            "externalIdPrefix: must not contain bidi",
        ),
        ({"kind": "moodle", "secretSetting": "S", "hiddenAs": "archive"}, "hiddenAs: Input should be"),
        ({"kind": "eventgrid", "secretSetting": "S", "defaultLanguageTag": "en"}, "only for mapped data"),
        (
            {"kind": "eventgrid", "secretSetting": "S", "auth": {"scheme": "basic"}},
            "auth.scheme: Input should be 'query-key' or 'header-key'",
        ),
        ({"kind": "docebo", "secretSetting": "S", "auth": {"scheme": "standard-webhooks"}}, "auth"),
        ({"kind": "mapped", "secretSetting": "S"}, "mapping: Field required"),
        (
            {"kind": "mapped", "secretSetting": "S", "mapping": {**MAPPING, "externalId": "data.["}},
            "mapping.externalId.path: 'data.[' is not a JMESPath expression",
        ),
        (
            {"kind": "mapped", "secretSetting": "S", "mapping": {**MAPPING, "fields": {"titel": "x"}}},
            "mapping.fields: titel is not a learningContent property",
        ),
        (
            {
                "kind": "mapped",
                "secretSetting": "S",
                "mapping": {**MAPPING, "fields": {"title": {"path": "x", "convert": "htm"}}},
            },
            "mapping.fields.title.convert: Input should be 'text', 'html'",
        ),
        (
            {
                "kind": "mapped",
                "secretSetting": "S",
                "mapping": {**MAPPING, "fields": {"title": {"path": "x", "value": "y"}}},
            },
            "exactly one of 'path' or 'value'",
        ),
        (
            {"kind": "mapped", "secretSetting": "S", "mapping": {**MAPPING, "externalId": "/a~2b"}},
            "'~' not followed by 0 or 1",
        ),
        ({"kind": "mapped", "secretSetting": "S", "mapping": {**MAPPING, "actions": {}}}, "mapping.actions"),
        (
            {"kind": "mapped", "secretSetting": "S", "mapping": {**MAPPING, "actions": {"x": "archive"}}},
            "mapping.actions.x",
        ),
    ],
)
def test_bad_entries_say_where_and_what(entry: dict[str, Any], message: str) -> None:
    text = error(entry)
    assert text.startswith("source 'lms': ")
    assert message in text


def test_no_kind_takes_a_secret_inline() -> None:
    for kind, minimal in MINIMAL.items():
        for name in ("secret", "token", "key", "apiKey", "password"):
            assert "Extra inputs are not permitted" in error({"kind": kind, **minimal, name: "hunter2"})


def test_several_sources_of_different_kinds_in_one_document() -> None:
    sources = parse_sources(
        json.dumps(
            {
                "demo": {"registrationId": "reg-1", "secretSetting": "DEMO"},
                "canvas-prod": {
                    "kind": "canvas",
                    "registrationId": "reg-2",
                    "defaultLanguageTag": "en",
                    "rootAccountId": "7",
                },
                "moodle": {"kind": "moodle", "registrationId": "reg-2", "secretSetting": "MOODLE_TOKEN"},
            }
        )
    )
    assert {name: s.kind for name, s in sources.items()} == {
        "demo": "cloudevents",
        "canvas-prod": "canvas",
        "moodle": "moodle",
    }


def test_parsed_sources_are_a_fresh_dict_each_time() -> None:
    raw = json.dumps({"a": {"registrationId": "r", "secretSetting": "S"}})
    first = parse_sources(raw)
    first.clear()
    assert list(parse_sources(raw)) == ["a"]
