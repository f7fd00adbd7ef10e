"""The admin API: seeding rules, scripted faults, the request log, Canvas signing, health and the CLI."""

from __future__ import annotations

import subprocess
import sys

import httpx
import jwt
import pytest

from local.lms_emulator import RunningLms
from tests import payloads
from tests.conftest import REPO
from tests.lms_emulator.conftest import SECRET

CANVAS_URL = "/canvas/api/v1/courses/21070000000000056"
AUTH = {"Authorization": f"Bearer {SECRET}"}


def test_health(client: httpx.Client) -> None:
    assert client.get("/_lms/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/_lms/canvas/courses/1", {"id": 2, "name": "x"}, "id"),
        ("/_lms/canvas/courses/1", {"id": 1}, "name"),
        ("/_lms/moodle/courses/7", {"id": 7, "name": "not fullname"}, "fullname"),
        ("/_lms/blackboard/courses/1", {"id": 1, "name": "x"}, "platform"),
        ("/_lms/canvas/products/1", {"id": 1, "name": "x"}, "products"),
        ("/_lms/canvas/courses/1", [1, 2], "JSON object"),
    ],
)
def test_seeding_checks_the_vendor_key_fields(client: httpx.Client, path: str, body: object, fragment: str) -> None:
    answer = client.put(path, json=body)
    assert answer.status_code == 400
    assert fragment in answer.json()["error"]


def test_faults_answer_the_vendor_form_count_down_and_log(client: httpx.Client) -> None:
    client.put("/_lms/canvas/courses/21070000000000056", json=payloads.load("canvas/api_course"))
    assert (
        client.post("/_lms/faults", json={"platform": "canvas", "status": 503, "count": 2, "retryAfter": 7}).status_code
        == 204
    )
    first, second, third = (client.get(CANVAS_URL, headers=AUTH) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "7"
    assert "errors" in first.json()
    log = client.get("/_lms/requests").json()["value"]
    assert [(e["platform"], e["method"], e["path"], e["status"]) for e in log] == [
        ("canvas", "GET", CANVAS_URL, 503),
        ("canvas", "GET", CANVAS_URL, 503),
        ("canvas", "GET", CANVAS_URL, 200),
    ]
    assert all(e["at"].endswith("Z") for e in log)


def test_429_always_has_retry_after_and_faults_stay_on_their_platform(client: httpx.Client) -> None:
    assert client.post("/_lms/faults", json={"platform": "thinkific", "status": 429}).status_code == 204
    moodle = client.get("/moodle/webservice/rest/server.php", params={"wstoken": "x"})
    assert moodle.status_code == 200  # not faulted
    limited = client.get("/thinkific/api/public/v1/products/1", headers={"X-Auth-API-Key": SECRET})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {"error": "fault injected by the LMS emulator (429)"}


@pytest.mark.parametrize(
    "body",
    [
        {"platform": "canvas", "status": 200},
        {"platform": "nope", "status": 503},
        {"platform": "canvas", "status": 503, "count": 0},
        {"platform": "canvas", "status": 503, "retryAfter": -1},
    ],
)
def test_bad_faults_are_refused(client: httpx.Client, body: dict[str, object]) -> None:
    assert client.post("/_lms/faults", json=body).status_code == 400


def test_request_log_holds_no_secret_and_clears(client: httpx.Client) -> None:
    client.get("/moodle/webservice/rest/server.php", params={"wstoken": SECRET, "wsfunction": "x"})
    client.get(CANVAS_URL, params={"access_token": SECRET})
    log = client.get("/_lms/requests")
    assert SECRET not in log.text
    assert [e["path"] for e in log.json()["value"]] == ["/moodle/webservice/rest/server.php", CANVAS_URL]
    client.put("/_lms/canvas/courses/5", json={"id": 5, "name": "admin calls are not logged"})
    assert len(client.get("/_lms/requests").json()["value"]) == 2
    assert client.delete("/_lms/requests").status_code == 204
    assert client.get("/_lms/requests").json() == {"value": []}


def test_unknown_path_under_a_platform_root_is_a_vendor_404(client: httpx.Client) -> None:
    answer = client.get("/canvas/api/v1/users/self", headers=AUTH)
    assert answer.status_code == 404
    assert "errors" in answer.json()


def test_canvas_sign_and_jwks_verify(client: httpx.Client) -> None:
    claims = payloads.load("canvas/course_created")
    token = client.post("/_lms/canvas/sign", json=claims).json()["jwt"]
    keys = jwt.PyJWKSet.from_dict(client.get("/canvas/jwks").json())
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in keys.keys if k.key_id == kid]
    assert jwt.decode(token, key, algorithms=["RS256"]) == claims
    other = jwt.PyJWKSet.from_dict(payloads.canvas_keys().jwks())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other.keys[1].key, algorithms=["RS256"])


def test_cli_prints_the_listening_line_and_needs_a_secret(lms: RunningLms) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "local.lms_emulator", "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=30, env={"PATH": ""},
    )  # fmt: skip
    assert refused.returncode == 2
    assert "LMS_EMULATOR_SECRET" in refused.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.lms_emulator", "--port", "0", "--secret", "s", "--thinkific-subdomain", "zed"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("lms emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        answer = httpx.get(
            f"{url}/thinkific/api/public/v1/courses/1", headers={"X-Auth-API-Key": "s", "X-Auth-Subdomain": "zed"}
        )
        assert answer.status_code == 404  # authenticated with the CLI's subdomain, nothing seeded
    finally:
        proc.terminate()
        proc.wait(timeout=10)
