"""`vlsync content list` returns every item of a 2,500-item registration, whatever the server's page size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.graph.conftest import app_sign_in_env
from tests.vlsync_runner import content_line, make_runner

TOTAL = 2500
PAGE_SIZE = 37  # small and odd: 68 pages, the last one partial


@pytest.fixture(scope="module")
def small_pages() -> Iterator[Any]:
    from local.graph_emulator import run_in_thread

    with run_in_thread(page_size=PAGE_SIZE) as emu:
        yield emu


def test_list_follows_next_link_through_2500_items(
    small_pages: Any, identity_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "GRAPH_BASE_URL": small_pages.url,
        **identity_server.env,
        **app_sign_in_env(identity_server),  # register through the app, push as the app
        "VLS_DEV_DIR": str(tmp_path / "none"),
    }
    vlsync = make_runner(env)
    registered = vlsync(
        "provider", "register", "--display-name", "Big catalog", "--quiet",
        "--square-logo-light", "https://lms.example/a.png", "--long-logo-light", "https://lms.example/b.png",
        "--square-logo-dark", "https://lms.example/c.png", "--long-logo-dark", "https://lms.example/d.png",
    )  # fmt: skip
    assert registered.exit_code == 0, registered.stderr
    registration = registered.stdout.strip()

    catalog = tmp_path / "catalog.ndjson"
    ids = [f"course-{n:05d}" for n in range(TOTAL)]
    catalog.write_text("\n".join(content_line(i) for i in ids) + "\n")
    seeded = vlsync(
        "--json", "content", "upsert", str(catalog), "--concurrency", "4", "--registration-id", registration
    )
    assert seeded.exit_code == 0, seeded.stderr
    assert json.loads(seeded.stdout)["upserted"] == TOTAL

    listed = vlsync("--json", "content", "list", "--registration-id", registration)
    assert listed.exit_code == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert len(items) == TOTAL
    assert sorted(i["externalId"] for i in items) == ids

    # A page-size hint larger than the server's, with $select: still every item, only the selected fields.
    hint = ["--top", "500", "--select", "externalId,title"]
    selected = json.loads(vlsync("--json", "content", "list", *hint, "--registration-id", registration).stdout)
    assert len(selected) == TOTAL
    assert set(selected[0]) <= {"externalId", "title", "id", "@odata.etag"}

    pages = [r for r in small_pages.requests.records() if r.method == "GET" and "/learningContents?" in r.path + "?"]
    assert len(pages) >= 2 * -(-TOTAL // PAGE_SIZE)  # every page was fetched, twice

    table = vlsync("content", "list", "--registration-id", registration, "--select", "externalId")
    assert f"{TOTAL} item(s) in registration {registration}" in table.stdout
