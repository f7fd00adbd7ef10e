"""``vlsync provider …`` against the emulator (delegated token from the identity endpoint) and Azurite."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from tests.conftest import TENANT_ID
from tests.graph.conftest import CliSide
from tests.queues import peek_json
from tests.vlsync_runner import content_line

LOGOS = [
    "--square-logo-light", "https://lms.example/sq-light.png",
    "--long-logo-light", "https://lms.example/long-light.png",
    "--square-logo-dark", "https://lms.example/sq-dark.png",
    "--long-logo-dark", "https://lms.example/long-dark.png",
]  # fmt: skip


def register(cli_side: CliSide, name: str, *extra: str) -> str:
    result = cli_side.run("provider", "register", "--display-name", name, *LOGOS, *extra, "--quiet")
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_register_get_list_update_delete(cli_side: CliSide) -> None:
    human = cli_side.run(
        "provider", "register", "--display-name", "Contoso Académie", *LOGOS,
        "--login-url", "https://lms.example/login", "--course-activity-sync",
    )  # fmt: skip
    assert human.exit_code == 0, human.stderr
    new_id = human.stdout.split("registrationId: ")[1].strip()

    got = cli_side.json("provider", "get", new_id)
    assert got["displayName"] == "Contoso Académie"
    assert got["loginWebUrl"] == "https://lms.example/login"
    assert got["isCourseActivitySyncEnabled"] is True
    assert got["longLogoWebUrlForDarkTheme"] == "https://lms.example/long-dark.png"
    assert set(cli_side.json("provider", "get", new_id, "--select", "displayName")) >= {"displayName"}

    listed = cli_side.json("provider", "list")
    assert {p["id"] for p in listed} == {new_id, cli_side.registration_id}
    table = cli_side.run("provider", "list")
    assert new_id in table.stdout
    assert "2 provider(s)" in table.stdout

    updated = cli_side.run(
        "provider", "update", new_id, "--display-name", "Contoso Academy", "--no-course-activity-sync"
    )
    assert updated.exit_code == 0, updated.stderr
    assert "updated provider" in updated.stdout
    assert "displayName" in updated.stdout
    got = cli_side.json("provider", "get", new_id)
    assert (got["displayName"], got["isCourseActivitySyncEnabled"]) == ("Contoso Academy", False)
    assert got["loginWebUrl"] == "https://lms.example/login"  # untouched
    assert cli_side.run("provider", "update", new_id).exit_code == 2  # nothing to change

    declined = cli_side.run("provider", "delete", new_id, input="n\n")
    assert declined.exit_code == 1
    assert "does not document" in declined.stderr
    assert cli_side.json("provider", "get", new_id)["id"] == new_id  # still there

    deleted = cli_side.run("provider", "delete", new_id, "--yes")
    assert deleted.exit_code == 0, deleted.stderr
    assert f"deleted provider {new_id}" in deleted.stdout
    assert "emulator deletes it" in deleted.stdout
    gone = cli_side.run("provider", "get", new_id)
    assert gone.exit_code == 1
    assert "Graph answered 404" in gone.stderr


def test_register_validates_before_sending(cli_side: CliSide) -> None:
    result = cli_side.run("provider", "register", "--display-name", "", *LOGOS)
    assert result.exit_code == 2
    assert "displayName" in result.stderr
    missing = cli_side.run("provider", "register", "--display-name", "X")
    assert missing.exit_code == 2


def test_provider_calls_use_a_delegated_token(cli_side: CliSide) -> None:
    cli_side.graph.identity.clear_requests()
    assert cli_side.run("provider", "list").exit_code == 0
    dev = cli_side.graph.identity.requests(path="/dev/token")
    assert dev
    assert dev[-1]["body"]["scopes"] == ["LearningProvider.ReadWrite"]
    # An app token is refused by Graph for provider calls: the error is Graph's, shown plainly.
    app = cli_side.run("provider", "list", "--credential", "managed-identity")
    assert app.exit_code == 1
    assert "Graph answered 403" in app.stderr or "Graph answered 401" in app.stderr


def _command(registration_id: str, external_id: str) -> str:
    return ContentCommand.model_validate(
        {
            "op": "upsert",
            "registrationId": registration_id,
            "externalId": external_id,
            "content": json.loads(content_line(external_id)),
            "source": "demo",
            "sourceEventId": f"evt-{external_id}",
            "eventTime": datetime.now(UTC),
            "correlationId": f"corr-{external_id}",
        }
    ).to_json()


def test_disable_holds_enable_releases_only_this_registrations_commands(cli_side: CliSide, tmp_path: Path) -> None:
    conn, queue = cli_side.env["LearningSyncStorage"], cli_side.env["CONTENT_QUEUE_NAME"]
    reg = cli_side.registration_id
    ledger_table = cli_side.env["LEDGER_TABLE_NAME"]

    disabled = cli_side.run("provider", "disable", reg)
    assert disabled.exit_code == 0, disabled.stderr
    assert f"registration {reg} disabled" in disabled.stdout
    assert f"{queue}-held" in disabled.stdout
    from azure.data.tables import TableServiceClient

    ledger = Ledger(
        TableServiceClient.from_connection_string(conn).get_table_client(ledger_table),
        tenant_id=TENANT_ID,
        state_cache_seconds=0,
    )
    assert ledger.registration_enabled(reg) is False

    # What the worker does with commands of a disabled registration: hold them (one of another registration too).
    from azure.storage.queue import QueueServiceClient

    port = StorageCommandQueue(
        QueueServiceClient.from_connection_string(conn), queue, f"{queue}-poison", f"{queue}-held"
    )
    port.hold(_command(reg, "held-1"))
    port.hold(_command(reg, "held-2"))
    port.hold(_command("other-registration", "held-other"))

    enabled = cli_side.json("provider", "enable", reg)
    assert {k: v for k, v in enabled.items() if k != "target"} == {
        "registrationId": reg,
        "enabled": True,
        "released": 2,
        "reactivated": None,
    }
    assert ledger.registration_enabled(reg) is True
    assert sorted(str(m["externalId"]) for m in peek_json(conn, queue)) == ["held-1", "held-2"]
    assert [m["externalId"] for m in peek_json(conn, f"{queue}-held")] == ["held-other"]

    human = cli_side.run("provider", "enable", reg)
    assert "released 0 held command(s)" in human.stdout


def test_deactivate_and_reactivate_content_keep_every_other_property(cli_side: CliSide, tmp_path: Path) -> None:
    reg = cli_side.registration_id
    source = tmp_path / "c.ndjson"
    source.write_text(
        "\n".join(
            [
                content_line("act-1", skillTags=["safety"], duration="PT45M", level="advanced"),
                content_line("act-2", description="Zwei", isPremium=True),
                content_line("act-3", isActive=False),
            ]
        )
    )
    assert cli_side.run("content", "upsert", str(source)).exit_code == 0
    before = {i["externalId"]: i for i in cli_side.json("content", "list")}

    disabled = cli_side.run("provider", "disable", reg, "--deactivate-content")
    assert disabled.exit_code == 0, disabled.stderr
    assert f"deactivated 2 item(s) of {reg}" in disabled.stdout
    after = {i["externalId"]: i for i in cli_side.json("content", "list")}
    assert all(item["isActive"] is False for item in after.values())
    for external_id, item in after.items():
        assert {**item, "isActive": None} == {**before[external_id], "isActive": None}

    enabled = cli_side.run("provider", "enable", reg, "--reactivate-content")
    assert enabled.exit_code == 0, enabled.stderr
    assert f"reactivated 2 item(s) of {reg}" in enabled.stdout
    again = {i["externalId"]: i for i in cli_side.json("content", "list")}
    # act-3 was inactive before the disable (the LMS retired it): it stays so.
    assert {k: item["isActive"] for k, item in again.items()} == {"act-1": True, "act-2": True, "act-3": False}
    assert again["act-1"]["skillTags"] == ["safety"]
    assert again["act-2"]["isPremium"] is True


def test_disable_needs_storage(cli_side: CliSide) -> None:
    from tests.vlsync_runner import make_runner

    env = {k: v for k, v in cli_side.env.items() if k != "LearningSyncStorage"}
    result = make_runner(env)("provider", "disable", cli_side.registration_id)
    assert result.exit_code == 2
    assert "--storage-connection-string" in result.stderr
