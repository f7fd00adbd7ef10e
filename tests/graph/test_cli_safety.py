"""``vlsync`` cannot hit the wrong target (issue 8): uncertain registrations are checked, not repeated;
provider commands sign in through the user's own app; dot-segment ids never reach a URL; local
settings never leak into a command aimed at real Graph; writes say what they touch; the CLI's ledger
writes take the worker's lease and Graph's clock; storage trouble is a failure, not a usage error.

Everything runs in-process against the Graph emulator (strict mode), the identity endpoint and Azurite.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from azure.data.tables import TableServiceClient

from local.tokens import DEFAULT_TENANT_ID
from shared.ledger import Ledger
from tests.conftest import APP_CLIENT_ID
from tests.graph.conftest import CliSide
from tests.vlsync_runner import content_line, make_runner

LOGOS = [
    "--square-logo-light", "https://lms.example/sq-light.png",
    "--long-logo-light", "https://lms.example/long-light.png",
    "--square-logo-dark", "https://lms.example/sq-dark.png",
    "--long-logo-dark", "https://lms.example/long-dark.png",
]  # fmt: skip
SOON = datetime.now(UTC) + timedelta(days=1)  # a worker's LMS event, newer than anything the CLI records
POST_PROVIDERS = {"methods": ["POST"], "pathContains": "learningProviders"}


def clear_log(cli_side: CliSide) -> None:
    cli_side.graph.admin("DELETE", "/requests").raise_for_status()


def sent(cli_side: CliSide, method: str | None = None) -> list[dict[str, Any]]:
    return [r for r in cli_side.graph_requests() if method is None or r["method"] == method]


def register(cli_side: CliSide, name: str) -> str:
    result = cli_side.run("provider", "register", "--display-name", name, *LOGOS, "--quiet")
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def ledger_of(cli_side: CliSide) -> Ledger:
    service = TableServiceClient.from_connection_string(cli_side.env["LearningSyncStorage"])
    table = service.get_table_client(cli_side.env["LEDGER_TABLE_NAME"])
    return Ledger(table, tenant_id=cli_side.env["VIVA_APP_TENANT_ID"], state_cache_seconds=0)


def ledger_row(cli_side: CliSide, external_id: str) -> dict[str, Any]:
    from shared.ledger import content_row_key, partition_key

    service = TableServiceClient.from_connection_string(cli_side.env["LearningSyncStorage"])
    table = service.get_table_client(cli_side.env["LEDGER_TABLE_NAME"])
    key = partition_key(cli_side.env["VIVA_APP_TENANT_ID"], cli_side.registration_id)
    return dict(table.get_entity(key, content_row_key(external_id)))


# -- 5. a registration POST that may have reached Graph is checked, not sent again ---------------------


def test_register_after_a_503_says_it_did_not_register_and_posts_once(cli_side: CliSide) -> None:
    cli_side.graph.script_faults([{"status": 503, "match": POST_PROVIDERS}])
    clear_log(cli_side)

    result = cli_side.run("provider", "register", "--display-name", "Once LMS", *LOGOS)

    assert result.exit_code == 1, result.stdout + result.stderr
    assert "Graph answered 503" in result.stderr
    assert "was not sent again" in result.stderr
    assert "No provider named 'Once LMS' exists: the registration did not succeed" in result.stderr
    assert len(sent(cli_side, "POST")) == 1
    assert [r["method"] for r in sent(cli_side)][-1] == "GET"  # it looked
    assert "Once LMS" not in {p["displayName"] for p in cli_side.json("provider", "list")}


def test_register_after_a_503_finds_the_provider_that_got_through(cli_side: CliSide) -> None:
    # As if the POST had been applied before the 503: a provider with the name exists.
    landed = register(cli_side, "Landed LMS")
    cli_side.graph.script_faults([{"status": 503, "match": POST_PROVIDERS}])
    clear_log(cli_side)

    result = cli_side.run("provider", "register", "--display-name", "Landed LMS", *LOGOS)

    assert result.exit_code == 1, result.stdout + result.stderr
    assert f"id {landed}: the registration probably succeeded" in result.stderr
    assert f"registrationId: {landed}" in result.stderr
    assert len(sent(cli_side, "POST")) == 1
    names = [p["displayName"] for p in cli_side.json("provider", "list")]
    assert names.count("Landed LMS") == 1

    cli_side.graph.script_faults([{"status": 503, "match": POST_PROVIDERS}])
    as_json = cli_side.run("--json", "provider", "register", "--display-name", "Landed LMS", *LOGOS)
    assert as_json.exit_code == 1
    error = json.loads(as_json.stderr.splitlines()[-1])["error"]  # after the target line
    assert (error["status"], error["matches"], error["displayName"]) == (503, [landed], "Landed LMS")


def test_register_after_a_503_lists_several_providers_of_that_name(cli_side: CliSide) -> None:
    first, second = register(cli_side, "Twin LMS"), register(cli_side, "Twin LMS")
    cli_side.graph.script_faults([{"status": 503, "match": POST_PROVIDERS}])
    clear_log(cli_side)

    result = cli_side.run("provider", "register", "--display-name", "Twin LMS", *LOGOS)

    assert result.exit_code == 1, result.stdout + result.stderr
    assert "2 providers are named 'Twin LMS'" in result.stderr
    assert f"registrationId: {first}" in result.stderr
    assert f"registrationId: {second}" in result.stderr
    assert len(sent(cli_side, "POST")) == 1


def test_deleting_an_unknown_provider_is_an_error(cli_side: CliSide) -> None:
    unknown = "0b0b0b0b-0000-4000-8000-00000000dead"
    clear_log(cli_side)

    result = cli_side.run("provider", "delete", unknown, "--yes")

    assert result.exit_code == 1, result.stdout
    assert f"no provider {unknown}" in result.stderr
    assert "deleted" not in result.stdout
    assert sent(cli_side, "DELETE") == []


# -- 6. provider commands sign in through the user's own app registration -----------------------------


def test_provider_commands_against_real_graph_need_your_app_registration(cli_side: CliSide) -> None:
    env = {k: v for k, v in cli_side.env.items() if k != "VIVA_APP_CLIENT_ID"}  # no app from azd
    real = make_runner({**env, "GRAPH_BASE_URL": "https://graph.microsoft.com"})
    for args in (["provider", "list"], ["provider", "register", "--display-name", "X", *LOGOS]):
        result = real(*args)
        assert result.exit_code == 2, (args, result.stderr)
        err = " ".join(result.stderr.split())
        assert "--credential browser needs the client id of the app to sign in through" in err
        assert "VIVA_APP_CLIENT_ID=$(azd env get-value VIVA_APP_CLIENT_ID)" in err
        assert "Allow public client flows" in err
        assert "delegated Microsoft Graph permission LearningProvider.ReadWrite" in err
        assert "--client-id <id> or VLSYNC_CLIENT_ID=<id>" in err


def test_a_403_to_a_delegated_call_names_the_registration_and_scope_needed(cli_side: CliSide) -> None:
    forbidden = {"status": 403, "match": {"methods": ["GET"], "pathContains": "learningProviders"}}
    cli_side.graph.script_faults([forbidden])
    result = cli_side.run("provider", "list")
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "Graph answered 403" in err
    assert "hint: provider calls need a delegated token with LearningProvider.ReadWrite" in err
    assert "--credential browser (or device-code) through the product's app" in err
    assert "public client" in err

    cli_side.graph.script_faults([forbidden])
    as_json = make_runner({**cli_side.env, "VLSYNC_CLIENT_ID": APP_CLIENT_ID})("--json", "provider", "get", "x")
    hint = json.loads(as_json.stderr)["error"]["hint"]
    assert "LearningProvider.ReadWrite" in hint


# -- 7. dot-segment ids never reach a URL; other ids are encoded, not normalised -----------------------


BAD_IDS = ["", ".", ".."]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_empty_and_dot_ids_are_usage_errors_and_send_nothing(cli_side: CliSide, bad: str, tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(content_line("fine-1"))
    reg = cli_side.registration_id
    commands = [
        ["provider", "get", bad],
        ["provider", "update", bad, "--display-name", "X"],
        ["provider", "delete", bad, "--yes"],
        ["provider", "disable", bad],
        ["provider", "enable", bad],
        ["content", "get", bad],
        ["content", "get", "--id", bad],
        ["content", "status", bad],
        ["content", "delete", bad],
        ["content", "delete", "--id", bad],
        ["content", "list", "--registration-id", bad],
        ["content", "upsert", str(tmp_path / "one.json"), "--registration-id", bad],
    ]
    clear_log(cli_side)
    for args in commands:
        result = cli_side.run(*args)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert "not an id" in result.stderr or "no registration id" in result.stderr, args
    assert sent(cli_side) == []
    assert ledger_of(cli_side).registration_enabled(reg) is True
    with_env = make_runner({**cli_side.env, "REGISTRATION_ID": ".."})("content", "list")
    assert with_env.exit_code == 2
    assert sent(cli_side) == []
    assert cli_side.json("provider", "get", reg)["id"] == reg  # the provider is untouched


def test_ids_holding_slashes_and_dots_are_encoded_not_normalised(cli_side: CliSide) -> None:
    reg = cli_side.registration_id
    clear_log(cli_side)
    for args in (
        ["content", "delete", "--id", "a/../b"],
        ["content", "get", "--id", "../x"],
        ["content", "get", "x/.."],
        ["provider", "get", "p/../.."],
    ):
        result = cli_side.run(*args)
        assert result.exit_code in (0, 1), (args, result.stderr)
    paths = [r["path"].split("?")[0] for r in sent(cli_side)]
    assert paths, "nothing was sent"
    for path in paths:
        segments = path.split("/")
        assert "." not in segments, path
        assert ".." not in segments, path

    def decoded(path: str) -> str:
        last = path.rsplit("/", 1)[-1]
        return unquote(unquote(last))  # once, or twice where Graph needs '/' double-encoded

    assert any(decoded(p) == "a/../b" for p in paths), paths
    assert any(decoded(p) == "../x" for p in paths), paths
    assert any(decoded(p) == "learningContents(externalId='x/..')" for p in paths), paths
    assert any(decoded(p) == "p/../.." for p in paths), paths
    assert cli_side.json("provider", "get", reg)["id"] == reg


# -- 8. no local settings against real Graph; plain http only on this machine; writes name their target --


def _stack_env(cli_side: CliSide, path: Path) -> Path:
    from vlsync import envfile

    path.mkdir(parents=True, exist_ok=True)
    keys = ("GRAPH_BASE_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REGISTRATION_ID", "LearningSyncStorage")
    return envfile.write(path / "stack.env", {k: cli_side.env[k] for k in keys})


def test_the_default_stack_env_is_ignored_entirely_for_real_graph(cli_side: CliSide, tmp_path: Path) -> None:
    stack_env = _stack_env(cli_side, tmp_path / "dev")
    reg = cli_side.registration_id
    local_only = {k: v for k, v in cli_side.env.items() if k not in ("LearningSyncStorage", "REGISTRATION_ID")}
    local_only = {k: v for k, v in local_only.items() if not k.startswith("IDENTITY_")}
    local_only["VLS_DEV_DIR"] = str(tmp_path / "dev")

    # The local stack's file serves the local stack...
    assert make_runner({k: v for k, v in local_only.items() if k != "GRAPH_BASE_URL"})("content", "list").exit_code == 0

    # ...but not a command aimed at real Graph: not its storage, not its registration, not its identity.
    real = make_runner({**local_only, "GRAPH_BASE_URL": "https://graph.microsoft.com"})
    disabled = real("provider", "disable", reg, "--settle-seconds", "0")
    assert disabled.exit_code == 2, disabled.stdout + disabled.stderr
    assert "no storage" in disabled.stderr
    notes = [line for line in disabled.stderr.splitlines() if "ignored" in line]
    assert len(notes) == 1
    assert str(stack_env) in notes[0]
    assert "graph.microsoft.com" in notes[0]
    assert ledger_of(cli_side).registration_enabled(reg) is True
    listed = real("content", "list")
    assert listed.exit_code == 2
    assert "no registration id" in listed.stderr

    # Named explicitly, the file is used, whatever Graph is.
    named = real("provider", "disable", reg, "--settle-seconds", "0", "--env-file", str(stack_env))
    assert named.exit_code == 0, named.stderr
    assert ledger_of(cli_side).registration_enabled(reg) is False


def test_plain_http_only_for_a_graph_on_this_machine(cli_side: CliSide) -> None:
    for url in ("http://graph.microsoft.com", "http://10.1.2.3:8080"):
        result = cli_side.run("content", "list", "--graph-base-url", url)
        assert result.exit_code == 2, url
        assert "plain http" in result.stderr
    assert cli_side.run("content", "list", "--graph-base-url", cli_side.env["GRAPH_BASE_URL"]).exit_code == 0


def test_every_write_command_names_its_target_first(cli_side: CliSide, tmp_path: Path) -> None:
    host = cli_side.env["GRAPH_BASE_URL"].removeprefix("http://")
    reg = cli_side.registration_id
    (tmp_path / "t.json").write_text(content_line("target-1"))
    new_id = register(cli_side, "Target LMS")
    writes: list[tuple[list[str], str, str | None, str | None]] = [
        # register records which app registered it in the ledger (issue 13), so it names the storage too
        (
            ["provider", "register", "--display-name", "Target LMS 2", *LOGOS],
            "new",
            DEFAULT_TENANT_ID,
            "devstoreaccount1",
        ),
        (["provider", "update", new_id, "--display-name", "Renamed"], new_id, DEFAULT_TENANT_ID, None),
        # storage-only writes name the tenant of their ledger rows (VIVA_APP_TENANT_ID)
        (["provider", "disable", reg], reg, DEFAULT_TENANT_ID, "devstoreaccount1"),
        (["provider", "enable", reg], reg, DEFAULT_TENANT_ID, "devstoreaccount1"),
        (["content", "upsert", str(tmp_path / "t.json")], reg, DEFAULT_TENANT_ID, "devstoreaccount1"),
        (["content", "delete", "target-1"], reg, DEFAULT_TENANT_ID, "devstoreaccount1"),
        (["provider", "delete", new_id, "--yes"], new_id, DEFAULT_TENANT_ID, None),
    ]
    for args, registration, tenant, account in writes:
        result = cli_side.run("--json", *args)
        assert result.exit_code == 0, (args, result.stderr)
        target = json.loads(result.stdout)["target"]
        assert target == {
            "graph": f"{host} (v1.0)",
            "tenant": tenant,
            "registrationId": registration,
            "storage": account,
        }, args
        line = next(line for line in result.stderr.splitlines() if line.startswith("target: "))
        assert f"Graph {host} (v1.0)" in line
        assert f"registration {registration}" in line
        assert (f"storage account {account}" if account else "no storage") in line
        assert (f"tenant {tenant}" if tenant else "tenant unknown") in line
    no_storage = make_runner({k: v for k, v in cli_side.env.items() if k != "LearningSyncStorage"})
    result = no_storage("content", "delete", "absent-1")
    assert result.exit_code == 0
    assert "no storage" in result.stderr.split("target: ", 1)[1].splitlines()[0]


# -- 9. reactivation shows what disable hid, not what the LMS retired -------------------------------


def test_reactivate_shows_only_what_disable_hid(cli_side: CliSide, tmp_path: Path) -> None:
    reg = cli_side.registration_id
    source = tmp_path / "c.ndjson"
    source.write_text(
        "\n".join([content_line("shown-1"), content_line("shown-2"), content_line("retired-1", isActive=False)])
    )
    assert cli_side.run("content", "upsert", str(source)).exit_code == 0

    disabled = cli_side.json("provider", "disable", reg, "--deactivate-content")
    assert disabled["deactivated"] == 2
    assert {ledger_row(cli_side, e).get("deactivatedBy") for e in ("shown-1", "shown-2")} == {"provider-disable"}
    assert not ledger_row(cli_side, "retired-1").get("deactivatedBy")

    enabled = cli_side.json("provider", "enable", reg, "--reactivate-content")
    assert enabled["reactivated"] == 2
    state = {i["externalId"]: i["isActive"] for i in cli_side.json("content", "list")}
    assert state == {"shown-1": True, "shown-2": True, "retired-1": False}  # the LMS's retirement stands
    assert not any(ledger_row(cli_side, e).get("deactivatedBy") for e in ("shown-1", "shown-2"))
    assert cli_side.json("provider", "enable", reg, "--reactivate-content")["reactivated"] == 0


def test_a_push_after_disable_decides_the_item_not_enable(cli_side: CliSide, tmp_path: Path) -> None:
    reg = cli_side.registration_id
    (tmp_path / "a.json").write_text(content_line("later-1"))
    assert cli_side.run("content", "upsert", str(tmp_path / "a.json")).exit_code == 0
    assert cli_side.json("provider", "disable", reg, "--deactivate-content")["deactivated"] == 1
    (tmp_path / "b.json").write_text(content_line("later-1", isActive=False))  # retired meanwhile
    assert cli_side.run("content", "upsert", str(tmp_path / "b.json")).exit_code == 0
    assert cli_side.json("provider", "enable", reg, "--reactivate-content")["reactivated"] == 0
    assert cli_side.json("content", "get", "later-1")["isActive"] is False


def test_disable_and_enable_wait_for_the_workers_lease(cli_side: CliSide, tmp_path: Path, monkeypatch: Any) -> None:
    from vlsync import operations

    monkeypatch.setattr(operations, "BUSY_ATTEMPTS", 2)
    monkeypatch.setattr(operations, "BUSY_WAIT_SECONDS", 0.05)
    reg = cli_side.registration_id
    source = tmp_path / "c.ndjson"
    source.write_text("\n".join([content_line("leased-1"), content_line("free-1")]))
    assert cli_side.run("content", "upsert", str(source)).exit_code == 0
    ledger = ledger_of(cli_side)
    assert ledger.claim(reg, "leased-1", SOON, "worker/msg-1", 300)  # a worker is pushing it

    disabled = cli_side.run("provider", "disable", reg, "--deactivate-content")
    assert disabled.exit_code == 1
    assert "leased-1" in disabled.stderr
    assert "ItemBusy" in disabled.stderr
    state = {i["externalId"]: i["isActive"] for i in cli_side.json("content", "list")}
    assert state == {"leased-1": True, "free-1": False}

    ledger.release(reg, "leased-1", "worker/msg-1")
    assert ledger.claim(reg, "free-1", SOON, "worker/msg-2", 300)
    enabled = cli_side.run("provider", "enable", reg, "--reactivate-content")
    assert enabled.exit_code == 1
    assert "free-1" in enabled.stderr
    assert cli_side.json("content", "get", "free-1")["isActive"] is False


# -- 10. CLI deletes are ordered like the worker's, on Graph's clock ---------------------------------


def test_delete_of_an_absent_item_records_a_tombstone(cli_side: CliSide) -> None:
    result = cli_side.run("content", "delete", "never-there")
    assert result.exit_code == 0, result.stderr
    assert "nothing to delete" in result.stdout
    status = cli_side.json("content", "status", "never-there")
    assert status["lastPush"]["op"] == "delete"
    assert status["lastPush"]["pushedBy"] == "cli"


def test_delete_waits_for_the_workers_lease(cli_side: CliSide, tmp_path: Path, monkeypatch: Any) -> None:
    from vlsync import operations

    monkeypatch.setattr(operations, "BUSY_ATTEMPTS", 2)
    monkeypatch.setattr(operations, "BUSY_WAIT_SECONDS", 0.05)
    (tmp_path / "a.json").write_text(content_line("busy-1"))
    assert cli_side.run("content", "upsert", str(tmp_path / "a.json")).exit_code == 0
    assert ledger_of(cli_side).claim(cli_side.registration_id, "busy-1", SOON, "worker/m", 300)
    clear_log(cli_side)

    result = cli_side.run("content", "delete", "busy-1")

    assert result.exit_code == 1
    assert "ledger:" in result.stderr
    assert "being pushed" in result.stderr
    assert sent(cli_side, "DELETE") == []
    assert cli_side.graph.get_content("busy-1").status_code == 200


def _skew(monkeypatch: Any, by: timedelta) -> None:
    from vlsync import operations

    class Skewed(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + by

    monkeypatch.setattr(operations, "datetime", Skewed)


def test_event_times_come_from_graphs_clock(cli_side: CliSide, tmp_path: Path, monkeypatch: Any) -> None:
    _skew(monkeypatch, timedelta(seconds=45))  # ahead, but within what is tolerated
    (tmp_path / "a.json").write_text(content_line("clock-1"))
    assert cli_side.run("content", "upsert", str(tmp_path / "a.json")).exit_code == 0
    assert cli_side.run("content", "delete", "clock-2").exit_code == 0
    for external_id in ("clock-1", "clock-2"):
        row = ledger_row(cli_side, external_id)
        assert abs(row["eventTime"] - datetime.now(UTC)) < timedelta(seconds=10), external_id
        assert abs(row["pushedAt"] - datetime.now(UTC)) < timedelta(seconds=10), external_id


@pytest.mark.parametrize("by", [timedelta(minutes=10), -timedelta(minutes=3)])
def test_a_clock_far_from_graphs_is_refused(cli_side: CliSide, tmp_path: Path, monkeypatch: Any, by: Any) -> None:
    _skew(monkeypatch, by)
    (tmp_path / "a.json").write_text(content_line("skewed-1"))
    clear_log(cli_side)
    for args in (["content", "upsert", str(tmp_path / "a.json")], ["content", "delete", "skewed-2"]):
        result = cli_side.run(*args)
        assert result.exit_code == 1, (args, result.stdout)
        assert "clock is" in result.stderr
        assert "Graph's" in result.stderr
        assert "nothing was changed" in result.stderr
    assert [r["method"] for r in sent(cli_side)] == ["GET", "GET"]  # only the time probes
    assert cli_side.json("content", "status", "skewed-1")["lastPush"] is None


# -- 11. storage trouble is a failure (exit 1), missing options a usage error (exit 2) ----------------


def test_a_broken_connection_string_is_a_storage_failure(cli_side: CliSide) -> None:
    broken = make_runner({**cli_side.env, "LearningSyncStorage": "DefaultEndpointsProtocol=http;AccountName"})
    for args in (
        ["content", "status", "x"],
        ["provider", "disable", cli_side.registration_id],
        ["content", "delete", "x"],
    ):
        result = broken(*args)
        assert result.exit_code == 1, (args, result.stderr)
        assert "Error: storage: " in result.stderr
        assert "Usage:" not in result.stderr
    missing = make_runner({k: v for k, v in cli_side.env.items() if k != "LearningSyncStorage"})
    assert missing("provider", "disable", cli_side.registration_id).exit_code == 2
