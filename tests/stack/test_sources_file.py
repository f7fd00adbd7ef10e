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
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import send_sample
from local.azurite import free_port
from local.sources_file import env_suffix
from tests import payloads
from tests.conftest import REPO
from tests.stack.test_make_dev import READY_TIMEOUT, StackProcess, eventually, graph_get
from vlsync.envfile import read as read_env_file

logger = logging.getLogger(__name__)
SAMPLE = "local/samples/sources.all-kinds.json"
KINDS = ("cloudevents", "canvas", "moodle", "openedx", "thinkific", "docebo", "eventgrid", "mapped")


def seed_lms(lms: str) -> None:
    """The LMS's own view of the thin courses; Canvas's name differs from the event's, so the stored
    title shows the worker asked the LMS."""
    send_sample.seed(lms)
    canvas = {**payloads.load("canvas/api_course"), "name": "Linear Algebra (from the API)"}
    httpx.put(f"{lms}/_lms/canvas/courses/21070000000000056", json=canvas, timeout=10).raise_for_status()


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
        env_file = tmp_path / "dev" / "stack.env"
        for name in sources:  # as a user tries a source: python -m local.send_sample NAME
            sent = subprocess.run(
                [sys.executable, "-m", "local.send_sample", name, "--no-seed", "--env-file", str(env_file)],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, (name, sent.stdout, sent.stderr)
            assert sent.stdout.startswith("202"), (name, sent.stdout)

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
    stack = StackProcess(tmp_path / "dev", ports, "--sources-file", str(bad))
    output = stack.proc.communicate(timeout=60)[0]
    assert stack.proc.returncode == 1, output
    # The app's own message (shared.settings), naming the source and what is missing.
    assert f"{bad}: source 'school': " in output
    assert "rootAccountUuid" in output
    assert "stack stopped" not in output  # refused before anything started, so nothing had to stop
    assert not (tmp_path / "dev" / "stack.env").exists()


def test_make_passes_sources_file_to_the_stack() -> None:
    dry = subprocess.run(
        ["make", "-n", "dev", f"SOURCES_FILE={SAMPLE}"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert f'-m local.stack --sources-file "{SAMPLE}"' in dry.stdout
    plain = subprocess.run(["make", "-n", "dev"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--sources-file" not in plain.stdout
