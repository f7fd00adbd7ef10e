"""``vlsync content …`` against the emulator, the identity endpoint and Azurite (the ledger)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.graph.conftest import CliSide
from tests.vlsync_runner import content_line, make_runner

HOSTILE_IDS = ["O'Brien/1", "100% + #2", "a b?c=d&e", 'say "hi"', "Ünïcødé курс 課程", "[draft] C#"]


def test_hostile_external_ids_round_trip_upsert_get_status_delete(cli_side: CliSide, tmp_path: Path) -> None:
    source = tmp_path / "hostile.ndjson"
    source.write_text("\n".join(content_line(i, level="beginner") for i in HOSTILE_IDS) + "\n", encoding="utf-8")

    result = cli_side.run("content", "upsert", str(source), "--concurrency", "3")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"upserted {len(HOSTILE_IDS)} item(s) into registration {cli_side.registration_id}" in result.stdout
    for external_id in HOSTILE_IDS:
        assert f"upserted {external_id} (id " in result.stdout

    for external_id in HOSTILE_IDS:
        item = cli_side.json("content", "get", external_id)
        assert item["externalId"] == external_id
        assert item["title"] == f"Course {external_id}"
        assert (
            cli_side.json("content", "get", "--id", item["id"], "--select", "externalId")["externalId"] == external_id
        )
        human = cli_side.run("content", "get", external_id)
        assert external_id in human.stdout  # printed as text, not as rich markup

        status = cli_side.json("content", "status", external_id)
        assert status["existsInGraph"] is True
        assert status["lastPush"]["pushedBy"] == "cli"
        assert status["lastPush"]["op"] == "upsert"
        pushed = datetime.fromisoformat(status["lastPush"]["pushedAt"])
        assert abs(pushed - datetime.now(UTC)) < timedelta(minutes=1)
        assert datetime.fromisoformat(status["searchableBy"]) == pushed + timedelta(hours=24)
        assert status["searchableByPassed"] is False

    listed = cli_side.json("content", "list")
    assert sorted(i["externalId"] for i in listed) == sorted(HOSTILE_IDS)

    for external_id in HOSTILE_IDS:
        deleted = cli_side.run("content", "delete", external_id)
        assert deleted.exit_code == 0, deleted.stderr
        assert f"deleted {external_id} from registration" in deleted.stdout
        assert cli_side.graph.get_content(external_id).status_code == 404
        status = cli_side.json("content", "status", external_id)
        assert status["existsInGraph"] is False
        assert status["lastPush"]["op"] == "delete"
        assert status["searchableBy"] is None

    again = cli_side.run("content", "delete", HOSTILE_IDS[0])
    assert again.exit_code == 0
    assert "nothing to delete" in again.stdout


def test_status_reads_as_a_table(cli_side: CliSide, tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(content_line("table-1"))
    assert cli_side.run("content", "upsert", str(tmp_path / "one.json")).exit_code == 0

    result = cli_side.run("content", "status", "table-1")
    assert result.exit_code == 0, result.stderr
    lines = {line.split(None, 1)[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "yes" in lines["in"]
    assert "upsert at" in result.stdout
    assert "by cli" in result.stdout
    assert "searchable by" in result.stdout
    assert "(not yet)" in result.stdout

    missing = cli_side.run("content", "status", "never-pushed")
    assert missing.exit_code == 0
    assert "none recorded" in missing.stdout


def test_status_without_storage_says_the_ledger_is_not_configured(cli_side: CliSide) -> None:
    env = {k: v for k, v in cli_side.env.items() if k != "LearningSyncStorage"}
    result = make_runner(env)("content", "status", "x")
    assert result.exit_code == 0, result.stderr
    assert "ledger not configured" in result.stdout


def test_invalid_input_reports_every_problem_and_sends_nothing(cli_side: CliSide, tmp_path: Path) -> None:
    source = tmp_path / "bad.ndjson"
    source.write_text(
        "\n".join(
            [
                content_line("ok-1"),
                content_line("bad-level", level="expert"),
                '{"externalId": "broken", ',
                content_line("bad-duration", duration="PDT1H", extra="nope"),
                json.dumps({"title": "no id"}),
                content_line("ok-1"),
            ]
        )
    )
    httpx_requests_before = len(cli_side.graph_requests())

    result = cli_side.run("content", "upsert", str(source))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "line 3" in result.stderr
    assert "invalid JSON" in result.stderr

    # Without the syntax error every field problem of every line is listed.
    lines = source.read_text().splitlines()
    source.write_text("\n".join(line for line in lines if "broken" not in line))
    result = cli_side.run("content", "upsert", str(source))
    assert result.exit_code == 1
    err = result.stderr
    assert "nothing was sent" in err
    assert "line 2: /level: must be one of beginner" in err
    assert "line 3: /duration: must be an ISO-8601 duration" in err
    assert "line 3: /extra:" in err
    assert "line 4: /externalId: Field required" in err
    assert "line 4: /contentWebUrl: Field required" in err
    assert "line 5: /externalId: 'ok-1' repeats line 1" in err
    assert [r for r in cli_side.graph_requests()[httpx_requests_before:] if r.get("method") == "PATCH"] == []
    assert cli_side.graph.get_content("ok-1").status_code == 404

    as_json = cli_side.run("--json", "content", "upsert", str(source))
    assert as_json.exit_code == 1
    problems = json.loads(as_json.stderr)["error"]["problems"]
    assert (problems[0]["where"], problems[0]["pointer"]) == ("line 2", "/level")
    assert len(problems) == 7


def test_json_array_and_stdin_and_read_only_properties(cli_side: CliSide) -> None:
    array = "[" + ",".join([content_line("arr-1"), content_line("arr-2")]) + "]"
    assert cli_side.json("content", "upsert", "-", input=array)["upserted"] == 2

    # `content get --json` output (id, @odata.context) can be edited and sent back.
    item = cli_side.json("content", "get", "arr-1")
    assert "id" in item
    item["title"] = "Edited"
    result = cli_side.json("content", "upsert", "-", input=json.dumps(item))
    assert result["upserted"] == 1
    assert cli_side.json("content", "get", "arr-1")["title"] == "Edited"


def test_throttling_is_waited_out_visibly(cli_side: CliSide, tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text(content_line("throttled-1"))
    cli_side.graph.script_faults([{"status": 429, "retryAfterSeconds": 1}])

    result = cli_side.run("content", "upsert", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.stderr
    assert "throttled by Graph: waiting 1s (retry 1)" in result.stderr
    assert cli_side.graph.get_content("throttled-1").status_code == 200


def test_graph_errors_show_code_message_and_request_id_not_a_traceback(cli_side: CliSide) -> None:
    result = cli_side.run("content", "get", "does-not-exist")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "Graph answered 404" in result.stderr
    assert "request-id" in result.stderr

    as_json = cli_side.run("--json", "content", "get", "does-not-exist")
    error = json.loads(as_json.stderr)["error"]
    assert error["status"] == 404
    assert error["code"]
    assert error["requestId"]

    wrong = cli_side.run("content", "list", "--registration-id", "not-a-registration")
    assert wrong.exit_code == 1
    assert "Graph answered 4" in wrong.stderr


def test_usage_errors_exit_2(cli_side: CliSide) -> None:
    no_registration = make_runner({k: v for k, v in cli_side.env.items() if k != "REGISTRATION_ID"})
    result = no_registration("content", "list")
    assert result.exit_code == 2
    assert "--registration-id" in result.stderr

    assert cli_side.run("content", "get").exit_code == 2  # neither EXTERNAL_ID nor --id
    assert cli_side.run("content", "get", "x", "--id", "y").exit_code == 2
    assert cli_side.run("--graph-version", "v2", "content", "list").exit_code == 2
    assert cli_side.run("content", "list", "--env-file", "/nonexistent/stack.env").exit_code == 2


def test_beta_and_shared_options_after_the_command(cli_side: CliSide, tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(content_line("beta-1"))
    assert cli_side.run("content", "upsert", str(tmp_path / "b.json"), "--graph-version", "beta").exit_code == 0
    item = json.loads(cli_side.run("content", "get", "beta-1", "--json", "--graph-version", "beta").stdout)
    assert item["externalId"] == "beta-1"
    assert any("/beta/" in r.get("path", "") for r in cli_side.graph_requests())


def test_a_missing_sign_in_is_reported_at_once_not_retried(cli_side: CliSide) -> None:
    started = time.monotonic()
    result = cli_side.run("content", "list", "--credential", "azure-cli")  # no `az` here
    assert result.exit_code == 1
    assert "could not get a token with --credential azure-cli" in result.stderr
    assert "az login" in result.stderr
    bad_header = make_runner({**cli_side.env, "IDENTITY_HEADER": "wrong"})
    for args in (["provider", "list"], ["content", "list"]):
        refused = bad_header(*args)
        assert refused.exit_code == 1, refused.stderr
        assert "could not get a token with --credential local" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert time.monotonic() - started < 15
