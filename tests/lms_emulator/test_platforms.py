"""Each platform's documented path, authentication, answer and error forms, over real HTTP."""

from __future__ import annotations

import urllib.parse
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import payloads
from tests.lms_emulator.conftest import SECRET

CANVAS_ID = "21070000000000056"
OPENEDX_KEY = "course-v1:edX+DemoX+Demo_Course"


def seed(client: httpx.Client, platform: str, course: dict[str, Any], collection: str = "courses") -> None:
    answer = client.put(f"/_lms/{platform}/{collection}/{course['id']}", json=course)
    assert answer.status_code == 204, answer.text


def openedx_token(client: httpx.Client, secret: str = SECRET, client_id: str = "vlsync-dev") -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "token_type": "jwt"}
    return client.post("/openedx/oauth2/access_token", data=form)


# -- Canvas ------------------------------------------------------------------------------------------


def test_canvas_answers_the_seeded_course_with_asked_includes(client: httpx.Client) -> None:
    course = payloads.load("canvas/api_course")
    seed(client, "canvas", course)
    auth = {"Authorization": f"Bearer {SECRET}"}
    full = client.get(
        f"/canvas/api/v1/courses/{CANVAS_ID}",
        params=[("include[]", "public_description"), ("include[]", "course_image"), ("include[]", "syllabus_body")],
        headers=auth,
    )
    assert full.status_code == 200
    assert full.json() == course
    assert full.json()["id"] == 21070000000000056  # exact beyond 2^53
    plain = client.get(f"/canvas/api/v1/courses/{CANVAS_ID}", headers=auth).json()
    assert "public_description" not in plain
    assert "image_download_url" not in plain
    assert "syllabus_body" not in plain
    assert plain["name"] == "Linear Algebra"
    by_query = client.get(f"/canvas/api/v1/courses/{CANVAS_ID}", params={"access_token": SECRET})
    assert by_query.status_code == 200


def test_canvas_string_ids(client: httpx.Client) -> None:
    seed(client, "canvas", payloads.load("canvas/api_course"))
    answer = client.get(
        f"/canvas/api/v1/courses/{CANVAS_ID}",
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json+canvas-string-ids"},
    ).json()
    assert answer["id"] == CANVAS_ID
    assert answer["root_account_id"] == "21070000000000001"
    assert answer["sis_course_id"] is None  # only integers become strings


def test_canvas_refuses_and_misses_in_its_own_form(client: httpx.Client) -> None:
    seed(client, "canvas", payloads.load("canvas/api_course"))
    wrong = client.get(f"/canvas/api/v1/courses/{CANVAS_ID}", headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"errors": [{"message": "Invalid access token."}]})
    missing = client.get(f"/canvas/api/v1/courses/{CANVAS_ID}")
    assert missing.status_code == 401
    assert missing.json()["errors"][0]["message"] == "user authorization required"
    unknown = client.get("/canvas/api/v1/courses/404404", headers={"Authorization": f"Bearer {SECRET}"})
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"errors": [{"message": "The specified resource does not exist."}]},
    )


def test_canvas_delete_then_not_found(client: httpx.Client) -> None:
    seed(client, "canvas", payloads.load("canvas/api_course"))
    assert client.delete(f"/_lms/canvas/courses/{CANVAS_ID}").status_code == 204
    gone = client.get(f"/canvas/api/v1/courses/{CANVAS_ID}", headers={"Authorization": f"Bearer {SECRET}"})
    assert gone.status_code == 404


# -- Moodle ------------------------------------------------------------------------------------------


def moodle_params(token: str = SECRET, **extra: str) -> dict[str, str]:
    return {
        "wstoken": token,
        "wsfunction": "core_course_get_courses_by_field",
        "moodlewsrestformat": "json",
        "field": "id",
        "value": "7",
        **extra,
    }


def test_moodle_get_and_post_answer_the_course(client: httpx.Client) -> None:
    course = payloads.load("moodle/api_course")
    seed(client, "moodle", course)
    by_get = client.get("/moodle/webservice/rest/server.php", params=moodle_params())
    by_post = client.post("/moodle/webservice/rest/server.php", data=moodle_params())
    assert by_get.status_code == by_post.status_code == 200
    assert by_get.json() == by_post.json() == {"courses": [course], "warnings": []}


def test_moodle_missing_course_is_an_empty_list(client: httpx.Client) -> None:
    answer = client.get("/moodle/webservice/rest/server.php", params=moodle_params(value="999"))
    assert answer.json() == {"courses": [], "warnings": []}


def test_moodle_wrong_token_is_200_with_an_exception(client: httpx.Client) -> None:
    answer = client.get("/moodle/webservice/rest/server.php", params=moodle_params(token="wrong"))
    assert answer.status_code == 200
    assert answer.json() == {
        "exception": "moodle_exception",
        "errorcode": "invalidtoken",
        "message": "Invalid token - token not found",
    }


