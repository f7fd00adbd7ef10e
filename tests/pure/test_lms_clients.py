"""The fetch-back LMS clients against httpx.MockTransport: each vendor's documented request and answer
(local/samples/lms/<platform>/api_*.json), malformed answers, and how every HTTP failure is classified."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.graph import Deadline
from shared.lms import ApiSecret, LmsClient, LmsCourse, LmsPermanentError, LmsTransientError, retry_after
from shared.lms.canvas import CanvasClient
from shared.lms.moodle import MoodleClient
from shared.lms.openedx import OpenEdxClient, OpenEdxCourse, to_course
from shared.lms.thinkific import ThinkificClient
from tests.payloads import load

SECRET = ApiSecret("s3cret-value", "LMS_API_SECRET")
Handler = Callable[[httpx.Request], httpx.Response]


def http(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def deadline(seconds: float = 30.0) -> Deadline:
    return Deadline.after(seconds)


def canvas(handler: Handler) -> CanvasClient:
    return CanvasClient(http(handler), "https://school.instructure.com", SECRET)


def moodle(handler: Handler) -> MoodleClient:
    return MoodleClient(http(handler), "https://moodle.example.com", SECRET)


def thinkific(handler: Handler) -> ThinkificClient:
    return ThinkificClient(http(handler), "https://api.thinkific.com", "acme", SECRET)


def json_answer(body: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def recorder(calls: list[httpx.Request]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return json_answer({})

    return handler


# -- Canvas ------------------------------------------------------------------------------------------


async def test_canvas_documented_course_maps_field_by_field() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_answer(load("canvas/api_course"))

    course = await canvas(handler).course("21070000000000056", deadline=deadline())
    [request] = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v1/courses/21070000000000056"
    assert request.url.params.get_list("include[]") == ["public_description", "course_image"]
    assert request.headers["authorization"] == "Bearer s3cret-value"
    assert course == LmsCourse(
        fields={
            "title": "Linear Algebra",
            "isActive": True,
            "description": "Vectors, matrices &amp; <b>linear maps</b>, from first principles.",
            "languageTag": "en-GB",
            "thumbnailWebUrl": "https://oxana.instructure.com/images/thumbnails/21070000000000777/linear-algebra.png",
            "createdDateTime": "2024-09-02T13:38:00Z",
        },
        default_url="https://school.instructure.com/courses/21070000000000056",
    )


@pytest.mark.parametrize(
    ("state", "active"),
    [("unpublished", False), ("created", False), ("claimed", False), ("completed", False), ("available", True)],
)
async def test_canvas_workflow_state_sets_is_active(state: str, active: bool) -> None:
    body = {**load("canvas/api_course"), "workflow_state": state}
    course = await canvas(lambda r: json_answer(body)).course("1", deadline=deadline())
    assert course.fields["isActive"] is active
    assert not course.deleted


async def test_canvas_deleted_course_is_a_delete() -> None:
    body = {**load("canvas/api_course"), "workflow_state": "deleted"}
    assert (await canvas(lambda r: json_answer(body)).course("1", deadline=deadline())).deleted


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"id": 1, "workflow_state": "available"}, "name"),
        ({"id": 1, "name": 7, "workflow_state": "available"}, "name"),
        ({"id": 1, "name": "x", "workflow_state": "frozen"}, "workflow_state"),
        ([1, 2], "body"),
    ],
)
async def test_canvas_malformed_answer_is_permanent_and_named(body: Any, named: str) -> None:
    with pytest.raises(LmsPermanentError) as info:
        await canvas(lambda r: json_answer(body)).course("1", deadline=deadline())
    assert info.value.code == "invalid-response"
    assert named in info.value.message


async def test_canvas_non_json_answer_is_permanent() -> None:
    with pytest.raises(LmsPermanentError, match="not JSON"):
        await canvas(lambda r: httpx.Response(200, text="<html>login</html>")).course("1", deadline=deadline())


async def test_canvas_401_names_the_secret_setting_never_the_secret() -> None:
    answer = json_answer({"errors": [{"message": "Invalid access token."}]}, 401)
    with pytest.raises(LmsPermanentError) as info:
        await canvas(lambda r: answer).course("1", deadline=deadline())
    assert info.value.status == 401
    assert info.value.code == "unauthorized"
    assert "LMS_API_SECRET" in str(info.value)
    assert "s3cret-value" not in str(info.value)
    assert "Invalid access token." in str(info.value)


async def test_canvas_404_is_permanent_not_found() -> None:
    answer = json_answer({"errors": [{"message": "The specified resource does not exist."}]}, 404)
    with pytest.raises(LmsPermanentError) as info:
        await canvas(lambda r: answer).course("9", deadline=deadline())
    assert (info.value.status, info.value.code) == (404, "not-found")
    assert "course 9 does not exist in Canvas" in info.value.message


async def test_canvas_throttling_403_is_transient() -> None:
    answer = httpx.Response(403, text="403 Forbidden (Rate Limit Exceeded)")
    with pytest.raises(LmsTransientError) as info:
        await canvas(lambda r: answer).course("1", deadline=deadline())
    assert info.value.code == "throttled"


@pytest.mark.parametrize(
    ("status", "header", "wait"), [(429, "7", 7.0), (503, None, None), (500, "0", 0.0), (502, "x", None)]
)
async def test_429_and_5xx_are_transient_with_retry_after(status: int, header: str | None, wait: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    with pytest.raises(LmsTransientError) as info:
        await canvas(lambda r: httpx.Response(status, headers=headers)).course("1", deadline=deadline())
    assert info.value.status == status
    assert info.value.retry_after == wait


async def test_timeouts_and_transport_failures_are_transient() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler, code in ((timeout, "Timeout"), (refused, "Transport")):
        with pytest.raises(LmsTransientError) as info:
            await canvas(handler).course("1", deadline=deadline())
        assert info.value.code == code
        assert info.value.status is None


async def test_an_exhausted_deadline_calls_nothing() -> None:
    calls: list[httpx.Request] = []
    with pytest.raises(LmsTransientError, match="no time left"):
        await canvas(recorder(calls)).course("1", deadline=Deadline.after(0))
    assert not calls


async def test_other_4xx_is_permanent() -> None:
    with pytest.raises(LmsPermanentError) as info:
        await canvas(lambda r: json_answer({"errors": [{"message": "bad"}]}, 400)).course("1", deadline=deadline())
    assert info.value.code == "http-400"


def test_retry_after_reads_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(httpx.Response(429, headers={"Retry-After": later}), now) == 90.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "nan"})) is None


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_seconds_round_trip(seconds: int) -> None:
    assert retry_after(httpx.Response(429, headers={"Retry-After": str(seconds)})) == float(seconds)


# -- Moodle ------------------------------------------------------------------------------------------


def moodle_answer(body: Any) -> Handler:
    return lambda request: json_answer(body)


async def test_moodle_documented_course_maps_field_by_field() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_answer({"courses": [load("moodle/api_course")], "warnings": []})

    course = await moodle(handler).course("7", deadline=deadline())
    [request] = seen
    assert (request.method, request.url.path) == ("POST", "/webservice/rest/server.php")
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form == {
        "wstoken": "s3cret-value",
        "wsfunction": "core_course_get_courses_by_field",
        "moodlewsrestformat": "json",
        "field": "id",
        "value": "7",
    }
    assert "s3cret-value" not in str(request.url)  # the token stays out of the URL
    assert course.default_url == "https://moodle.example.com/course/view.php?id=7"
    assert course.fields == {
        "title": "Linear algebra",
        "description": "<p>Vectors, <b>matrices</b> &amp; maps.</p><p>Week&nbsp;1: intro</p>",
        "languageTag": "fr_ca",
        "isActive": True,
        "thumbnailWebUrl": "https://moodle.example.com/pluginfile.php/42/course/overviewfiles/algebra.png",
        "createdDateTime": datetime(2024, 9, 1, 16, 0, tzinfo=UTC),
        "lastModifiedDateTime": datetime(2024, 9, 2, 16, 0, tzinfo=UTC),
    }


@pytest.mark.parametrize("courseimage", [None, "data:image/svg+xml;base64,PHN2Zz4="])
async def test_moodle_overview_file_gives_the_public_image_url(courseimage: str | None) -> None:
    course = {**load("moodle/api_course"), "courseimage": courseimage}
    answer = await moodle(moodle_answer({"courses": [course], "warnings": []})).course("7", deadline=deadline())
    # The web-service form needs a token; the public pluginfile.php form does not.
    assert (
        answer.fields["thumbnailWebUrl"]
        == "https://moodle.example.com/pluginfile.php/42/course/overviewfiles/algebra.png"
    )
    course["courseimage"] = "https://moodle.example.com/pluginfile.php/42/course/overviewfiles/other.png"
    answer = await moodle(moodle_answer({"courses": [course], "warnings": []})).course("7", deadline=deadline())
    assert answer.fields["thumbnailWebUrl"].endswith("/other.png")


async def test_moodle_hidden_course_is_inactive() -> None:
    body = {"courses": [{**load("moodle/api_course"), "visible": 0}], "warnings": []}
    assert (await moodle(moodle_answer(body)).course("7", deadline=deadline())).fields["isActive"] is False


async def test_moodle_empty_courses_is_not_found() -> None:
    with pytest.raises(LmsPermanentError) as info:
        await moodle(moodle_answer({"courses": [], "warnings": []})).course("7", deadline=deadline())
    assert (info.value.status, info.value.code) == (404, "not-found")


async def test_moodle_invalid_token_at_http_200_is_permanent_and_names_the_setting() -> None:
    body = {"exception": "moodle_exception", "errorcode": "invalidtoken", "message": "Invalid token - token not found"}
    with pytest.raises(LmsPermanentError) as info:
        await moodle(moodle_answer(body)).course("7", deadline=deadline())
    assert info.value.code == "invalidtoken"
    assert "LMS_API_SECRET" in info.value.message
    assert "s3cret-value" not in str(info.value)


async def test_moodle_other_exception_is_permanent_with_its_code() -> None:
    body = {"exception": "invalid_parameter_exception", "errorcode": "invalidparameter", "message": "Invalid parameter"}
    with pytest.raises(LmsPermanentError) as info:
        await moodle(moodle_answer(body)).course("7", deadline=deadline())
    assert info.value.code == "invalidparameter"


@pytest.mark.parametrize(
    "body",
    [{"courses": [{"id": "7", "fullname": "x"}]}, {"courses": [{"id": 7}]}, {"warnings": []}, {"courses": "none"}],
)
async def test_moodle_malformed_answer_is_permanent(body: Any) -> None:
    with pytest.raises(LmsPermanentError) as info:
        await moodle(moodle_answer(body)).course("7", deadline=deadline())
    assert info.value.code == "invalid-response"


async def test_moodle_refuses_a_non_numeric_id_without_calling() -> None:
    calls: list[httpx.Request] = []
    with pytest.raises(LmsPermanentError):
        await moodle(recorder(calls)).course("7 OR 1=1", deadline=deadline())
    assert not calls


# -- Open edX ----------------------------------------------------------------------------------------


class OpenEdx:
    """A scripted LMS: the token endpoint and the course detail, counting what was asked."""

    def __init__(self, course: Any | None = None, tokens: list[httpx.Response] | None = None) -> None:
        self.course = course if course is not None else load("openedx/api_course")
        self.tokens = tokens or []
        self.token_forms: list[dict[str, str]] = []
        self.course_calls: list[httpx.Request] = []
        self.course_answers: list[httpx.Response] = []
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/access_token":
            self.token_forms.append(dict(httpx.QueryParams(request.content.decode())))
            if self.tokens:
                return self.tokens.pop(0)
            self.issued += 1
            return json_answer(
                {"access_token": f"jwt-{self.issued}", "token_type": "JWT", "expires_in": 3600, "scope": "read"}
            )
        self.course_calls.append(request)
        if self.course_answers:
            return self.course_answers.pop(0)
        return json_answer(self.course)

    def client(self, clock: Callable[[], float] = lambda: 0.0) -> OpenEdxClient:
        return OpenEdxClient(http(self), "https://lms.example.com", "vlsync-dev", SECRET, clock=clock)


async def test_openedx_client_credentials_then_course_detail() -> None:
    lms = OpenEdx()
    course = await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert lms.token_forms == [
        {
            "grant_type": "client_credentials",
            "client_id": "vlsync-dev",
            "client_secret": "s3cret-value",
            "token_type": "jwt",
        }
    ]
    [request] = lms.course_calls
    assert request.url.raw_path == b"/api/courses/v1/courses/course-v1:edX+DemoX+Demo_Course/"
    assert request.headers["authorization"] == "JWT jwt-1"
    assert course.default_url == "https://lms.example.com/courses/course-v1:edX+DemoX+Demo_Course/about"
    assert course.fields == {
        "title": "Demonstration Course",
        "description": "An introduction to the <em>Open edX</em> platform.",
        "thumbnailWebUrl": "https://lms.example.com/asset-v1:edX+DemoX+Demo_Course+type@asset+block@images_course_image.jpg",
        "duration": timedelta(hours=2, minutes=30),
        "isActive": True,
    }


async def test_openedx_token_is_cached_until_shortly_before_expiry() -> None:
    lms, now = OpenEdx(), [0.0]
    client = lms.client(clock=lambda: now[0])
    await client.course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    now[0] = 3500.0  # within the token's hour, before the refresh margin
    await client.course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert lms.issued == 1
    now[0] = 3541.0  # less than a minute before expiry: a fresh token first
    await client.course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert lms.issued == 2
    assert lms.course_calls[-1].headers["authorization"] == "JWT jwt-2"


async def test_openedx_401_fetches_one_new_token_then_retries_once() -> None:
    lms = OpenEdx()
    lms.course_answers = [json_answer({"detail": "Token expired."}, 401)]
    course = await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert lms.issued == 2
    assert course.fields["title"] == "Demonstration Course"
    lms.course_answers = [json_answer({"detail": "nope"}, 401), json_answer({"detail": "nope"}, 401)]
    with pytest.raises(LmsPermanentError) as info:
        await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert info.value.status == 401
    assert "LMS_API_SECRET" in info.value.message


async def test_openedx_refused_client_credentials_name_the_setting() -> None:
    lms = OpenEdx(tokens=[json_answer({"error": "invalid_client"}, 401)])
    with pytest.raises(LmsPermanentError) as info:
        await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert info.value.code == "token-refused"
    assert "LMS_API_SECRET" in info.value.message
    assert "vlsync-dev" in info.value.message
    assert "invalid_client" in info.value.message
    assert "s3cret-value" not in str(info.value)
    assert not lms.course_calls


async def test_openedx_token_endpoint_503_is_transient() -> None:
    lms = OpenEdx(tokens=[httpx.Response(503, headers={"Retry-After": "3"})])
    with pytest.raises(LmsTransientError) as info:
        await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize("token", [{"token_type": "JWT", "expires_in": 10}, {"access_token": "t", "expires_in": -1}])
async def test_openedx_malformed_token_answer_is_permanent(token: dict[str, Any]) -> None:
    lms = OpenEdx(tokens=[json_answer(token)])
    with pytest.raises(LmsPermanentError, match=r"invalid|not a"):
        await lms.client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())


async def test_openedx_404_and_hidden_and_relative_image() -> None:
    lms = OpenEdx()
    lms.course_answers = [json_answer({"detail": "Not found."}, 404)]
    with pytest.raises(LmsPermanentError) as info:
        await lms.client().course("course-v1:edX+Gone+1", deadline=deadline())
    assert info.value.code == "not-found"
    body = load("openedx/api_course")
    body.update(
        hidden=True, media={"course_image": {"uri": "/asset-v1:x+type@asset+block@c.jpg"}}, short_description=""
    )
    course = await OpenEdx(course=body).client().course("course-v1:edX+DemoX+Demo_Course", deadline=deadline())
    assert course.fields["isActive"] is False
    assert course.fields["thumbnailWebUrl"] == "https://lms.example.com/asset-v1:x+type@asset+block@c.jpg"
    assert course.fields["description"].startswith("<section")  # the overview when there is no short one


async def test_openedx_legacy_keys_keep_their_slashes_in_the_path() -> None:
    lms = OpenEdx(course={**load("openedx/api_course"), "id": "edX/DemoX/2014"})
    await lms.client().course("edX/DemoX/2014", deadline=deadline())
    assert lms.course_calls[0].url.raw_path == b"/api/courses/v1/courses/edX/DemoX/2014/"


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        ("02:30", timedelta(hours=2, minutes=30)),
        ("1:05:10", timedelta(hours=1, minutes=5, seconds=10)),
        ("4 hours", None),
        (None, None),
    ],
)
def test_openedx_effort_becomes_a_duration_only_when_unambiguous(
    effort: str | None, expected: timedelta | None
) -> None:
    course = OpenEdxCourse.model_validate({**load("openedx/api_course"), "effort": effort})
    assert to_course(course, "https://lms.example.com").fields.get("duration") == expected


# -- Thinkific ---------------------------------------------------------------------------------------


def thinkific_site(product: dict[str, Any] | None = None, seen: list[httpx.Request] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path == "/api/public/v1/courses/123":
            return json_answer(load("thinkific/api_course"))
        if request.url.path == "/api/public/v1/products/990":
            return json_answer(product or load("thinkific/api_product"))
        return json_answer({"error": "Record not found"}, 404)

    return handler


async def test_thinkific_course_then_its_product() -> None:
    seen: list[httpx.Request] = []
    course = await thinkific(thinkific_site(seen=seen)).course("123", deadline=deadline())
    assert [r.url.path for r in seen] == ["/api/public/v1/courses/123", "/api/public/v1/products/990"]
    assert all(r.headers["x-auth-api-key"] == "s3cret-value" and r.headers["x-auth-subdomain"] == "acme" for r in seen)
    assert course == LmsCourse(
        fields={
            "title": "Intro to Widgets",
            "description": "<p>Build <em>widgets</em> that last.</p>",
            "thumbnailWebUrl": "https://cdn.thinkific.example/card.png",
            "createdDateTime": "2024-08-01T09:00:00Z",
            "isActive": True,
        },
        default_url="https://acme.thinkific.com/courses/intro-to-widgets",
        url_values={"slug": "intro-to-widgets"},
    )


@pytest.mark.parametrize(
    ("change", "active"), [({"status": "draft"}, False), ({"hidden": True}, False), ({"status": "presell"}, True)]
)
async def test_thinkific_product_status_and_hidden_set_is_active(change: dict[str, Any], active: bool) -> None:
    product = {**load("thinkific/api_product"), **change}
    course = await thinkific(thinkific_site(product)).course("123", deadline=deadline())
    assert course.fields["isActive"] is active


async def test_thinkific_401_names_the_setting_and_403_rate_limit_is_transient() -> None:
    with pytest.raises(LmsPermanentError) as info:
        await thinkific(lambda r: json_answer({"error": "Authentication Error"}, 401)).course(
            "123", deadline=deadline()
        )
    assert "LMS_API_SECRET" in info.value.message
    assert "Authentication Error" in info.value.message
    with pytest.raises(LmsTransientError):
        await thinkific(lambda r: httpx.Response(403, text="Rate Limit Exceeded")).course("123", deadline=deadline())


async def test_thinkific_missing_course_is_not_found() -> None:
    with pytest.raises(LmsPermanentError) as info:
        await thinkific(thinkific_site()).course("124", deadline=deadline())
    assert info.value.code == "not-found"
    assert "Record not found" in info.value.message


async def test_thinkific_malformed_course_is_permanent() -> None:
    with pytest.raises(LmsPermanentError, match="product_id"):
        await thinkific(lambda r: json_answer({"id": 123, "name": "x"})).course("123", deadline=deadline())


# -- every client ------------------------------------------------------------------------------------


async def test_no_client_follows_a_redirect_with_the_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "https://evil.example/steal"})

    clients: list[LmsClient] = [
        canvas(handler),
        moodle(handler),
        thinkific(handler),
        OpenEdx(tokens=[httpx.Response(302)]).client(),
    ]
    for client in clients:
        with pytest.raises(LmsPermanentError) as info:
            await client.course("7", deadline=deadline())
        assert info.value.status == 302, client.lms


def test_api_secret_repr_hides_the_value() -> None:
    assert "s3cret" not in repr(SECRET)
    assert "s3cret" not in json.dumps(str(SECRET.__repr__()))
