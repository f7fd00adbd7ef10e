"""Moodle (local_webhooks plugin): the token in the body, and core course events field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import MoodleSource, parse_sources
from shared.sources.moodle import MoodleAdapter
from tests.payloads import load, request

TOKEN = "moodle-service-token-1"


def source(**options: Any) -> MoodleSource:
    entry = {
        "kind": "moodle",
        "registrationId": "reg-1",
        "secretSetting": "MOODLE_TOKEN",
        "contentWebUrlTemplate": "https://moodle.example.com/course/view.php?id={id}",
        "defaultLanguageTag": "en",
        **options,
    }
    parsed = parse_sources(json.dumps({"moodle": entry}))["moodle"]
    assert isinstance(parsed, MoodleSource)
    return parsed


def deliver(body: Any, src: MoodleSource | None = None, secret: str = TOKEN) -> list[ContentCommand]:
    src = src or source()
    req = request(body, source="moodle")
    adapter = MoodleAdapter()
    return adapter.parse(req, src, adapter.authenticate(req, src, secret))


def rejected(body: Any, src: MoodleSource | None = None, secret: str = TOKEN) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, src, secret)
    return info.value


def created() -> dict[str, Any]:
    event = load("moodle/course_updated")
    event.update(eventname="\\core\\event\\course_created", action="created", crud="c")
    event["other"] = {"shortname": "ALG1", "fullname": "Linear algebra"}
    return event


# -- the token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""])
def test_a_missing_token_is_401(token: str | None) -> None:
    event = load("moodle/course_updated")
    event["token"] = token
    problem = rejected(event)
    assert problem.kind.slug == "credential-missing"
    assert problem.kind.status == 401


def test_a_wrong_token_is_401() -> None:
    event = load("moodle/course_updated")
    event["token"] = "moodle-service-token-2"
    assert rejected(event).kind.slug == "credential-invalid"


def test_a_tampered_token_of_another_length_is_401() -> None:
    event = load("moodle/course_updated")
    event["token"] = TOKEN + "x"
    assert rejected(event).kind.slug == "credential-invalid"


def test_tokens_rotate_space_separated() -> None:
    assert deliver(load("moodle/course_updated"), secret=f"old-token {TOKEN}")


def test_an_empty_secret_setting_is_the_operators_problem() -> None:
    assert rejected(load("moodle/course_updated"), secret="").kind.slug == "source-misconfigured"


def test_a_body_that_is_not_json_is_400_not_401() -> None:
    # The token sits inside the body: a body that does not decode cannot be authenticated.
    assert rejected(b"token=moodle-service-token-1").kind.slug == "bad-json"


# -- course events ---------------------------------------------------------------------------------


def test_course_updated_field_by_field() -> None:
    [cmd] = deliver(load("moodle/course_updated"))
    assert cmd.op == "upsert"
    assert cmd.external_id == "7"
    assert cmd.source_event_id == "\\core\\event\\course_updated:7:1725292800"
    assert cmd.event_time == datetime(2024, 9, 2, 16, 0, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.to_graph() == {
        "externalId": "7",
        "title": "Linear algebra",
        "contentWebUrl": "https://moodle.example.com/course/view.php?id=7",
        "languageTag": "fr-CA",  # Moodle's fr_ca
        "description": "Vectors, matrices & maps.\n\nWeek 1: intro",  # HTML to text, script gone
        "lastModifiedDateTime": "2024-09-02T16:00:00Z",
    }


def test_course_created_takes_the_name_and_the_defaults() -> None:
    [cmd] = deliver(created())
    assert cmd.content is not None
    assert cmd.content.title == "Linear algebra"
    assert cmd.content.language_tag == "en"
    assert cmd.content.created_date_time == "2024-09-02T16:00:00Z"
    assert cmd.content.description is None


@pytest.mark.parametrize(("visible", "active"), [("0", False), (0, False), ("1", None), (1, None)])
def test_visible_zero_hides_the_course(visible: object, active: bool | None) -> None:
    event = load("moodle/course_updated")
    event["other"]["updatedfields"] = {"visible": visible}
    [cmd] = deliver(event)
    assert cmd.op == "upsert"
    assert cmd.content is not None
    assert cmd.content.is_active is active


def test_hidden_as_delete() -> None:
    event = load("moodle/course_updated")
    event["other"]["updatedfields"] = {"visible": "0"}
    [cmd] = deliver(event, source(hiddenAs="delete"))
    assert cmd.op == "delete"


def test_course_deleted() -> None:
    [cmd] = deliver(load("moodle/course_deleted"))
    assert cmd.op == "delete"
    assert cmd.external_id == "7"
    assert cmd.content is None
    assert cmd.event_time == datetime(2024, 9, 3, 16, 0, tzinfo=UTC)


def test_integer_ids_and_a_prefix() -> None:
    event = load("moodle/course_deleted")
    event["objectid"] = 7
    [cmd] = deliver(event, source(externalIdPrefix="moodle-"))
    assert cmd.external_id == "moodle-7"


def test_other_events_are_ignored() -> None:
    event = load("moodle/course_updated")
    event["eventname"] = "\\core\\event\\course_viewed"
    assert deliver(event) == []


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"timecreated": "yesterday"}, "/timecreated"),
        ({"objectid": None, "courseid": None}, "/courseid"),
        ({"objectid": {"id": 7}}, "/objectid"),
    ],
)
def test_bad_values_are_pointed_at(change: dict[str, Any], pointer: str) -> None:
    event = load("moodle/course_updated")
    event.update(change)
    problem = rejected(event)
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == [pointer]


def test_a_bad_language_is_pointed_at() -> None:
    event = load("moodle/course_updated")
    event["other"]["updatedfields"]["lang"] = "français"
    problem = rejected(event)
    assert [e.pointer for e in problem.errors] == ["/other/updatedfields/lang"]


def test_without_template_and_language_the_thin_event_is_incomplete() -> None:
    bare = parse_sources(json.dumps({"m": {"kind": "moodle", "registrationId": "r", "secretSetting": "T"}}))["m"]
    assert isinstance(bare, MoodleSource)
    problem = rejected(created(), bare)
    assert problem.kind.slug == "content-incomplete"
    assert [e.detail.split(":")[0] for e in problem.errors] == ["contentWebUrl is required", "languageTag is required"]