def test_moodle_other_function_and_bad_parameters(client: httpx.Client) -> None:
    other = client.get("/moodle/webservice/rest/server.php", params=moodle_params(wsfunction="core_user_get_users"))
    assert other.json()["exception"] == "dml_missing_record_exception"
    no_value = client.get("/moodle/webservice/rest/server.php", params=moodle_params(value=""))
    assert no_value.json()["errorcode"] == "invalidparameter"


# -- Open edX ----------------------------------------------------------------------------------------


def test_openedx_token_then_course_detail(client: httpx.Client) -> None:
    course = payloads.load("openedx/api_course")
    seed(client, "openedx", course)
    token = openedx_token(client)
    assert token.status_code == 200
    body = token.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "JWT"
    assert body["expires_in"] == 3600
    for scheme in ("JWT", "Bearer"):
        detail = client.get(
            f"/openedx/api/courses/v1/courses/{OPENEDX_KEY}/",
            headers={"Authorization": f"{scheme} {body['access_token']}"},
        )
        assert detail.status_code == 200
        assert detail.json() == course


def test_openedx_refusals_in_drf_and_oauth_forms(client: httpx.Client) -> None:
    assert openedx_token(client, secret="wrong").json() == {"error": "invalid_client"}
    assert openedx_token(client, secret="wrong").status_code == 401
    assert openedx_token(client, client_id="someone-else").status_code == 401
    grant = client.post("/openedx/oauth2/access_token", data={"grant_type": "password"})
    assert (grant.status_code, grant.json()) == (400, {"error": "unsupported_grant_type"})
    url = f"/openedx/api/courses/v1/courses/{OPENEDX_KEY}/"
    none = client.get(url)
    assert (none.status_code, none.json()) == (401, {"detail": "Authentication credentials were not provided."})
    forged = client.get(url, headers={"Authorization": "JWT forged"})
    assert forged.status_code == 401
    assert "detail" in forged.json()
    token = openedx_token(client).json()["access_token"]
    missing = client.get(
        "/openedx/api/courses/v1/courses/course-v1:edX+Nope+2024/", headers={"Authorization": f"JWT {token}"}
    )
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not found."})


course_keys = st.builds(
    lambda org, num, run, legacy: f"{org}/{num}/{run}" if legacy else f"course-v1:{org}+{num}+{run}",
    # "." and ".." alone are dot segments, which every URL client removes (RFC 3986 section 5.2.4)
    *(st.text(alphabet="abcXYZ019_-.", min_size=1, max_size=8).filter(lambda p: p.strip(".")) for _ in range(3)),
    st.booleans(),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=course_keys)
def test_openedx_course_keys_with_colon_plus_and_slash_round_trip(client: httpx.Client, key: str) -> None:
    course = {**payloads.load("openedx/api_course"), "id": key, "course_id": key}
    assert client.put(f"/_lms/openedx/courses/{key}", json=course).status_code == 204
    token = openedx_token(client).json()["access_token"]
    # A client may percent-encode the key's reserved characters; both forms name the course.
    for form in (key, urllib.parse.quote(key, safe="/")):
        answer = client.get(f"/openedx/api/courses/v1/courses/{form}/", headers={"Authorization": f"JWT {token}"})
        assert answer.status_code == 200, (form, answer.text)
        assert answer.json()["id"] == key


# -- Thinkific ---------------------------------------------------------------------------------------


def thinkific_headers(key: str = SECRET, subdomain: str = "acme") -> dict[str, str]:
    return {"X-Auth-API-Key": key, "X-Auth-Subdomain": subdomain, "Content-Type": "application/json"}


def test_thinkific_product_and_course(client: httpx.Client) -> None:
    product, course = payloads.load("thinkific/api_product"), payloads.load("thinkific/api_course")
    seed(client, "thinkific", product, "products")
    seed(client, "thinkific", course)
    assert client.get("/thinkific/api/public/v1/products/990", headers=thinkific_headers()).json() == product
    assert client.get("/thinkific/api/public/v1/courses/123", headers=thinkific_headers()).json() == course
    # One id space per collection: course 990 is not product 990.
    assert client.get("/thinkific/api/public/v1/courses/990", headers=thinkific_headers()).status_code == 404


@pytest.mark.parametrize("headers", [thinkific_headers(key="wrong"), thinkific_headers(subdomain="other"), {}])
def test_thinkific_authentication_error(client: httpx.Client, headers: dict[str, str]) -> None:
    answer = client.get("/thinkific/api/public/v1/products/990", headers=headers)
    assert (answer.status_code, answer.json()) == (401, {"error": "Authentication Error"})


def test_thinkific_not_found(client: httpx.Client) -> None:
    answer = client.get("/thinkific/api/public/v1/products/424242", headers=thinkific_headers())
    assert answer.status_code == 404
    assert "error" in answer.json()
