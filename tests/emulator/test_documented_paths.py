"""Every documented learning-provider and learning-content call, answered with its documented status.

The table is ``local/graph_metadata/learning-paths.derived.json`` (derived from the CSDL and the
Graph docs pages it cites). Course activities are the emulator's documented gap (501, see its README).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import ADMIN, APP_WRITE, CONTENT_BODY, PROVIDER_BODY, PROVIDERS

PATHS = Path(__file__).resolve().parents[2] / "local/graph_metadata/learning-paths.derived.json"
DOCUMENTED = [
    (method, entry["path"], spec["ok"])
    for entry in json.loads(PATHS.read_text())["paths"]
    for method, spec in entry["methods"].items()
    if "ok" in spec
]
CONTENT_CALLS = [call for call in DOCUMENTED if "learningCourseActivities" not in call[1]]
DELEGATED = ("learningProviders", "learningProviders/{learningProviderId}")


def bodies(method: str, path: str) -> dict[str, Any] | None:
    if method == "POST":
        return PROVIDER_BODY
    if method == "PATCH" and path.endswith("{learningProviderId}"):
        return {"displayName": "Renamed"}
    if method == "PATCH":
        return {**CONTENT_BODY, "externalId": "course-1"}
    return None


def test_the_table_covers_every_content_and_provider_method() -> None:
    calls = {(method, path) for method, path, _ in CONTENT_CALLS}
    assert len(calls) == 12
    assert ("DELETE", PROVIDERS[5:] + "/{learningProviderId}/learningContents(externalId='{externalId}')/$ref") in calls


@pytest.mark.parametrize(("method", "path", "status"), CONTENT_CALLS, ids=[f"{m} {p}" for m, p, _ in CONTENT_CALLS])
def test_documented_call_gets_its_documented_status(
    client: httpx.Client, provider_id: str, method: str, path: str, status: int
) -> None:
    created = client.patch(
        f"{PROVIDERS}/{provider_id}/learningContents(externalId='course-1')",
        json={**CONTENT_BODY, "externalId": "course-1"},
        headers=APP_WRITE,
    )
    assert created.status_code == 202, created.text
    content_id = client.get(
        f"{PROVIDERS}/{provider_id}/learningContents(externalId='course-1')", headers=APP_WRITE
    ).json()["id"]
    url = "/v1.0" + re.sub(
        r"\{(\w+)\}",
        lambda m: {"learningProviderId": provider_id, "learningContentId": content_id, "externalId": "course-1"}[
            m.group(1)
        ],
        path,
    )
    delegated = path.endswith(DELEGATED)
    response = client.request(method, url, json=bodies(method, path), headers=ADMIN if delegated else APP_WRITE)
    assert response.status_code == status, response.text


def test_course_activities_are_the_documented_gap(client: httpx.Client, provider_id: str) -> None:
    response = client.post(f"{PROVIDERS}/{provider_id}/learningCourseActivities", json={}, headers=APP_WRITE)
    assert response.status_code == 501
