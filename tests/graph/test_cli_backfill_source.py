"""``vlsync backfill --source NAME`` in-process against the Graph emulator, Azurite and the LMS emulator:
a Canvas catalog over several pages lands in Graph as fetch-back maps it, and a second run resumes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.graph.conftest import CliSide
from tests.vlsync_runner import make_runner

LMS_SECRET = "lms-backfill-secret-1"
COURSES = 25  # with --page-size 10: three pages


@pytest.fixture(scope="module")
def lms() -> Iterator[Any]:
    from local.lms_emulator import run_in_thread

    with run_in_thread(secret=LMS_SECRET) as running:
        yield running


def canvas_course(n: int) -> dict[str, Any]:
    return {
        "id": 7000 + n,
        "name": f"Course &amp; {n}",
        "workflow_state": "available" if n != 5 else "unpublished",
        "public_description": f"<p>About <b>course</b> {n}</p>",
        "locale": "en-GB",
        "image_download_url": f"https://canvas.example/img/{n}.png",
        "created_at": "2025-03-04T05:06:07-02:00",
    }


@pytest.fixture
def cli(cli_side: CliSide, lms: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliSide]:
    admin = f"{lms.url}/_lms"
    for n in range(1, COURSES + 1):
        httpx.put(f"{admin}/canvas/courses/{7000 + n}", json=canvas_course(n), timeout=10).raise_for_status()
    sources = {
        "lms": {
            "kind": "canvas",
            "registrationId": cli_side.registration_id,
            "rootAccountId": "1",
            "jwksUrl": f"{lms.url}/canvas/jwks",
            "apiBaseUrl": lms.root("canvas"),
            "apiSecretSetting": "LMS_CANVAS_TOKEN",
            "externalIdPrefix": "cv-",
        }
    }
    env = {**cli_side.env, "SOURCES": json.dumps(sources), "LMS_CANVAS_TOKEN": LMS_SECRET}
    monkeypatch.chdir(tmp_path)  # the checkpoint goes to the working directory
    yield CliSide(cli_side.graph, env, make_runner(env))
    for n in range(1, COURSES + 1):
        httpx.delete(f"{admin}/canvas/courses/{7000 + n}", timeout=10).raise_for_status()


def content_writes(cli: CliSide) -> int:
    return sum(1 for r in cli.graph_requests() if r["method"] == "PATCH" and "learningContents" in r["path"])


def test_a_canvas_catalog_is_backfilled_page_by_page_and_a_second_run_resends_nothing(
    cli: CliSide, lms: Any, tmp_path: Path
) -> None:
    httpx.delete(f"{lms.url}/_lms/requests", timeout=10).raise_for_status()

    first = cli.json("backfill", "--source", "lms", "--page-size", "10")

    assert first["pushed"] == COURSES
    assert first["source"] == {"name": "lms", "listed": COURSES, "pages": 3, "skippedHidden": 0, "skippedDeleted": 0}
    pages = [r for r in httpx.get(f"{lms.url}/_lms/requests", timeout=10).json()["value"] if r["platform"] == "canvas"]
    assert [r["path"] for r in pages] == ["/canvas/api/v1/accounts/1/courses"] * 3
    assert (tmp_path / "source-lms.checkpoint.json").exists()
    items = {item["externalId"]: item for item in cli.json("content", "list")}
    assert {f"cv-{7000 + n}" for n in range(1, COURSES + 1)} <= set(items)
    one = items["cv-7001"]
    assert {k: one.get(k) for k in ("title", "description", "languageTag", "thumbnailWebUrl", "contentWebUrl")} == {
        "title": "Course & 1",
        "description": "About course 1",
        "languageTag": "en-GB",
        "thumbnailWebUrl": "https://canvas.example/img/1.png",
        "contentWebUrl": f"{lms.root('canvas')}/courses/7001",
    }
    assert one["createdDateTime"] == "2025-03-04T07:06:07Z"
    assert one.get("isActive", True) is True
    assert items["cv-7005"]["isActive"] is False  # unpublished: hiddenAs inactive (the default)

    httpx.delete(f"{cli.graph.url}/_emulator/requests", timeout=10).raise_for_status()
    second = cli.json("backfill", "--source", "lms", "--page-size", "10")

    assert second["pushed"] == 0
    assert second["skippedStale"] == COURSES, "listed again, judged by the ledger: pushed before at the same time"
    assert content_writes(cli) == 0

    # A course added before the others moves every position of the list: none may be taken as done.
    admin = f"{lms.url}/_lms/canvas/courses/7000"
    httpx.put(admin, json={**canvas_course(1), "id": 7000, "name": "Added first"}, timeout=10).raise_for_status()
    try:
        third = cli.json("backfill", "--source", "lms", "--page-size", "10")
    finally:
        httpx.delete(admin, timeout=10).raise_for_status()
    assert (third["pushed"], third["skippedStale"]) == (1, COURSES)
    assert content_writes(cli) == 1
    assert next(i for i in cli.json("content", "list") if i["externalId"] == "cv-7000")["title"] == "Added first"


def test_file_and_source_together_are_a_usage_error(cli: CliSide, tmp_path: Path) -> None:
    catalog = tmp_path / "c.ndjson"
    catalog.write_text("", encoding="utf-8")
    result = cli.run("backfill", str(catalog), "--source", "lms")
    assert result.exit_code == 2
    assert "one of them" in result.stderr


def test_a_refused_lms_secret_stops_the_run_naming_the_setting(cli: CliSide) -> None:
    env = {**cli.env, "LMS_CANVAS_TOKEN": "not-the-token"}
    result = make_runner(env)("--json", "backfill", "--source", "lms")
    assert result.exit_code == 1
    assert "LMS_CANVAS_TOKEN" in result.stdout + result.stderr
    assert "not-the-token" not in result.stdout + result.stderr
