"""Canvas Live Events: RS256 JWTs verified against a (local) key set, and course events field by field."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from shared.lms.canvas import CanvasCourse, to_course
from shared.models import ContentCommand
from shared.problems import Problem
from shared.settings import CanvasSource, parse_sources
from shared.sources.canvas import STATES, CanvasAdapter, JwksCache, KeysUnavailable
from tests.payloads import CanvasKeys, canvas_keys, load, request

TEMPLATE = "https://oxana.instructure.com/courses/{id}"


def source(**options: Any) -> CanvasSource:
    entry = {
        "kind": "canvas",
        "registrationId": "reg-1",
        "jwksUrl": "https://keys.example/jwks",
        "rootAccountUuid": "VicYj3cu5BIFpoZhDVU4DZumnlBrWi1grgJEzADs",
        **options,
    }
    parsed = parse_sources(json.dumps({"canvas": entry}))["canvas"]
    assert isinstance(parsed, CanvasSource)
    return parsed


COMPLETE = source(contentWebUrlTemplate=TEMPLATE, defaultLanguageTag="en-US")


def deliver(body: Any, src: CanvasSource = COMPLETE, keys: JwksCache | None = None, **kw: Any) -> list[ContentCommand]:
    adapter = CanvasAdapter(keys or canvas_keys().cache())
    req = request(body, source="canvas", **kw)
    return adapter.parse(req, src, adapter.authenticate(req, src, None))


def rejected(body: Any, src: CanvasSource = COMPLETE, keys: JwksCache | None = None) -> Problem:
    with pytest.raises(Problem) as info:
        deliver(body, src, keys)
    return info.value


def signed(name: str = "canvas/course_created", **claims: Any) -> bytes:
    return canvas_keys().sign(load(name), **claims)


# -- authenticity ------------------------------------------------------------------------------------


def test_signed_course_created_becomes_an_upsert_field_by_field() -> None:
    [cmd] = deliver(signed())
    assert cmd.op == "upsert"
    assert cmd.registration_id == "reg-1"
    assert cmd.source == "canvas"
    assert cmd.external_id == "21070000000000056"  # a global id over 2**53 stays an exact string
    assert cmd.source_event_id == "course_created:21070000000000056:2024-09-02T13:38:00.218Z"
    assert cmd.event_time == datetime(2024, 9, 2, 13, 38, 0, 218000, tzinfo=UTC)
    assert cmd.correlation_id == "corr-1"
    assert cmd.content is not None
    assert cmd.content.to_graph() == {
        "externalId": "21070000000000056",
        "title": "Linear Algebra",
        "contentWebUrl": "https://oxana.instructure.com/courses/21070000000000056",
        "languageTag": "en-US",
        "createdDateTime": "2024-09-02T13:38:00.218Z",
        "lastModifiedDateTime": "2024-09-02T13:38:00.218Z",
    }


def test_numeric_ids_over_2_to_the_53_stay_exact() -> None:
    event = load("canvas/course_created")
    raw = json.dumps(event).replace('"course_id": "21070000000000056"', '"course_id": 21070000000000057')
    [cmd] = deliver(raw.encode(), source(acceptUnsigned=True, **_complete()))
    assert cmd.external_id == "21070000000000057"


def _complete() -> dict[str, str]:
    return {"contentWebUrlTemplate": TEMPLATE, "defaultLanguageTag": "en"}


def test_a_token_signed_by_another_key_under_a_known_kid_is_forged() -> None:
    impostor = CanvasKeys(kids=("2024-09",))
    problem = rejected(impostor.sign(load("canvas/course_created"), kid="2024-09"))
    assert problem.kind.slug == "signature-invalid"
    assert problem.kind.status == 401


def test_a_tampered_payload_does_not_verify() -> None:
    header, payload, signature = signed().split(b".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["body"]["name"] = "Changed in transit"
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode())
    problem = rejected(b".".join((header, forged, signature)))
    assert problem.kind.slug == "signature-invalid"


def test_an_expired_token_is_refused() -> None:
    problem = rejected(signed(exp=int(time.time()) - 3600))
    assert problem.kind.slug == "signature-expired"
    assert problem.kind.status == 401


def test_a_token_within_its_lifetime_passes() -> None:
    assert deliver(signed(exp=int(time.time()) + 300, iat=int(time.time())))


def test_max_token_age_refuses_an_old_iat_and_a_missing_one() -> None:
    strict = source(maxTokenAgeSeconds=600, **_complete())
    assert deliver(signed(iat=int(time.time()) - 60), strict)
    assert rejected(signed(iat=int(time.time()) - 3600), strict).kind.slug == "signature-expired"
    assert rejected(signed(), strict).kind.slug == "signature-invalid"


@pytest.mark.parametrize("algorithm", ["HS256", "none"])
def test_only_rs256_is_accepted(algorithm: str) -> None:
    key = "k" * 32 if algorithm == "HS256" else None
    token = jwt.encode(load("canvas/course_created"), key, algorithm=algorithm, headers={"kid": canvas_keys().current})
    problem = rejected(token.encode())
    assert problem.kind.slug == "signature-invalid"
    assert "RS256" in problem.detail


def test_a_token_without_kid_is_refused() -> None:
    keys = canvas_keys()
    token = jwt.encode(load("canvas/course_created"), keys.private[keys.current], algorithm="RS256")
    assert "kid" in rejected(token.encode()).detail


def test_garbage_is_neither_jwt_nor_json() -> None:
    assert rejected(b"not a token at all").kind.slug == "signature-invalid"


def test_unsigned_json_is_refused_unless_the_source_allows_it() -> None:
    problem = rejected(load("canvas/course_created"))
    assert problem.kind.slug == "signature-missing"
    assert "Sign Payload" in problem.detail
    [cmd] = deliver(load("canvas/course_created"), source(acceptUnsigned=True, **_complete()))
    assert cmd.external_id == "21070000000000056"


def test_a_source_that_allows_unsigned_still_verifies_a_jwt() -> None:
    impostor = CanvasKeys(kids=("2024-09",))
    problem = rejected(impostor.sign(load("canvas/course_created"), kid="2024-09"), source(acceptUnsigned=True))
    assert problem.kind.slug == "signature-invalid"


# -- the key set: cached, refetched on an unknown kid, throttled ----------------------------------------


class Rotating:
    """A key server whose set changes, counting reads."""

    def __init__(self, keys: CanvasKeys, kids: list[str]) -> None:
        self.keys, self.kids, self.reads = keys, kids, 0

    def __call__(self, url: str) -> Any:
        self.reads += 1
        return {"keys": [k for k in self.keys.jwks()["keys"] if k["kid"] in self.kids]}


def test_keys_are_cached_and_refetched_when_a_new_kid_appears() -> None:
    keys = canvas_keys()
    server = Rotating(keys, ["2024-08", "2024-09"])
    now = [1000.0]
    cache = JwksCache(server, clock=lambda: now[0])
    deliver(keys.sign(load("canvas/course_created"), kid="2024-09"), keys=cache)
    deliver(keys.sign(load("canvas/course_created"), kid="2024-08"), keys=cache)
    assert server.reads == 1  # cached
    server.kids.append("2024-10")  # the monthly rotation publishes the next key
    now[0] += 61
    deliver(keys.sign(load("canvas/course_created"), kid="2024-10"), keys=cache)
    assert server.reads == 2


def test_unknown_kids_cannot_make_us_hammer_the_key_server() -> None:
    keys = canvas_keys()
    server = Rotating(keys, ["2024-09"])
    now = [1000.0]
    cache = JwksCache(server, clock=lambda: now[0])
    deliver(keys.sign(load("canvas/course_created"), kid="2024-09"), keys=cache)
    for _ in range(5):
        # Within a minute of the last read: a key may have rotated in since, so "retry later" (503),
        # not "invalid" (401), and the key server is not asked again.
        problem = rejected(keys.sign(load("canvas/course_created"), kid="2024-10"), keys=cache)
        assert problem.kind.slug == "keys-unavailable"
        assert problem.headers["Retry-After"]
    assert server.reads == 1
    now[0] += 61
    problem = rejected(keys.sign(load("canvas/course_created"), kid="2024-10"), keys=cache)
    assert server.reads == 2
    assert problem.kind.slug == "signature-invalid"  # read anew, and still not there
    assert "2024-10" in problem.detail


def test_an_event_of_another_canvas_account_is_refused() -> None:
    other = load("canvas/course_created")
    other["metadata"]["root_account_uuid"] = "AnotherCustomersAccount"
    problem = rejected(canvas_keys().sign(other))
    assert problem.kind.slug == "credential-invalid"
    assert "root_account_uuid" in problem.detail


def test_a_workflow_state_that_is_not_a_string_is_a_400_not_a_crash() -> None:
    event = load("canvas/course_created")
    event["body"]["workflow_state"] = ["deleted"]
    problem = rejected(canvas_keys().sign(event))
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == ["/body/workflow_state"]


def test_an_undocumented_workflow_state_is_a_400_naming_the_field() -> None:
    event = load("canvas/course_created")
    event["body"]["workflow_state"] = "frozen"
    problem = rejected(canvas_keys().sign(event))
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == ["/body/workflow_state"]
    assert "'frozen' is not one of" in problem.errors[0].detail


@pytest.mark.parametrize("state", sorted(STATES))
def test_a_live_event_and_the_courses_api_agree_on_every_workflow_state(state: str) -> None:
    """One visibility rule: what an event with ``state`` makes of the item is what fetch-back makes of
    a Courses API answer with the same state."""
    [cmd] = deliver(canvas_keys().sign(live_event(workflow_state=state)))
    answer = CanvasCourse.model_validate({**load("canvas/api_course"), "workflow_state": state})
    fetched = to_course(answer, "https://oxana.instructure.com")
    assert (cmd.op == "delete") is fetched.deleted
    if cmd.op == "upsert":
        assert cmd.content is not None
        assert (cmd.content.is_active is not False) is fetched.fields["isActive"]


def test_an_unreadable_key_set_is_503_with_retry_after() -> None:
    def down(url: str) -> Any:
        raise KeysUnavailable("connection refused")

    problem = rejected(signed(), keys=JwksCache(down))
    assert problem.kind.slug == "keys-unavailable"
    assert problem.kind.status == 503
    assert problem.headers == {"Retry-After": "60"}


@pytest.mark.parametrize("document", [{"keys": []}, {"nokeys": 1}, [], {"keys": [{"kty": "EC", "kid": "x"}]}])
def test_a_key_set_without_rs256_keys_is_unavailable(document: Any) -> None:
    problem = rejected(signed(), keys=JwksCache(lambda url: document))
    assert problem.kind.slug == "keys-unavailable"


# -- course events -------------------------------------------------------------------------------------


def live_event(**body: Any) -> dict[str, Any]:
    event = load("canvas/course_created")
    event["body"].update(body)
    return event


@pytest.mark.parametrize(
    ("state", "op", "active"),
    [
        ("available", "upsert", None),  # published
        ("unpublished", "upsert", False),  # the Courses API's name for created and claimed
        ("created", "upsert", False),  # unpublished
        ("claimed", "upsert", False),  # unpublished
        ("completed", "upsert", False),  # concluded
        ("deleted", "delete", None),
    ],
)
def test_workflow_state_decides(state: str, op: str, active: bool | None) -> None:
    [cmd] = deliver(canvas_keys().sign(live_event(workflow_state=state)))
    assert cmd.op == op
    if op == "upsert":
        assert cmd.content is not None
        assert cmd.content.is_active is active
    else:
        assert cmd.content is None


def test_hidden_as_delete_turns_unpublished_into_a_delete() -> None:
    src = source(hiddenAs="delete", **_complete())
    [cmd] = deliver(canvas_keys().sign(live_event(workflow_state="claimed")), src)
    assert cmd.op == "delete"


def test_a_system_generated_update_with_offset_times() -> None:
    [cmd] = deliver(signed("canvas/course_updated_by_job"))
    assert cmd.event_time == datetime(2024, 9, 2, 18, 0, tzinfo=UTC)
    assert cmd.content is not None
    assert cmd.content.title == "Linear Algebra & Geometry"  # entities decoded
    assert cmd.content.last_modified_date_time == "2024-09-02T18:00:00Z"
    assert cmd.content.is_active is False  # claimed = unpublished


def test_external_id_prefix() -> None:
    [cmd] = deliver(signed(), source(externalIdPrefix="canvas-", **_complete()))
    assert cmd.external_id == "canvas-21070000000000056"
    assert cmd.content is not None
    assert cmd.content.content_web_url == "https://oxana.instructure.com/courses/21070000000000056"


def test_other_live_events_are_ignored() -> None:
    event = load("canvas/course_created")
    event["metadata"]["event_name"] = "enrollment_created"
    assert deliver(canvas_keys().sign(event)) == []


def test_a_thin_event_without_url_or_language_is_content_incomplete() -> None:
    problem = rejected(signed(), source())
    assert problem.kind.slug == "content-incomplete"
    assert problem.kind.status == 422
    assert [(e.pointer, e.detail.split(":")[0]) for e in problem.errors] == [
        ("/body", "contentWebUrl is required"),
        ("/body", "languageTag is required"),
    ]
    assert "contentWebUrlTemplate" in problem.errors[0].detail


def test_a_delete_needs_no_url_or_language() -> None:
    [cmd] = deliver(canvas_keys().sign(live_event(workflow_state="deleted")), source())
    assert cmd.op == "delete"


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"course_id": None}, "/body/course_id"),
        ({"course_id": True}, "/body/course_id"),
        ({"course_id": "a\u202eb"}, "/body/course_id"),
        ({"created_at": "last tuesday"}, "/body/created_at"),
    ],
)
def test_bad_values_are_pointed_at(change: dict[str, Any], pointer: str) -> None:
    problem = rejected(canvas_keys().sign(live_event(**change)))
    assert problem.kind.slug == "schema-violation"
    assert [e.pointer for e in problem.errors] == [pointer]


def test_a_bad_event_time_is_pointed_at() -> None:
    event = load("canvas/course_created")
    event["metadata"]["event_time"] = "soon"
    problem = rejected(canvas_keys().sign(event))
    assert [e.pointer for e in problem.errors] == ["/metadata/event_time"]


def test_an_event_from_the_future_is_refused() -> None:
    event = load("canvas/course_created")
    event["metadata"]["event_time"] = "2030-01-01T00:00:00Z"
    problem = rejected(canvas_keys().sign(event))
    assert "future" in problem.errors[0].detail
