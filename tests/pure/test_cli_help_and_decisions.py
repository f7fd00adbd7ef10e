"""Every command's --help has an example; the pure decisions of the CLI (settings, input, status)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shared.ledger import LedgerEntry
from shared.settings import Settings
from vlsync import cli
from vlsync.config import ConfigError, load, resolve
from vlsync.credentials import dev_token_url, scope_for
from vlsync.io import InvalidInput, read_items
from vlsync.operations import belongs_to, replacement, status_view

TENANT = "00000000-0000-0000-0000-00000000a11c"


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


def test_every_command_has_help_with_an_example() -> None:
    paths = list(walk(cli))
    assert {
        ("provider", "register"), ("provider", "update"), ("provider", "disable"), ("provider", "enable"),
        ("provider", "get"), ("provider", "list"), ("provider", "delete"),
        ("content", "upsert"), ("content", "list"), ("content", "status"), ("content", "get"), ("content", "delete"),
    } <= set(paths)  # fmt: skip
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example:" in result.output, f"vlsync {' '.join(path)} --help has no example"
        example = result.output.split("Example:", 1)[1]
        assert "vlsync" in example, path
        assert "Usage: vlsync" in result.output


# -- settings -------------------------------------------------------------------------------------


def test_the_stack_ca_bundle_comes_from_the_env_file_too() -> None:
    """make dev's sign-in host has its own CA, named in stack.env: vlsync must trust it without the
    user sourcing the file (shared.credentials.tls_options reads only the process environment)."""
    file_values = {"GRAPH_BASE_URL": "http://127.0.0.1:1", "SSL_CERT_FILE": "/dev-dir/ca-bundle.pem"}
    assert resolve({}, {}, file_values).tls_options() == {"connection_verify": "/dev-dir/ca-bundle.pem"}
    # A machine-wide bundle in the environment lacks the stack's CA: the env file's wins.
    machine = {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    assert resolve({}, machine, file_values).tls_options() == {"connection_verify": "/dev-dir/ca-bundle.pem"}
    assert resolve({}, machine, {}).tls_options() == {"connection_verify": "/etc/ssl/certs/ca-certificates.crt"}
    assert resolve({}, {}, {}).tls_options() == {}


def test_the_stack_write_budget_comes_from_the_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """make dev's host spends from a local budget; vlsync against the stack must use the same one, not
    the production default of 1 write/s (the environment, which the app's Settings reads, still wins)."""
    from vlsync.storage import settings as storage_settings

    for name in ("GRAPH_WRITE_RATE_PER_SECOND", "GRAPH_WRITE_BURST", "GRAPH_WRITE_BLOCK_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    file_values = {
        "GRAPH_BASE_URL": "http://127.0.0.1:1",
        "LearningSyncStorage": "UseDevelopmentStorage=true",
        "GRAPH_WRITE_RATE_PER_SECOND": "1000",
        "GRAPH_WRITE_BURST": "1000",
        "GRAPH_WRITE_BLOCK_LIMIT": "0",
    }
    app = storage_settings(resolve({}, {}, file_values))
    assert (app.graph_write_rate_per_second, app.graph_write_burst, app.graph_write_block_limit) == (1000, 1000, 0)
    monkeypatch.setenv("GRAPH_WRITE_RATE_PER_SECOND", "5")
    app = storage_settings(resolve({}, {"GRAPH_WRITE_RATE_PER_SECOND": "5"}, file_values))
    assert app.graph_write_rate_per_second == 5


def test_option_beats_environment_beats_env_file_beats_default() -> None:
    file_values = {"GRAPH_BASE_URL": "http://127.0.0.1:1", "REGISTRATION_ID": "from-file", "IDENTITY_ENDPOINT": "e"}
    environ = {"REGISTRATION_ID": "from-env"}
    conf = resolve({"registration_id": None}, environ, file_values)
    assert (conf.graph_base_url, conf.registration_id) == ("http://127.0.0.1:1", "from-env")
    conf = resolve({"registration_id": "from-option"}, environ, file_values)
    assert conf.registration_id == "from-option"
    conf = resolve({}, {}, {})
    assert (conf.graph_base_url, conf.graph_version, conf.queue, conf.ledger_table) == (
        "https://graph.microsoft.com",
        "v1.0",
        "content-commands",
        "ledger",
    )
    assert conf.max_retry_seconds == 120


def test_credential_defaults_fit_each_call() -> None:
    local = resolve(
        {}, {}, {"GRAPH_BASE_URL": "http://127.0.0.1:7072", "IDENTITY_ENDPOINT": "http://127.0.0.1:7073/msi/token",
                 "IDENTITY_HEADER": "h"}
    )  # fmt: skip
    assert local.credential_for("provider") == local.credential_for("content") == "local"
    azure = resolve({}, {"IDENTITY_ENDPOINT": "http://127.0.0.1:41741/msi/token", "IDENTITY_HEADER": "h"}, {})
    # Real Graph: never the local token; provider calls sign in through the user's own app registration
    # (Azure CLI tokens lack LearningProvider.ReadWrite).
    assert azure.credential_for("provider") == "browser"
    assert azure.credential_for("content") == "default"
    chosen = resolve({"credential": "device-code"}, {}, {})
    assert chosen.credential_for("provider") == chosen.credential_for("content") == "device-code"
    assert scope_for("provider", "device-code") == "https://graph.microsoft.com/LearningProvider.ReadWrite"
    assert scope_for("provider", "azure-cli") == "https://graph.microsoft.com/.default"
    assert scope_for("content", "local") == "https://graph.microsoft.com/.default"
    assert dev_token_url("http://127.0.0.1:7073/msi/token") == "http://127.0.0.1:7073/dev/token"


def test_env_file_is_found_and_bad_values_are_usage_errors(tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "stack.env").write_text("export REGISTRATION_ID='reg-7'\n# comment\nGRAPH_BASE_URL=http://127.0.0.1:9/\n")
    conf = load({}, {"VLS_DEV_DIR": str(dev)}, tmp_path)
    assert (conf.registration_id, conf.graph_base_url) == ("reg-7", "http://127.0.0.1:9")
    assert load({}, {}, tmp_path).registration_id is None  # no ./.dev/stack.env: fine
    with pytest.raises(ConfigError):
        load({"env_file": str(tmp_path / "missing.env")}, {}, tmp_path)
    with pytest.raises(ConfigError):
        resolve({}, {"GRAPH_API_VERSION": "v2"}, {})
    with pytest.raises(ConfigError):
        resolve({}, {"GRAPH_BASE_URL": "graph.microsoft.com"}, {})


# -- input ----------------------------------------------------------------------------------------


def _line(external_id: str, **extra: object) -> str:
    return json.dumps({"externalId": external_id, "title": "t", "contentWebUrl": "u", "languageTag": "en-us", **extra})


def test_object_array_and_ndjson_are_read() -> None:
    assert [i.content.external_id for i in read_items(_line("a"))] == ["a"]
    assert [i.where for i in read_items(f"[{_line('a')}, {_line('b')}]")] == ["item 1", "item 2"]
    assert [i.where for i in read_items(f"\ufeff{_line('a')}\n\n{_line('b')}\n")] == ["line 1", "line 3"]
    pretty = json.dumps(json.loads(_line("p", id="graph-id", **{"@odata.context": "x"})), indent=2)
    [item] = read_items(pretty)
    assert item.content.to_graph() == json.loads(_line("p"))


def test_every_problem_is_reported() -> None:
    text = "\n".join([_line("a", level="Beginner"), "{not json", _line("b", numberOfPages="3"), "[1]"])
    with pytest.raises(InvalidInput) as syntax:
        read_items(text)
    assert [str(p) for p in syntax.value.problems] == [
        "line 2: (item): invalid JSON: Expecting property name enclosed in double quotes (column 2)"
    ]
    with pytest.raises(InvalidInput) as fields:
        read_items("\n".join([_line("a", level="Beginner"), _line("b", numberOfPages="3"), _line("a")]))
    assert [(p.where, p.pointer) for p in fields.value.problems] == [
        ("line 1", "/level"),
        ("line 2", "/numberOfPages"),
        ("line 3", "/externalId"),
    ]
    for empty in ("", "  \n", "[]"):
        with pytest.raises(InvalidInput):
            read_items(empty)
    with pytest.raises(InvalidInput, match="problem"):
        read_items('{"externalId": "x",\n  "title": }')


# -- decisions ------------------------------------------------------------------------------------


def test_replacement_sends_every_writable_property_with_the_new_state() -> None:
    item = {"@odata.context": "c", "id": "g", "externalId": "x", "title": "t", "skillTags": ["s"], "isActive": True}
    assert replacement(item, True) is None
    assert replacement(item, False) == {"externalId": "x", "title": "t", "skillTags": ["s"], "isActive": False}
    assert replacement({**item, "isActive": None}, True) is None  # Graph's default is active


def test_status_view_searchable_by_is_push_plus_24_hours() -> None:
    pushed = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    entry = LedgerEntry("r", "x", "upsert", pushed - timedelta(minutes=5), pushed, "worker", "lms", "evt-1")
    early = status_view("r", "x", {"id": "g", "isActive": True}, entry, ledger_configured=True, now=pushed)
    assert early["searchableBy"] == "2026-01-02T09:00:00+00:00"
    assert early["searchableByPassed"] is False
    assert early["lastPush"]["sourceEventId"] == "evt-1"
    late = status_view("r", "x", None, entry, ledger_configured=True, now=pushed + timedelta(hours=24))
    assert late["searchableByPassed"] is True
    assert late["existsInGraph"] is False
    deleted = LedgerEntry("r", "x", "delete", pushed, pushed, "cli")
    assert status_view("r", "x", None, deleted, ledger_configured=True, now=pushed)["searchableBy"] is None


def test_held_commands_are_matched_by_registration() -> None:
    mine = belongs_to("reg-1")
    assert mine(json.dumps({"registrationId": "reg-1"}))
    assert not mine(json.dumps({"registrationId": "reg-2"}))
    assert not mine("not json")
    assert not mine("[1]")


def test_cli_reads_the_app_settings_by_the_apps_names_and_defaults() -> None:
    from shared.settings import STORAGE_CONNECTION

    app_env = {
        STORAGE_CONNECTION: "UseDevelopmentStorage=true",
        "CONTENT_QUEUE_NAME": "q-from-app",
        "LEDGER_TABLE_NAME": "ledgerFromApp",
        "GRAPH_API_VERSION": "beta",
        "REGISTRATION_STATE_CACHE_SECONDS": "3",
    }
    conf = resolve({}, {}, app_env)  # e.g. local.settings values exported, or stack.env
    assert conf.storage_connection_string == "UseDevelopmentStorage=true"
    assert (conf.queue, conf.ledger_table, conf.graph_version, conf.state_cache_seconds) == (
        "q-from-app",
        "ledgerFromApp",
        "beta",
        3.0,
    )
    defaults = resolve({}, {}, {})
    app = Settings()
    assert (defaults.queue, defaults.ledger_table, defaults.graph_base_url) == (
        app.content_queue_name,
        app.ledger_table_name,
        app.graph_base_url,
    )
    assert defaults.state_cache_seconds == app.registration_state_cache_seconds


def test_storage_account_means_identity_based_endpoints() -> None:
    from vlsync import storage

    tenant = TENANT
    conf = resolve({"storage_account": "vlsyncprod", "queue": "content-commands"}, {"VIVA_APP_TENANT_ID": tenant}, {})
    ledger = storage.ledger(conf)
    assert ledger._table.url.startswith("https://vlsyncprod.table.core.windows.net")
    assert ledger.tenant_id == tenant  # ledger keys carry the tenant
    with pytest.raises(ConfigError, match="tenant"):
        storage.ledger(resolve({"storage_account": "vlsyncprod"}, {}, {}))
    # A domain name signs in but does not name ledger rows; a GUID in capitals is the same tenant.
    with pytest.raises(ConfigError, match="not a tenant id"):
        storage.ledger(resolve({"storage_account": "vlsyncprod", "tenant_id": "contoso.onmicrosoft.com"}, {}, {}))
    assert storage.ledger(
        resolve({"storage_account": "vlsyncprod", "tenant_id": TENANT.upper()}, {}, {})
    ).tenant_id == (TENANT)
    queue = storage.command_queue(conf)
    assert queue._held.url.startswith("https://vlsyncprod.queue.core.windows.net/content-commands-held")
    with pytest.raises(ConfigError):
        storage.ledger(resolve({"storage_account": "Not_Valid"}, {}, {}))
    with pytest.raises(ConfigError):
        storage.command_queue(resolve({"storage_account": "ok1", "queue": "Bad--Name"}, {}, {}))


# -- issue 8: an operator CLI that cannot hit the wrong target ------------------------------------------


def test_dot_segment_ids_are_refused() -> None:
    from vlsync.config import id_problem

    for bad in ("", ".", ".."):
        assert id_problem(bad), bad
    for good in ("...", "a/../b", "../x", "x..y", " ", "O'Brien/1", "2b8c5e0e-0000-4000-8000-000000000001", None):
        assert id_problem(good) is None, good
    with pytest.raises(ConfigError, match="not an id"):
        resolve({"registration_id": ".."}, {}, {}).require_registration()


def test_the_default_env_file_serves_only_a_graph_on_this_machine(tmp_path: Path) -> None:
    dev = tmp_path / ".dev"
    dev.mkdir()
    (dev / "stack.env").write_text(
        "GRAPH_BASE_URL='http://127.0.0.1:7072'\nREGISTRATION_ID='reg-local'\n"
        "LearningSyncStorage='UseDevelopmentStorage=true'\nIDENTITY_ENDPOINT='http://127.0.0.1:7073/msi/token'\n"
        "IDENTITY_HEADER='h'\n"
    )
    local = load({}, {}, tmp_path)
    assert (local.registration_id, local.ignored_env_file, local.credential_for("provider")) == (
        "reg-local",
        None,
        "local",
    )
    for options, environ in (
        ({}, {"GRAPH_BASE_URL": "https://graph.microsoft.com"}),
        ({"graph_base_url": "https://graph.microsoft.com"}, {}),
    ):
        real = load(options, environ, tmp_path)
        assert real.ignored_env_file == dev / "stack.env"
        assert real.env_file is None
        assert (real.registration_id, real.storage_connection_string, real.identity_endpoint) == (None, None, None)
        assert real.credential_for("provider") == "browser"
    # A file without a Graph root would send the command to real Graph: not used either.
    (dev / "stack.env").write_text("REGISTRATION_ID='reg-local'\n")
    assert load({}, {}, tmp_path).registration_id is None
    # Named explicitly, it is used whatever Graph is.
    named = load({"env_file": str(dev / "stack.env")}, {"GRAPH_BASE_URL": "https://graph.microsoft.com"}, tmp_path)
    assert (named.registration_id, named.ignored_env_file) == ("reg-local", None)


def test_plain_http_is_refused_for_a_graph_elsewhere() -> None:
    for url in ("http://graph.microsoft.com", "http://10.0.0.5:7072", "http://127.0.0.1.example.com"):
        with pytest.raises(ConfigError, match="plain http"):
            resolve({"graph_base_url": url}, {}, {})
    for url in ("http://127.0.0.1:7072", "http://localhost:1", "http://[::1]:7072", "http://127.1.2.3:9"):
        assert resolve({"graph_base_url": url}, {}, {}).graph_base_url == url


def test_device_code_needs_your_app_registration() -> None:
    from vlsync.credentials import missing_client_id, refused_hint, require_client_id

    with pytest.raises(ConfigError) as missing:
        require_client_id("provider", resolve({}, {}, {}))
    message = str(missing.value)
    assert message == missing_client_id("provider", "browser")
    for words in ("public client", "LearningProvider.ReadWrite", "admin consent", "--client-id", "VIVA_APP_CLIENT_ID"):
        assert words in message
    assert "http://localhost" in missing_client_id("provider", "browser")
    assert require_client_id("provider", resolve({"client_id": "c1"}, {}, {})) == "c1"
    # One app: the deployment's app (azd output) is the default sign-in app; the CLI's own variable wins.
    assert require_client_id("provider", resolve({}, {"VIVA_APP_CLIENT_ID": "app"}, {})) == "app"
    both = {"VIVA_APP_CLIENT_ID": "app", "VLSYNC_CLIENT_ID": "mine"}
    assert require_client_id("provider", resolve({}, both, {})) == "mine"

    cli_hint = refused_hint("provider", "azure-cli", None, 403)
    assert cli_hint is not None
    assert "pre-authorised for the CLI's own app" in cli_hint
    assert "--credential browser (or device-code) through the product's app" in cli_hint
    own = refused_hint("provider", "device-code", "c1", 403)
    assert own is not None
    assert "app registration c1" in own
    assert "LearningProvider.ReadWrite" in own
    app_only = refused_hint("provider", "managed-identity", None, 401)
    assert app_only is not None
    assert "only delegated" in app_only
    assert "LearningContent.ReadWrite.All" in (refused_hint("content", "device-code", "c1", 403) or "")
    assert refused_hint("provider", "azure-cli", None, 404) is None


def test_registration_report_says_what_the_listing_found() -> None:
    from shared.graph import GraphTransientError
    from vlsync.operations import registration_report

    error = GraphTransientError(503, "serviceUnavailable", "Retry after 1 seconds", "req-1", may_have_applied=True)
    none = registration_report(error, [], "Contoso")
    assert "did not succeed" in str(none)
    assert none.details["matches"] == []
    one = registration_report(error, [{"id": "p-1", "displayName": "Contoso"}], "Contoso")
    assert "id p-1: the registration probably succeeded" in str(one)
    assert one.lines == ["registrationId: p-1"]
    two = registration_report(error, [{"id": "p-1"}, {"id": "p-2"}], "Contoso")
    assert "2 providers are named 'Contoso'" in str(two)
    assert two.lines == ["registrationId: p-1", "registrationId: p-2"]
    unknown = registration_report(error, None, "Contoso", GraphTransientError(None, "Timeout", "GET timed out"))
    assert "Could not list the providers" in str(unknown)
    assert unknown.details["matches"] is None
    for report in (none, one, two, unknown):
        assert "was not sent again" in str(report)
    throttled = GraphTransientError(429, "tooManyRequests", "Retry after 1 minutes")  # refused, so not applied
    refused = str(registration_report(throttled, [], "Contoso"))
    assert "gave up retrying" in refused
    assert "did not succeed" in refused


def test_the_clock_is_graphs_within_60_seconds_and_refused_beyond() -> None:
    from vlsync.operations import ClockSkew, clock_from

    graph = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    assert clock_from(graph, graph + timedelta(milliseconds=700)).offset == timedelta(0)  # within Date's second
    assert clock_from(graph, graph + timedelta(seconds=45)).offset == timedelta(seconds=-44.5)
    assert clock_from(graph, graph - timedelta(seconds=30)).offset == timedelta(seconds=30.5)
    for off in (timedelta(seconds=61), -timedelta(minutes=5)):
        with pytest.raises(ClockSkew, match="clock is"):
            clock_from(graph, graph + off)
    with pytest.raises(ClockSkew, match="no Date header"):
        clock_from(None, graph)


def test_targets_name_the_storage_account_and_the_tokens_tenant() -> None:
    import base64

    from vlsync.operations import Target, storage_account, token_tenant

    azurite = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5==;"
        "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    )
    assert storage_account(azurite, None) == "devstoreaccount1"
    assert storage_account("UseDevelopmentStorage=true", None) == "devstoreaccount1 (Azurite)"
    assert storage_account(None, "vlsyncprod") == "vlsyncprod"
    assert storage_account("TableEndpoint=https://x.table.core.windows.net/;SharedAccessSignature=sv=1", None) == (
        "x.table.core.windows.net"
    )
    assert storage_account(None, None) is None
    claims = base64.urlsafe_b64encode(json.dumps({"tid": "t-1"}).encode()).decode().rstrip("=")
    assert token_tenant(f"h.{claims}.s") == "t-1"
    assert token_tenant("opaque") is None
    target = Target("graph.microsoft.com (v1.0)", "reg-1", None, tenant="t-1")
    assert target.line() == ("target: Graph graph.microsoft.com (v1.0), tenant t-1, registration reg-1, no storage")
    assert target.view() == {
        "graph": "graph.microsoft.com (v1.0)",
        "tenant": "t-1",
        "registrationId": "reg-1",
        "storage": None,
    }


def test_storage_the_sdk_cannot_read_is_a_failure_not_a_usage_error() -> None:
    from vlsync import storage

    broken = resolve(
        {"storage_connection_string": "DefaultEndpointsProtocol=http;AccountName", "tenant_id": TENANT}, {}, {}
    )
    with pytest.raises(storage.StorageFailure, match="malformed"):
        storage.ledger(broken)
    with pytest.raises(storage.StorageFailure):
        storage.command_queue(broken)
    with pytest.raises(ConfigError):  # no storage at all: an option is missing
        storage.ledger(resolve({}, {}, {}))
