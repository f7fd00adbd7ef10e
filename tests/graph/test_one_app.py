"""One Entra app registers the provider and pushes its content (issue 13).

The worker's token comes from the managed-identity-to-app exchange run by the real azure-identity
classes (``ManagedIdentityCredential`` → ``ClientAssertionCredential``) against the identity
endpoint's Entra route; the Graph emulator, in its default ``strict-app`` mode, refuses content from
any app id but the registering one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from shared.graph import GraphTransientError
from shared.ledger import Ledger
from shared.models import ContentCommand
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.worker import MessageInfo, Outcome, WorkerPorts, process
from tests.conftest import APP_CLIENT_ID, TENANT_ID
from tests.graph.conftest import CliSide, GraphSide, make_graph, worker_credential
from tests.queues import peek_texts
from tests.vlsync_runner import make_runner
from tests.webhooks import content

INFO = MessageInfo(message_id="m-app", dequeue_count=1)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


def command(external_id: str, registration_id: str, **extra: Any) -> bytes:
    return (
        ContentCommand.model_validate(
            {
                "op": "upsert",
                "registrationId": registration_id,
                "externalId": external_id,
                "content": content(external_id),
                "source": "demo",
                "sourceEventId": f"evt-{external_id}",
                "eventTime": datetime(2026, 11, 27, tzinfo=UTC),
                "correlationId": "corr-app",
                **extra,
            }
        )
        .to_json()
        .encode()
    )


def registered_by(graph_side: GraphSide) -> str:
    providers = graph_side.admin("GET", "/providers").json()["value"]
    return str(next(p for p in providers if p["id"] == graph_side.registration_id)["registeredByAppId"])


async def test_the_worker_pushes_as_the_app_that_registered_the_provider(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, identity_server: Any
) -> None:
    credential = worker_credential(graph_side)
    try:
        token = (await credential.get_token(GRAPH_SCOPE)).token
    finally:
        await credential.close()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["appid"] == APP_CLIENT_ID == registered_by(graph_side)
    assert "LearningContent.ReadWrite.All" in claims["roles"]

    identity_server.clear_requests()
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    assert await process(command("one-app-1", graph_side.registration_id), INFO, ports) is Outcome.UPSERTED
    assert graph_side.get_content("one-app-1").status_code == 200
    # The real flow ran: a managed-identity token for the exchange audience, then the exchange.
    [assertion] = identity_server.requests()
    assert assertion["query"]["resource"].startswith("api://AzureADTokenExchange")
    [exchange] = identity_server.requests(identity_server.entra_token_path)
    assert exchange["status"] == 200


async def test_the_old_two_identity_setup_is_refused(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, settings: Settings
) -> None:
    """Pushing as the managed identity itself (GRAPH_AUTH_MODE=managed-identity) while the provider was
    registered through the app: Graph (emulated, strict-app) refuses, and the command is parked with why."""
    ports = WorkerPorts(graph=make_graph(graph_side, http, as_app=False), queue=queue, ledger=ledger)
    assert await process(command("two-ids-1", graph_side.registration_id), INFO, ports) is Outcome.PARKED
    [parked] = peek_texts(settings.storage_connection_string or "", settings.poison_queue_name)
    error = json.loads(parked)["lastError"]
    assert (error["status"], error["code"]) == (403, "accessDenied")
    assert APP_CLIENT_ID in error["message"]
    assert graph_side.get_content("two-ids-1").status_code == 404


async def test_a_commands_tenant_chooses_the_token_and_the_ledger_rows(
    graph_side: GraphSide, http: httpx.AsyncClient, queue: StorageCommandQueue, ledger: Ledger, identity_server: Any
) -> None:
    ports = WorkerPorts(graph=make_graph(graph_side, http), queue=queue, ledger=ledger)
    body = command("tenant-1", graph_side.registration_id, tenantId=TENANT_ID.upper())
    assert await process(body, INFO, ports) is Outcome.UPSERTED
    assert ledger.for_tenant(TENANT_ID).last_push(graph_side.registration_id, "tenant-1") is not None
    assert ledger.for_tenant(OTHER_TENANT).last_push(graph_side.registration_id, "tenant-1") is None

    # Another tenant's command asks for that tenant's token. This local directory has no such
    # tenant (AADSTS90002): the command is retried by the queue, never pushed with the home token.
    identity_server.clear_requests()
    other = command("tenant-2", graph_side.registration_id, tenantId=OTHER_TENANT)
    with pytest.raises(GraphTransientError, match="AADSTS90002"):  # the queue trigger redelivers it
        await process(other, INFO, ports)
    assert any(OTHER_TENANT in e["path"] for e in identity_server.requests(None))
    assert graph_side.get_content("tenant-2").status_code == 404


def test_register_records_the_app_and_tenant_in_the_ledger(cli_side: CliSide, settings: Settings) -> None:
    created = cli_side.json(
        "provider", "register", "--display-name", "Bound LMS",
        "--square-logo-light", "https://lms.example/a.png", "--long-logo-light", "https://lms.example/b.png",
        "--square-logo-dark", "https://lms.example/c.png", "--long-logo-dark", "https://lms.example/d.png",
    )  # fmt: skip
    assert created["registeredBy"] == {"appId": APP_CLIENT_ID, "tenantId": TENANT_ID, "recordedInLedger": True}
    table = Ledger.from_settings(
        settings.model_copy(update={"ledger_table_name": cli_side.env["LEDGER_TABLE_NAME"]})
    ).registrations()
    assert [(r["registrationId"], r["appId"]) for r in table] == [(created["id"], APP_CLIENT_ID)]


def test_register_warns_when_signing_in_through_another_app(cli_side: CliSide, identity_server: Any) -> None:
    from local.identity import AppRegistration

    other = AppRegistration("a99c0000-0000-4000-8000-00000000b002")
    identity_server.put_app(other)
    try:
        result = make_runner({**cli_side.env, "VLSYNC_CLIENT_ID": other.client_id})(
            "provider", "register", "--display-name", "Wrong app LMS",
            "--square-logo-light", "https://lms.example/a.png", "--long-logo-light", "https://lms.example/b.png",
            "--square-logo-dark", "https://lms.example/c.png", "--long-logo-dark", "https://lms.example/d.png",
        )  # fmt: skip
    finally:
        identity_server.remove_app(other.client_id)
    assert result.exit_code == 0, result.stderr
    err = " ".join(result.stderr.split())
    assert f"registered through app {other.client_id}, but the worker pushes as app {APP_CLIENT_ID}" in err


def doctor(cli_side: CliSide, **env: str) -> tuple[int, dict[str, Any]]:
    result = make_runner({**cli_side.env, **env})("--json", "doctor")
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["check"]: c["status"] for c in report["checks"]}


def test_doctor_passes_every_check_against_the_local_one_app_setup(cli_side: CliSide) -> None:
    code, report = doctor(cli_side)
    assert code == 0, report
    assert report["ok"] is True
    assert set(statuses(report).values()) == {"pass"}
    assert list(statuses(report)) == [
        "settings",
        "managed identity",
        "app",
        "federated credential",
        "app roles",
        "registration",
    ]


def test_doctor_names_a_removed_federated_credential(cli_side: CliSide, identity_server: Any) -> None:
    before = identity_server.remove_federated_credentials(APP_CLIENT_ID)
    try:
        code, report = doctor(cli_side)
    finally:
        identity_server.put_app(before)
    assert code == 1
    found = statuses(report)
    assert (found["app"], found["federated credential"]) == ("pass", "fail")
    assert (found["app roles"], found["registration"]) == ("skip", "skip")
    [fic] = [c for c in report["checks"] if c["check"] == "federated credential"]
    assert "AADSTS70021" in fic["detail"]
    assert "az ad app federated-credential create --id " + APP_CLIENT_ID in fic["fix"]
    assert "api://AzureADTokenExchange" in fic["fix"]


def test_doctor_names_an_unknown_app_and_a_registration_bound_to_another(
    cli_side: CliSide, identity_server: Any
) -> None:
    code, report = doctor(cli_side, VIVA_APP_CLIENT_ID="a99c0000-0000-4000-8000-00000000dead")
    assert code == 1
    assert statuses(report)["app"] == "fail"
    assert "AADSTS700016" in next(c["detail"] for c in report["checks"] if c["check"] == "app")

    # A registration made through another app: the write probe is refused (strict-app), 403.
    token = identity_server.dev_token(scopes=["LearningProvider.ReadWrite"])["access_token"]  # the old CLI app
    from local import demo

    foreign = demo.register_provider(cli_side.graph.url, token)
    code, report = doctor(cli_side, REGISTRATION_ID=foreign)
    assert code == 1
    assert statuses(report)["registration"] == "fail"
    detail = next(c["detail"] for c in report["checks"] if c["check"] == "registration")
    assert f"refuses content from app {APP_CLIENT_ID}" in detail


def test_doctor_names_missing_roles_an_unknown_registration_and_a_missing_id(
    cli_side: CliSide, identity_server: Any
) -> None:
    from dataclasses import replace

    app = identity_server.app(APP_CLIENT_ID)
    identity_server.put_app(replace(app, roles=()))  # no admin consent for the application permission
    try:
        code, report = doctor(cli_side)
    finally:
        identity_server.put_app(app)
    assert code == 1
    assert (statuses(report)["app roles"], statuses(report)["registration"]) == ("fail", "skip")
    assert "admin-consent" in next(c["fix"] for c in report["checks"] if c["check"] == "app roles")

    code, report = doctor(cli_side, REGISTRATION_ID="7b1e0000-0000-4000-8000-00000000dead")
    assert code == 1
    assert "no registration 7b1e0000-0000-4000-8000-00000000dead" in next(
        c["detail"] for c in report["checks"] if c["check"] == "registration"
    )

    env = {k: v for k, v in cli_side.env.items() if k != "REGISTRATION_ID"}
    result = make_runner(env)("--json", "doctor")
    assert result.exit_code == 1
    assert "no registration id" in json.dumps(json.loads(result.stdout)["checks"][-1])


def test_doctor_compares_the_ledgers_registering_app(cli_side: CliSide, settings: Settings) -> None:
    ledger = Ledger.from_settings(settings.model_copy(update={"ledger_table_name": cli_side.env["LEDGER_TABLE_NAME"]}))
    ledger.record_registration(
        cli_side.registration_id, app_id="de100000-0000-4000-8000-0000000c11a0", display_name="x", by="cli"
    )
    code, report = doctor(cli_side)
    assert code == 1
    detail = next(c["detail"] for c in report["checks"] if c["check"] == "registration")
    assert "the ledger says app de100000-0000-4000-8000-0000000c11a0 registered" in detail
    ledger.record_registration(cli_side.registration_id, app_id=APP_CLIENT_ID, display_name="x", by="cli")
    code, report = doctor(cli_side)
    assert code == 0, report
    assert f"recorded as registered by app {APP_CLIENT_ID}" in report["checks"][-1]["detail"]
