"""``make dev SOURCES_FILE=local/samples/sources.all-kinds.json``: one source of each kind, as a user runs it.

The stack starts with the sample document (inline secrets, no registrationId, the LMS emulator for
fetch-back and Canvas's key set), names every source's intake URL in ``.dev/stack.env``, and one
authentic delivery per kind goes through intake, the worker (and its fetch-back from the LMS
emulator, for the thin kinds) into the Graph emulator, checked field by field.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.azurite import free_port
from local.sources_file import env_suffix
from shared.signatures import sign
from tests import payloads
from tests.conftest import REPO
from tests.stack.test_make_dev import READY_TIMEOUT, StackProcess, eventually, graph_get
from vlsync.envfile import read as read_env_file

logger = logging.getLogger(__name__)
SAMPLE = "local/samples/sources.all-kinds.json"
KINDS = ("cloudevents", "canvas", "moodle", "openedx", "thinkific", "docebo", "eventgrid", "mapped")


def _standard_webhooks(body: bytes, secret: str) -> dict[str, str]:
    return sign(body, secret, webhook_id=f"msg_{time.time_ns()}", timestamp=int(time.time()))


def deliveries(env: dict[str, str]) -> dict[str, tuple[str, bytes, dict[str, str], dict[str, str]]]:
    """kind -> (source, body, headers, query): each signed or keyed as its platform does."""
    lms = env["LMS_EMULATOR_URL"]
    names = ("events", "moodle", "openedx", "thinkific", "docebo", "grid", "acme")
    secret = {name: env[f"SOURCE_{env_suffix(name)}_SECRET"] for name in names}
    ce = "application/cloudevents+json"
    events = (REPO / "local/samples/course-upserted.json").read_bytes()
    canvas_jwt = httpx.post(f"{lms}/_lms/canvas/sign", json=payloads.load("canvas/course_created"), timeout=10)
    canvas_jwt.raise_for_status()
    moodle = {**payloads.load("moodle/course_updated"), "token": secret["moodle"]}
    thinkific = payloads.raw(payloads.load("thinkific/product_updated"))
    acme = payloads.raw(payloads.load("mapped/acme_course_published"))
    return {
        "cloudevents": ("events", events, {**_standard_webhooks(events, secret["events"]), "content-type": ce}, {}),
        "canvas": ("canvas", canvas_jwt.json()["jwt"].encode(), {"content-type": "application/jwt"}, {}),
        "moodle": ("moodle", payloads.raw(moodle), {"content-type": "application/json"}, {}),
        "openedx": (
            "openedx",
            payloads.raw(payloads.load("openedx/plugin_catalog_info_changed")),
            {"content-type": "application/json"},
            {"key": secret["openedx"]},
        ),
        "thinkific": (
            "thinkific",
            thinkific,
            {**payloads.thinkific_headers(thinkific, secret["thinkific"]), "content-type": "application/json"},
            {},
        ),
        "docebo": (
            "docebo",
            payloads.raw(payloads.load("docebo/course_updated_grouped")),
            {"content-type": "application/json"},
            {"key": secret["docebo"]},
        ),
        "eventgrid": (
            "grid",
            payloads.raw(payloads.load("eventgrid/course_events")),
            {"content-type": "application/json", "aeg-event-type": "Notification"},
            {"key": secret["grid"]},
        ),
        "mapped": ("acme", acme, {**_standard_webhooks(acme, secret["acme"]), "content-type": ce}, {}),
    }


def seed_lms(lms: str) -> None:
    """The LMS's own view of the thin courses; Canvas's name differs from the event's, so the stored
    title shows the worker asked the LMS."""
    canvas = {**payloads.load("canvas/api_course"), "name": "Linear Algebra (from the API)"}
    seeds = [
        ("canvas/courses/21070000000000056", canvas),
        ("moodle/courses/7", payloads.load("moodle/api_course")),
        ("openedx/courses/course-v1:edX+DemoX+Demo_Course", payloads.load("openedx/api_course")),
        ("thinkific/courses/123", payloads.load("thinkific/api_course")),
        ("thinkific/products/990", payloads.load("thinkific/api_product")),
    ]
    for path, course in seeds:
        httpx.put(f"{lms}/_lms/{path}", json=course, timeout=10).raise_for_status()


# externalId -> the fields the Graph emulator must hold (languageTag compared case-insensitively).
EXPECTED: dict[str, dict[str, Any]] = {
    "demo-course-101": {"title": "Safety basics"},
    "21070000000000056": {
        "title": "Linear Algebra (from the API)",
        "description": "Vectors, matrices & linear maps, from first principles.",
        "languageTag": "en-GB",
        "thumbnailWebUrl": "https://oxana.instructure.com/images/thumbnails/21070000000000777/linear-algebra.png",
        "isActive": True,
    },
    "moodle-7": {
        "title": "Linear algebra",
        "languageTag": "fr-CA",
        "thumbnailWebUrl": "https://moodle.example.com/pluginfile.php/42/course/overviewfiles/algebra.png",
        "isActive": True,
    },
    "course-v1:edX+DemoX+Demo_Course": {
        "title": "Demonstration Course",
        "description": "An introduction to the Open edX platform.",
        "languageTag": "en",
        "duration": "PT2H30M",
        "isActive": True,
    },
    "123": {
        "title": "Intro to Widgets",
        "description": "Build widgets that last.",
        "languageTag": "en",
        "thumbnailWebUrl": "https://cdn.thinkific.example/card.png",
        "isActive": True,
    },
    "42": {
        "title": "Workplace safety",
        "description": "Stay safe.",
        "languageTag": "en-US",
        "contentWebUrl": "https://acme.docebosaas.com/learn/course/42",
    },
    "43": {"title": "Fire safety", "languageTag": "en"},
    "eg-101": {
        "title": "Event Grid course",
        "contentWebUrl": "https://lms.contoso.example/courses/eg-101",
        "languageTag": "en-US",
    },
    "acme-88123": {
        "title": "Negotiation basics",
        "description": "Win–win deals.",
        "contentWebUrl": "https://academy.acme.example/c/88123",
        "languageTag": "fr-CA",
        "duration": "PT1H35M",
        "createdDateTime": "2024-09-02T08:00:00Z",
        "skillTags": ["sales", "soft skills"],
        "sourceName": "Acme Academy",
    },
}


@pytest.fixture
def ports() -> dict[str, int]:
    names = ("host", "graph", "identity", "identity_tls", "lms", "blob", "queue", "table")
    return {name: free_port() for name in names}


def differences(stored: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    found = {}
    for field, want in expected.items():
        have = stored.get(field)
        same = str(have).lower() == want.lower() if field == "languageTag" else have == want
        if not same:
            found[field] = (have, want)
    return found


def test_make_dev_with_one_source_of_each_kind(tmp_path: Path, ports: dict[str, int]) -> None:
    stack = StackProcess(tmp_path / "dev", ports, "--sources-file", SAMPLE)
    try:
        seconds = stack.wait_ready()
        logger.warning("make dev SOURCES_FILE=%s ready in %.1f s (limit %s s)", SAMPLE, seconds, READY_TIMEOUT)
        print(f"ready in {seconds:.1f} s")
        env = read_env_file(tmp_path / "dev" / "stack.env")
        sources = json.loads(env["SOURCES"])
        assert sorted(s.get("kind", "cloudevents") for s in sources.values()) == sorted(KINDS)
        for name in sources:
            assert env[f"INTAKE_URL_{env_suffix(name)}"] == f"{env['INTAKE_URL']}/api/webhooks/{name}"
        assert all(s["registrationId"] == env["REGISTRATION_ID"] for s in sources.values())
        inline = [e["secret"] for e in json.loads((REPO / SAMPLE).read_text()).values() if "secret" in e]
        assert len(inline) == 7
        assert not [value for value in inline if value in env["SOURCES"]]  # setting names only, never a secret
        assert any(line.startswith("intake URLs: ") for line in stack.output)

        seed_lms(env["LMS_EMULATOR_URL"])
        for kind, (source, body, headers, query) in deliveries(env).items():
            url = env[f"INTAKE_URL_{env_suffix(source)}"]
            answer = httpx.post(url, content=body, headers=headers, params=query, timeout=30)
            assert answer.status_code == 202, (kind, answer.status_code, answer.text)

        def stored(external_id: str) -> dict[str, Any] | None:
            response = graph_get(env, external_id)
            return response.json() if response.status_code == 200 else None

        for external_id, expected in EXPECTED.items():
            assert eventually(lambda e=external_id: stored(e) is not None, timeout=60), (
                external_id,
                httpx.get(f"{env['LMS_EMULATOR_URL']}/_lms/requests", timeout=10).json(),
            )
            item = stored(external_id)
            assert item is not None
            assert differences(item, expected) == {}, external_id
        assert graph_get(env, "eg-102").status_code == 404  # the Event Grid delete

        # The thin kinds were completed from the LMS emulator, each by its documented call.
        log = httpx.get(f"{env['LMS_EMULATOR_URL']}/_lms/requests", timeout=10).json()["value"]
        called = {(e["platform"], e["path"], e["status"]) for e in log}
        assert ("canvas", "/canvas/api/v1/courses/21070000000000056", 200) in called
        assert ("moodle", "/moodle/webservice/rest/server.php", 200) in called
        assert ("openedx", "/openedx/oauth2/access_token", 200) in called
        assert ("openedx", "/openedx/api/courses/v1/courses/course-v1:edX+DemoX+Demo_Course/", 200) in called
        assert ("thinkific", "/thinkific/api/public/v1/courses/123", 200) in called
    finally:
        if stack.proc.poll() is None:
            assert stack.stop() == 0


def test_an_invalid_sources_file_stops_the_stack_before_it_starts(tmp_path: Path, ports: dict[str, int]) -> None:
    bad = tmp_path / "sources.json"
    bad.write_text(json.dumps({"school": {"kind": "canvas", "apiBaseUrl": "emulator"}}))
    started = time.monotonic()
    stack = StackProcess(tmp_path / "dev", ports, "--sources-file", str(bad))
    output = stack.proc.communicate(timeout=60)[0]
    assert stack.proc.returncode == 1, output
    # The app's own message (shared.settings), naming the source and what is missing.
    assert f"{bad}: source 'school': " in output
    assert "rootAccountUuid" in output
    assert time.monotonic() - started < 30  # nothing was started: no Azurite, no host
    assert not (tmp_path / "dev" / "stack.env").exists()


def test_make_passes_sources_file_to_the_stack() -> None:
    dry = subprocess.run(
        ["make", "-n", "dev", f"SOURCES_FILE={SAMPLE}"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert f'-m local.stack --sources-file "{SAMPLE}"' in dry.stdout
    plain = subprocess.run(["make", "-n", "dev"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--sources-file" not in plain.stdout
