"""App registrations: the config helpers, the admin routes, ``/dev/token``'s ``clientId`` and the CLI flags."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import tokens
from local.identity import (
    DEV_ADMIN_OBJECT_ID,
    DEV_CLIENT_ID,
    AppRegistration,
    FederatedCredential,
    Identity,
    IdentityServer,
    derived_object_id,
    federated_credential_for,
    service_principal_object_id,
)

from .conftest import (
    APP_CLIENT_ID,
    CLI_APP_CLIENT_ID,
    CLI_APP_SCOPES,
    CONFIDENTIAL_APP_CLIENT_ID,
    HEADER,
    UAMI,
    UAMI_CLIENT_ID,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANT = tokens.DEFAULT_TENANT_ID
NEW_APP_CLIENT_ID = "a9900000-0000-4000-8000-0000000000a1"
UNKNOWN_APP_CLIENT_ID = "a9900000-dead-4000-8000-000000000000"


@pytest.fixture
def http(endpoint: IdentityServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.base_url, timeout=5) as client:
        yield client


def fic_json(name: str = "uami", subject: str = UAMI.object_id, **extra: Any) -> dict[str, Any]:
    return {"name": name, "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0", "subject": subject} | extra


# -- config -------------------------------------------------------------------------------------


def test_federated_credential_for_a_user_assigned_identity_is_what_azure_creates() -> None:
    fic = federated_credential_for(UAMI)

    assert fic.issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert fic.subject == derived_object_id(UAMI_CLIENT_ID) == UAMI.object_id
    assert fic.audiences == ("api://AzureADTokenExchange",)
    assert fic.name == "id-vlsync-7e57c11e"  # the identity's resource name


def test_system_assigned_identity_cannot_be_a_federated_credential() -> None:
    with pytest.raises(ValueError, match="only a user-assigned"):
        federated_credential_for(Identity.system())


def test_app_defaults_and_derived_ids() -> None:
    app = AppRegistration(NEW_APP_CLIENT_ID)

    assert app.object_id == service_principal_object_id(NEW_APP_CLIENT_ID)
    assert app.object_id == service_principal_object_id(NEW_APP_CLIENT_ID.upper())  # stable, case-insensitive
    assert app.object_id != derived_object_id(NEW_APP_CLIENT_ID)  # not an identity's object id
    assert (app.roles, app.scopes, app.public_client) == (
        ("LearningContent.ReadWrite.All",),
        ("LearningProvider.ReadWrite",),
        True,
    )
    assert app.public()["redirectUris"] == ["http://localhost"]
    assert app.federated_credentials == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"clientId": "not-a-guid"}, "must be a GUID"),
        ({"clientId": NEW_APP_CLIENT_ID, "colour": "blue"}, "unknown app keys"),
        ({"clientId": NEW_APP_CLIENT_ID, "roles": "LearningContent.ReadWrite.All"}, "list of non-empty strings"),
        ({"clientId": NEW_APP_CLIENT_ID, "publicClient": "yes"}, "true or false"),
        ({"clientId": NEW_APP_CLIENT_ID, "federatedCredentials": [fic_json(name="x")]}, "3-120"),
        ({"clientId": NEW_APP_CLIENT_ID, "federatedCredentials": [fic_json(name="-abc")]}, "starting with a letter"),
        (
            {"clientId": NEW_APP_CLIENT_ID, "federatedCredentials": [fic_json(audiences=["a", "b"])]},
            "exactly one audience",
        ),
        (
            {"clientId": NEW_APP_CLIENT_ID, "federatedCredentials": [fic_json("one"), fic_json("two")]},
            "issuer and subject must be unique",
        ),
        (
            {"clientId": NEW_APP_CLIENT_ID, "federatedCredentials": [fic_json("one"), fic_json("one", subject="s")]},
            "names must be unique",
        ),
        (
            {
                "clientId": NEW_APP_CLIENT_ID,
                "federatedCredentials": [fic_json(f"fic{i:02}", subject=f"s{i}") for i in range(21)],
            },
            "at most 20",
        ),
    ],
)
def test_invalid_apps_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AppRegistration.parse(raw)


def test_twenty_federated_credentials_are_allowed() -> None:
    raw = {
        "clientId": NEW_APP_CLIENT_ID,
        "federatedCredentials": [fic_json(f"fic{i:02}", subject=f"s{i}") for i in range(20)],
    }

    assert len(AppRegistration.parse(raw).federated_credentials) == 20


# -- admin routes ------------------------------------------------------------------------------


def test_list_apps_shows_the_configured_ones(http: httpx.Client) -> None:
    apps = {a["clientId"]: a for a in http.get("/_identity/apps").json()["apps"]}

    assert set(apps) == {APP_CLIENT_ID, CLI_APP_CLIENT_ID, CONFIDENTIAL_APP_CLIENT_ID}
    worker = apps[APP_CLIENT_ID]
    assert worker["objectId"] == service_principal_object_id(APP_CLIENT_ID)
    assert worker["federatedCredentials"] == [federated_credential_for(UAMI).public()]
    assert apps[CONFIDENTIAL_APP_CLIENT_ID]["publicClient"] is False


def test_put_creates_then_replaces(http: httpx.Client, endpoint: IdentityServer) -> None:
    body = {"displayName": "new", "roles": ["LearningContent.Read.All"], "federatedCredentials": [fic_json()]}

    created = http.put(f"/_identity/apps/{NEW_APP_CLIENT_ID}", json=body)
    replaced = http.put(f"/_identity/apps/{NEW_APP_CLIENT_ID.upper()}", json=body | {"scopes": []} | {"roles": []})

    assert created.status_code == 201
    assert created.json()["federatedCredentials"][0]["audiences"] == ["api://AzureADTokenExchange"]
    assert replaced.status_code == 200
    app = endpoint.app(NEW_APP_CLIENT_ID)
    assert app is not None
    assert (app.roles, app.scopes, app.display_name) == ((), (), "new")
    assert app.federated_credentials == (FederatedCredential("uami", fic_json()["issuer"], UAMI.object_id),)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"clientId": APP_CLIENT_ID}, "differs from the path"),
        ({"federatedCredentials": [{"name": "uami"}]}, "'issuer' must be a string"),
        ([], "must be a JSON object"),
    ],
)
def test_put_refuses_invalid_bodies(http: httpx.Client, body: Any, message: str) -> None:
    resp = http.put(f"/_identity/apps/{NEW_APP_CLIENT_ID}", json=body)

    assert resp.status_code == 400
    assert message in resp.json()["message"]


def test_put_refuses_non_json(http: httpx.Client) -> None:
    resp = http.put(f"/_identity/apps/{NEW_APP_CLIENT_ID}", content=b"{", headers={"Content-Type": "application/json"})

    assert resp.status_code == 400
    assert "must be JSON" in resp.json()["message"]


def test_delete_federated_credentials_then_restore_over_http(http: httpx.Client, endpoint: IdentityServer) -> None:
    before = http.get("/_identity/apps").json()["apps"]
    (worker,) = [a for a in before if a["clientId"] == APP_CLIENT_ID]

    cleared = http.delete(f"/_identity/apps/{APP_CLIENT_ID}/federatedCredentials")
    app_after_clear = endpoint.app(APP_CLIENT_ID)
    restored = http.put(
        f"/_identity/apps/{APP_CLIENT_ID}", json={k: v for k, v in worker.items() if k != "redirectUris"}
    )

    assert cleared.status_code == 200
    assert cleared.json()["federatedCredentials"] == []
    assert app_after_clear is not None
    assert app_after_clear.federated_credentials == ()
    assert restored.status_code == 200
    assert endpoint.app(APP_CLIENT_ID) == endpoint.config.apps[0]


def test_delete_app(http: httpx.Client, endpoint: IdentityServer) -> None:
    first = http.delete(f"/_identity/apps/{CLI_APP_CLIENT_ID}")
    second = http.delete(f"/_identity/apps/{CLI_APP_CLIENT_ID}")
    fics = http.delete(f"/_identity/apps/{CLI_APP_CLIENT_ID}/federatedCredentials")

    assert first.status_code == 204
    assert (second.status_code, fics.status_code) == (404, 404)
    assert endpoint.app(CLI_APP_CLIENT_ID) is None


def test_python_methods_mirror_the_routes(endpoint: IdentityServer) -> None:
    before = endpoint.remove_federated_credentials(APP_CLIENT_ID)
    cleared = endpoint.app(APP_CLIENT_ID)
    endpoint.put_app(before)

    assert before.federated_credentials
    assert cleared is not None
    assert cleared.federated_credentials == ()
    assert endpoint.app(APP_CLIENT_ID) == before
    assert endpoint.remove_app(APP_CLIENT_ID) == before
    with pytest.raises(KeyError):
        endpoint.remove_federated_credentials(APP_CLIENT_ID)
    endpoint.reset_apps()
    assert endpoint.app(APP_CLIENT_ID) == before


def test_health_reports_the_authority_and_ca(http: httpx.Client, endpoint: IdentityServer) -> None:
    body = http.get("/_identity/health").json()

    assert body["authorityHost"] == endpoint.authority_host
    assert body["authorityHost"].startswith("https://127.0.0.1:")
    assert body["caFile"] == str(endpoint.ca_file)
    assert Path(body["caFile"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert body["tenantId"] == TENANT
    assert set(body["apps"]) == {APP_CLIENT_ID, CLI_APP_CLIENT_ID, CONFIDENTIAL_APP_CLIENT_ID}


# -- /dev/token with clientId ----------------------------------------------------------------------


def test_dev_token_for_a_public_client_app(endpoint: IdentityServer) -> None:
    body = endpoint.dev_token(clientId=CLI_APP_CLIENT_ID, scopes=["LearningProvider.ReadWrite"])

    claims = tokens.verify(body["access_token"])
    assert (claims["appid"], claims["oid"], claims["idtyp"]) == (CLI_APP_CLIENT_ID, DEV_ADMIN_OBJECT_ID, "user")
    assert body["client_id"] == CLI_APP_CLIENT_ID
    assert endpoint.requests("/dev/token")[0]["identity"] == CLI_APP_CLIENT_ID


def test_dev_token_default_scope_is_what_the_app_consented(endpoint: IdentityServer) -> None:
    body = endpoint.dev_token(clientId=CLI_APP_CLIENT_ID, scopes=["https://graph.microsoft.com/.default"])

    assert tokens.verify(body["access_token"])["scp"] == " ".join(CLI_APP_SCOPES)


def test_dev_token_without_client_id_is_unchanged(endpoint: IdentityServer) -> None:
    claims = tokens.verify(endpoint.dev_token(scopes=["LearningProvider.ReadWrite"])["access_token"])

    assert claims["appid"] == DEV_CLIENT_ID


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"clientId": APP_CLIENT_ID, "scopes": ["LearningContent.Read.All"]}, "AADSTS65001"),
        ({"clientId": UNKNOWN_APP_CLIENT_ID, "scopes": ["LearningProvider.ReadWrite"]}, "AADSTS700016"),
        ({"clientId": CONFIDENTIAL_APP_CLIENT_ID, "scopes": ["LearningProvider.ReadWrite"]}, "AADSTS7000218"),
        ({"clientId": CLI_APP_CLIENT_ID, "roles": ["LearningContent.Read.All"]}, "delegated tokens ('scopes') only"),
        ({"clientId": "", "scopes": ["LearningProvider.ReadWrite"]}, "non-empty string"),
    ],
)  # fmt: skip
def test_dev_token_client_id_refusals(http: httpx.Client, body: dict[str, Any], message: str) -> None:
    resp = http.post("/dev/token", json=body, headers={"X-IDENTITY-HEADER": HEADER})

    assert resp.status_code == 400
    assert message in resp.json()["message"]


# -- the CLI ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def cli(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str, dict[str, Any]]]:
    """The endpoint as the launcher runs it: (process, /msi/token URL, health JSON)."""
    args = [sys.executable, "-m", "local.identity", "--port", "0", "--header", "cli-secret", *extra]
    with (tmp_path / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("identity endpoint listening on http://127.0.0.1:"), line
            endpoint = line.removeprefix("identity endpoint listening on ")
            health = httpx.get(endpoint.replace("/msi/token", "/_identity/health"), timeout=5).json()
            yield proc, endpoint, health
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def cli_exchange(endpoint: str, health: dict[str, Any], app_client_id: str) -> httpx.Response:
    """The two halves of the exchange over raw HTTP against a CLI-started endpoint."""
    mi = httpx.get(
        endpoint,
        params={"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange", "client_id": UAMI_CLIENT_ID},
        headers={"X-IDENTITY-HEADER": "cli-secret"},
        timeout=5,
    ).json()
    return httpx.post(
        f"{health['authorityHost']}/{health['tenantId']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": app_client_id,
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": mi["access_token"],
        },
        verify=ssl.create_default_context(cafile=health["caFile"]),
        timeout=5,
    )


def test_cli_app_flag_trusts_the_identity_and_writes_the_ca_to_tls_dir(tmp_path: Path) -> None:
    tls_dir = tmp_path / "tls"
    flags = ["--client-id", UAMI_CLIENT_ID, "--app", f"{APP_CLIENT_ID}={UAMI_CLIENT_ID}", "--tls-dir", str(tls_dir)]

    with cli(tmp_path, *flags) as (proc, endpoint, health):
        resp = cli_exchange(endpoint, health, APP_CLIENT_ID)
        ca_file = Path(health["caFile"])
        assert ca_file.parent == tls_dir
        assert ca_file.is_file()
    assert proc.stdout is not None
    rest = proc.stdout.read()

    assert resp.status_code == 200, resp.text
    assert tokens.verify(resp.json()["access_token"])["appid"] == APP_CLIENT_ID
    assert health["authorityHost"].startswith("https://127.0.0.1:")
    assert health["apps"] == [APP_CLIENT_ID]
    assert rest == ""  # the ready line stays the only stdout line
    assert ca_file.is_file()  # a --tls-dir is the caller's: left in place
    logs = (tmp_path / "stderr.txt").read_text()
    assert "oauth2/v2.0/token status=200" in logs
    assert "cli-secret" not in logs
    assert "eyJ" not in logs


def test_cli_apps_file_and_default_tls_dir_removed_at_exit(tmp_path: Path) -> None:
    apps_file = tmp_path / "apps.json"
    apps_file.write_text(
        json.dumps(
            [{"clientId": APP_CLIENT_ID, "roles": ["LearningContent.Read.All"], "federatedCredentials": [fic_json()]}]
        )
    )

    with cli(tmp_path, "--client-id", UAMI_CLIENT_ID, "--apps-file", str(apps_file)) as (_, endpoint, health):
        resp = cli_exchange(endpoint, health, APP_CLIENT_ID)
        ca_file = Path(health["caFile"])
        assert ca_file.is_file()

    assert resp.status_code == 200, resp.text
    assert tokens.verify(resp.json()["access_token"])["roles"] == ["LearningContent.Read.All"]
    assert not ca_file.exists()
    assert not ca_file.parent.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--app", f"{APP_CLIENT_ID}={UAMI_CLIENT_ID}"], "is not a user-assigned identity"),
        (["--app", "not-a-guid"], "must be a GUID"),
        (["--apps-file", "/nonexistent/apps.json"], "cannot read --apps-file"),
    ],
)
def test_cli_refuses_bad_apps(tmp_path: Path, flags: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "local.identity", "--port", "0", "--header", "h", *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
