"""CloudEvents parsing: the three HTTP modes, op mapping, externalId rules and error pointers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.problems import Problem
from shared.settings import SourceConfig
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import CloudEventsAdapter
from tests.webhooks import content, event

SOURCE = SourceConfig(registrationId="reg-1", secretSetting="S")
CE_HEADERS = {"ce_specversion": "1.0", "ce_source": "/s", "ce_type": "x.created"}
DELIVERY = Delivery("msg_1", datetime(2026, 11, 27, 9, 0, tzinfo=UTC))


def parse(body: Any, content_type: str = "application/cloudevents+json", **headers: str):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = WebhookRequest(
        source_name="demo",
        headers={"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}},
        body=raw,
        correlation_id="corr-1",
        received_at=datetime(2026, 11, 27, 9, 1, tzinfo=UTC),
    )
    return CloudEventsAdapter().parse(req, SOURCE, DELIVERY)


def problem_of(body: Any, content_type: str = "application/cloudevents+json", **headers: str) -> Problem:
    with pytest.raises(Problem) as info:
        parse(body, content_type, **headers)
    return info.value


def pointers(p: Problem) -> list[str | None]:
    return [e.pointer for e in p.errors]


@pytest.mark.parametrize(
    ("type_", "op"),
    [("x.course.created", "upsert"), ("x.updated", "upsert"), ("a.b.upserted", "upsert"), ("x.deleted", "delete")],
)
def test_type_suffix_maps_to_op(type_: str, op: str) -> None:
    [cmd] = parse(event(type_, content()))
    assert cmd.op == op
    assert cmd.registration_id == "reg-1"
    assert cmd.source == "demo"
    assert cmd.correlation_id == "corr-1"


def test_structured_upsert_carries_content_and_event_metadata() -> None:
    ev = event("x.created", content("c-9", level="advanced", duration="PT1H"))
    [cmd] = parse(ev)
    assert cmd.external_id == "c-9"
    assert cmd.source_event_id == ev["id"]
    assert cmd.event_time == datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.to_graph()["level"] == "advanced"


def test_external_id_falls_back_to_subject() -> None:
    data = content()
    del data["externalId"]
    [cmd] = parse(event("x.updated", data, subject="from-subject"))
    assert cmd.external_id == "from-subject"
    assert cmd.content is not None
    assert cmd.content.external_id == "from-subject"


def test_external_id_and_subject_must_agree() -> None:
    p = problem_of(event("x.updated", content("a"), subject="b"))
    assert pointers(p) == ["/data/externalId"]


def test_missing_external_id_everywhere() -> None:
    data = content()
    del data["externalId"]
    assert pointers(problem_of(event("x.updated", data))) == ["/data/externalId"]


def test_delete_needs_only_subject() -> None:
    [cmd] = parse(event("x.deleted", subject="gone-1"))
    assert (cmd.op, cmd.external_id, cmd.content) == ("delete", "gone-1", None)


def test_event_time_defaults_to_delivery_time() -> None:
    ev = event("x.deleted", subject="a")
    del ev["time"]
    [cmd] = parse(ev)
    assert cmd.event_time == DELIVERY.sent_at


def test_bad_level_is_reported_at_data_level() -> None:
    p = problem_of(event("x.updated", content(level="expert")))
    assert p.kind.slug == "schema-violation"
    assert pointers(p) == ["/data/level"]


def test_every_failing_field_is_reported() -> None:
    data = content(level="expert", duration="PDT1H", bogus=1, createdDateTime="2026-01-01T00:00:00")
    del data["title"]
    p = problem_of(event("x.updated", data))
    assert set(pointers(p)) == {"/data/level", "/data/duration", "/data/bogus", "/data/title", "/data/createdDateTime"}


def test_batch_mode_gives_one_command_per_event() -> None:
    batch = [event("x.created", content("a")), event("x.deleted", subject="b")]
    cmds = parse(batch, "application/cloudevents-batch+json")
    assert [(c.op, c.external_id) for c in cmds] == [("upsert", "a"), ("delete", "b")]


def test_batch_errors_point_into_the_array() -> None:
    p = problem_of(
        [event("x.created", content("a")), event("x.created", content("b", level="expert"))],
        "application/cloudevents-batch+json",
    )
    assert pointers(p) == ["/1/data/level"]


def test_empty_batch() -> None:
    assert problem_of([], "application/cloudevents-batch+json").kind.slug == "empty-batch"


def test_batch_must_be_an_array() -> None:
    assert problem_of(event(), "application/cloudevents-batch+json").kind.slug == "schema-violation"


def test_binary_mode_reads_ce_headers() -> None:
    [cmd] = parse(content("bin-1"), "application/json", **CE_HEADERS, ce_id="e1")
    assert (cmd.op, cmd.external_id, cmd.source_event_id) == ("upsert", "bin-1", "e1")


def test_binary_mode_errors_point_at_body_and_headers() -> None:
    p = problem_of(content(level="expert"), "application/json", **CE_HEADERS)
    assert {(e.pointer, e.header) for e in p.errors} == {(None, "ce-id")}
    p = problem_of(content(level="expert"), "application/json", **CE_HEADERS, ce_id="1")
    assert pointers(p) == ["/level"]


def test_binary_mode_requires_json_data() -> None:
    p = problem_of(b"<xml/>", "application/xml", **CE_HEADERS, ce_id="1")
    assert p.kind.slug == "unsupported-media-type"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_other_media_types_are_415(content_type: str) -> None:
    assert problem_of(event(), content_type).kind.status == 415


def test_plain_json_structured_event_is_accepted() -> None:
    assert len(parse(event("x.created", content()), "application/json")) == 1


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b""])
def test_malformed_json(body: bytes) -> None:
    assert problem_of(body).kind.slug == "bad-json"


@pytest.mark.parametrize(
    ("mutation", "pointer"),
    [
        ({"specversion": "0.3"}, "/specversion"),
        ({"id": ""}, "/id"),
        ({"type": "x.renamed"}, "/type"),
        ({"time": "yesterday"}, "/time"),
        ({"datacontenttype": "text/xml"}, "/datacontenttype"),
        ({"Bad-Name": 1}, "/Bad-Name"),
        ({"data": "a string"}, "/data"),
    ],
)
def test_context_attribute_errors(mutation: dict[str, Any], pointer: str) -> None:
    p = problem_of({**event("x.created", content()), **mutation})
    assert pointer in pointers(p)


def test_missing_required_attribute() -> None:
    ev = event("x.created", content())
    del ev["source"]
    assert pointers(problem_of(ev)) == ["/source"]


def test_extension_attributes_are_allowed() -> None:
    assert parse({**event("x.created", content()), "traceparent": "00-abc", "lmsrealm": "eu"})


@pytest.mark.parametrize(
    "external_id",
    ["a\nb", "x\x00y", "z" * 513, "c\x85x", "c\x9bx", "admin\u202etxt.exe", "a\u2066b\u2069", "x\u200fy"],
)
def test_hostile_external_ids_are_rejected(external_id: str) -> None:
    p = problem_of(event("x.created", content(external_id)))
    assert pointers(p) == ["/data/externalId"]


@pytest.mark.parametrize("external_id", ["O'Brien", "a/b", "c+d#e%f g", "Ünïcødé-курс"])
def test_awkward_but_legal_external_ids_pass(external_id: str) -> None:
    [cmd] = parse(event("x.created", content(external_id)))
    assert cmd.external_id == external_id


def test_pointer_escapes_slash_and_tilde() -> None:
    p = problem_of(event("x.created", content(**{"a/b~c": 1})))
    assert pointers(p) == ["/data/a~1b~0c"]


def test_binary_headers_are_percent_decoded() -> None:
    [cmd] = parse(
        {"title": "t", "contentWebUrl": "u", "languageTag": "en-us"},
        "application/json",
        **CE_HEADERS,
        ce_id="1",
        ce_subject="caf%C3%A9%20101",
    )
    assert cmd.external_id == "café 101"


def test_binary_header_with_bad_percent_encoding() -> None:
    p = problem_of(content(), "application/json", **CE_HEADERS, ce_id="%FF%FE")
    assert [e.header for e in p.errors] == ["ce-id"]


def test_event_time_far_in_the_future_is_refused() -> None:
    p = problem_of(event("x.created", content(), time="2999-01-01T00:00:00Z"))
    assert pointers(p) == ["/time"]


def test_python_field_names_are_not_graph_properties() -> None:
    data = content()
    data["content_web_url"] = data.pop("contentWebUrl")
    p = problem_of(event("x.created", data))
    assert set(pointers(p)) == {"/data/content_web_url", "/data/contentWebUrl"}


def test_control_characters_in_event_id_point_at_id() -> None:
    assert pointers(problem_of(event("x.created", content(), id="a\nb"))) == ["/id"]


@pytest.mark.parametrize("subject", ["a\x85b", "a\u202eb"])
def test_c1_controls_and_bidi_overrides_in_the_subject_point_at_subject(subject: str) -> None:
    data = {k: v for k, v in content().items() if k != "externalId"}
    assert pointers(problem_of(event("x.created", data, subject=subject))) == ["/subject"]


def test_bidi_marks_stay_legal_in_titles() -> None:
    [cmd] = parse(event("x.created", content(title="\u05e9\u05dc\u05d5\u05dd \u200f(101)")))
    assert cmd.content is not None
    assert cmd.content.title.endswith("(101)")


@pytest.mark.parametrize("time", ["1999-12-31T23:59:59Z", "1600-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"])
def test_event_times_before_2000_are_refused_with_a_pointer(time: str) -> None:
    p = problem_of(event("x.created", content(), time=time))
    assert pointers(p) == ["/time"]
    assert "2000-01-01" in p.errors[0].detail


@pytest.mark.parametrize(
    ("raw", "pointer"),
    [
        (b'{"specversion":"1.0","id":"1","source":"s","type":"x.created","data":{"externalId":"c","title":"t",'
         b'"contentWebUrl":"https://x.example/","languageTag":"en","description":"\\ud800"}}', "/data/description"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"x.created","data":{"externalId":"c","title":"t",'
         b'"contentWebUrl":"https://x.example/","languageTag":"en","skillTags":["ok","\\udfff"]}}',
         "/data/skillTags/1"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"x.created","\\ud800x":1}', "/\\ud800x"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_a_400_with_a_pointer_not_a_crash(raw: bytes, pointer: str) -> None:
    p = problem_of(raw)
    assert p.kind.slug == "schema-violation"
    assert pointers(p) == [pointer]
    json.dumps(p.errors[0].as_dict()).encode("utf-8")  # the answer itself stays encodable


def test_lone_surrogate_in_binary_mode_data_points_into_the_body() -> None:
    raw = b'{"title":"\\ud800","contentWebUrl":"https://x.example/","languageTag":"en"}'
    p = problem_of(raw, "application/json", **CE_HEADERS, ce_id="1", ce_subject="c")
    assert pointers(p) == ["/title"]


def test_huge_integer_is_bad_json_not_a_crash() -> None:
    assert problem_of(b'{"n": ' + b"9" * 5000 + b"}").kind.slug == "bad-json"


def test_batch_keeps_one_command_per_item_the_latest() -> None:
    batch = [
        event("x.updated", content("a", title="first"), time="2026-01-15T10:00:00Z"),
        event("x.deleted", subject="a", time="2026-01-15T10:00:00Z"),
        event("x.updated", content("b", title="newer"), time="2026-01-15T11:00:00Z"),
        event("x.updated", content("b", title="older"), time="2026-01-15T09:00:00Z"),
    ]
    cmds = parse(batch, "application/cloudevents-batch+json")
    assert [(c.op, c.external_id) for c in cmds] == [("delete", "a"), ("upsert", "b")]
    assert cmds[1].content is not None
    assert cmds[1].content.title == "newer"


def test_a_lone_surrogate_in_a_non_ascii_key_is_named_by_its_escape() -> None:
    p = problem_of(b'{"specversion":"1.0","caf\\u00e9\\ud800":1}')
    assert pointers(p) == ["/caf\u00e9\\ud800"]


def test_a_batch_keeps_per_item_the_command_the_ledger_would_let_win() -> None:
    """At equal times a delete wins over an upsert, then the larger event id, whatever the batch order
    (issue 9: the fault suite's `batched` run lost deletes to a later upsert of the same second)."""
    same = "2026-11-27T09:00:00Z"
    deleted = {**event("x.deleted", None, subject="c-1"), "id": "e-1", "time": same}
    deleted.pop("data", None)
    upserted = {**event("x.created", content("c-1")), "id": "e-2", "time": same}
    [kept] = parse([deleted, upserted], "application/cloudevents-batch+json")
    assert (kept.op, kept.source_event_id) == ("delete", "e-1")
    first = {**event("x.created", content("c-2", title="B")), "id": "e-b", "time": same}
    second = {**event("x.created", content("c-2", title="A")), "id": "e-a", "time": same}
    [kept] = parse([first, second], "application/cloudevents-batch+json")
    assert kept.source_event_id == "e-b"
