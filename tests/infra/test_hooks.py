"""The azd hooks, run with a stand-in `az`, `azd` and `sleep`; and the order docs/deploy.md gives.

postprovision: Microsoft Graph sign-in for an admin: the Viva Learning app's admin consent, or the
`az` commands that create the app when the deployment could not, and in the managed-identity
fallback mode the identity's own roles (ids looked up by value, waiting for a new identity to
replicate); the webhook secrets (a restart when one was created or changed, because App Service
caches Key Vault references for up to 24 hours), then the sources' function keys. postdeploy: the
function keys. Neither ever fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import INFRA, REPO

HOOK_SH = INFRA / "hooks/postprovision.sh"
HOOK_PS1 = INFRA / "hooks/postprovision.ps1"
KEYS_SH = INFRA / "hooks/function-keys.sh"
KEYS_PS1 = INFRA / "hooks/function-keys.ps1"
DOC = REPO / "docs/deploy.md"
MSI = "11111111-2222-3333-4444-555555555555"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ROLES = "LearningContent.ReadWrite.All,LearningAssignedCourse.ReadWrite.All"
ASSIGNMENTS_URI = f"https://graph.microsoft.com/v1.0/servicePrincipals/{MSI}/appRoleAssignments"
CLIENT = "99999999-aaaa-bbbb-cccc-dddddddddddd"
APP_SP = "app-sp-id"
APP_SP_ASSIGNMENTS_URI = f"https://graph.microsoft.com/v1.0/servicePrincipals/{APP_SP}/appRoleAssignments"
GRANTS_URI = "https://graph.microsoft.com/v1.0/oauth2PermissionGrants"
TENANT = "tttttttt-0000-0000-0000-000000000000"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
APP_ROLES = (
    "LearningContent.ReadWrite.All,LearningAssignedCourse.ReadWrite.All,LearningSelfInitiatedCourse.ReadWrite.All"
)
# The azd outputs main.bicep gives the hook about the app (VIVA_APP_CLIENT_ID only once there is one).
APP_OUTPUTS = {
    "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": MSI,
    "GRAPH_APP_ROLES": ROLES,
    "VIVA_APP_TENANT_ID": TENANT,
    "VIVA_APP_DISPLAY_NAME": "Viva Learning Sync (test)",
    "VIVA_APP_FIC_ISSUER": ISSUER,
    "VIVA_APP_FIC_AUDIENCE": "api://AzureADTokenExchange",
    "VIVA_APP_GRAPH_ROLES": APP_ROLES,
    "VIVA_APP_GRAPH_SCOPES": "LearningProvider.ReadWrite",
}
WITH_APP = APP_OUTPUTS | {"VIVA_APP_CLIENT_ID": CLIENT, "VIVA_APP_CREATED": "true", "GRAPH_AUTH_MODE_IN_USE": "app"}
NO_APP = APP_OUTPUTS | {
    "VIVA_APP_CLIENT_ID": "",
    "VIVA_APP_CREATED": "false",
    "GRAPH_AUTH_MODE_IN_USE": "managed-identity",
}
FALLBACK = "== Managed-identity fallback"
APP = {
    "SERVICE_API_NAME": "func-api-abc",
    "AZURE_RESOURCE_GROUP": "rg-test",
    "SERVICE_API_HOST_NAME": "func-api-abc-h4sh.westeurope-01.azurewebsites.net",
}
RESTART = "functionapp restart -g rg-test -n func-api-abc"

# A stand-in `az` that logs every call and answers from files in its folder:
#   sp-hidden     the identity's service principal stays invisible to Graph for that many lookups
#   secrets.tsv   `az keyvault secret list` (absent: the call fails, as without a Key Vault role)
#   keys.txt      `az functionapp function keys list` (absent: the function is not deployed)
#   grants.txt    the scopes of the app's tenant-wide delegated grants (absent: none)
FAKE_AZ = """#!/bin/sh
dir="{dir}"
echo "$*" >> "$dir/az.log"
case "$*" in
  *"appRoles[?contains"*)
    printf 'LearningContent.ReadWrite.All\\trole-content\\n'
    printf 'LearningAssignedCourse.ReadWrite.All\\trole-assigned\\n'
    printf 'LearningSelfInitiatedCourse.ReadWrite.All\\trole-self\\n' ;;
  "ad sp show --id {graph} --query id -o tsv") echo graph-sp-id ;;
  "ad sp show --id {msi} --query id -o tsv")
    hidden=$(cat "$dir/sp-hidden" 2>/dev/null || echo 0)
    if [ "$hidden" -gt 0 ]; then echo $((hidden - 1)) > "$dir/sp-hidden"; exit 3; fi
    echo {msi} ;;
  "ad sp show --id {client} --query id -o tsv") echo {app_sp} ;;
  *servicePrincipals/{app_sp}/appRoleAssignments*) echo role-content ;;
  *appRoleAssignments*) echo role-assigned ;;
  *oauth2PermissionGrants*) [ -f "$dir/grants.txt" ] && cat "$dir/grants.txt" ;;
  "keyvault secret list"*) [ -f "$dir/secrets.tsv" ] || exit 1; cat "$dir/secrets.tsv" ;;
  "functionapp restart"*) ;;
  "functionapp function keys list"*) [ -f "$dir/keys.txt" ] || exit 3; cat "$dir/keys.txt" ;;
  "functionapp function keys set"*) ;;
  *) exit 1 ;;
esac
"""
NO_AZ = "#!/bin/sh\necho 'Please run az login' >&2\nexit 1\n"
LOGGER = '#!/bin/sh\necho "$*" >> "{dir}/{name}.log"\n'


class Fake:
    def __init__(self, tmp_path: Path, az: str) -> None:
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        scripts = {
            "az": az.format(dir=tmp_path, graph=GRAPH_APP_ID, msi=MSI, client=CLIENT, app_sp=APP_SP),
            "azd": LOGGER.format(dir=tmp_path, name="azd"),
            "sleep": LOGGER.format(dir=tmp_path, name="sleep"),
        }
        for name, text in scripts.items():
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)

    def write(self, name: str, text: str) -> None:
        (self.dir / name).write_text(text)

    def log(self, name: str) -> list[str]:
        path = self.dir / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []

    def run(self, hook: Path, **env: str) -> subprocess.CompletedProcess[str]:
        environ = {"PATH": f"{self.bin}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(self.dir)} | env
        return subprocess.run(["sh", str(hook)], env=environ, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path, FAKE_AZ)


@pytest.fixture
def no_az(tmp_path: Path) -> Fake:
    return Fake(tmp_path, NO_AZ)


def test_azure_yaml_runs_the_hooks(infra_dump: dict[str, Any]) -> None:
    hooks = infra_dump["azure_yaml"]["hooks"]
    assert hooks["postprovision"]["posix"] == {"shell": "sh", "run": "./infra/hooks/postprovision.sh"}
    assert hooks["postprovision"]["windows"] == {"shell": "pwsh", "run": "./infra/hooks/postprovision.ps1"}
    assert hooks["postdeploy"]["posix"] == {"shell": "sh", "run": "./infra/hooks/function-keys.sh"}
    assert hooks["postdeploy"]["windows"] == {"shell": "pwsh", "run": "./infra/hooks/function-keys.ps1"}
    for hook in hooks.values():
        for shell in hook.values():
            assert (REPO / shell["run"]).is_file()


@pytest.mark.parametrize("hook", [HOOK_SH, KEYS_SH], ids=["postprovision", "function-keys"])
def test_hook_is_valid_posix_sh(hook: Path) -> None:
    proc = subprocess.run(["sh", "-n", str(hook)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# --- Microsoft Graph -----------------------------------------------------------------------------


def test_without_a_signed_in_az_it_prints_the_lookups_and_calls(no_az: Fake) -> None:
    proc = no_az.run(HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    out = proc.stdout
    assert f"GRAPH_SP_ID=$(az ad sp show --id {GRAPH_APP_ID} --query id -o tsv)" in out
    for role in ROLES.split(","):
        assert f"--query \"appRoles[?value=='{role}'].id\"" in out
    assert out.count(f"az rest --method POST --uri {ASSIGNMENTS_URI}") == 2
    assert (
        f'\\"principalId\\": \\"{MSI}\\", \\"resourceId\\": \\"$GRAPH_SP_ID\\", \\"appRoleId\\": \\"$ROLE_ID\\"' in out
    )
    assert not no_az.log("sleep"), "no waiting without a signed-in az"


def _section(out: str, title: str) -> str:
    """The text of one `== title` section of the hook's output."""
    assert title in out, title
    return out.split(title, 1)[1].split("\n== ", 1)[0]


def test_with_az_it_resolves_the_ids_and_skips_granted_roles(fake: Fake) -> None:
    proc = fake.run(HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    out = _section(proc.stdout, FALLBACK)
    assert f'{{"principalId": "{MSI}", "resourceId": "graph-sp-id", "appRoleId": "role-content"}}' in out
    assert "# LearningAssignedCourse.ReadWrite.All: already granted" in out
    assert out.count("az rest --method POST") == 1
    assert "not visible" not in out
    assert not fake.log("sleep")


def test_it_waits_for_a_new_identity_to_replicate(fake: Fake) -> None:
    fake.write("sp-hidden", "2")
    proc = fake.run(HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    assert fake.log("sleep") == ["10", "10"]
    assert "not visible" not in proc.stdout
    assert "az rest --method POST" in proc.stdout


def test_it_says_to_run_again_when_the_identity_has_not_replicated(fake: Fake) -> None:
    fake.write("sp-hidden", "99")
    proc = fake.run(HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    assert len(fake.log("sleep")) == 5, "six lookups, five waits of 10 s"
    out = proc.stdout
    assert f"The service principal {MSI} is not visible in Microsoft Graph yet" in out
    assert "Request_ResourceNotFound" in out
    assert "Run 'azd hooks run postprovision' again in a few minutes." in out
    assert "az rest --method POST" in out, "the calls are still printed for later"


def test_nothing_to_do_when_the_deployment_granted_the_roles(no_az: Fake) -> None:
    proc = no_az.run(
        HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES, GRAPH_PERMISSIONS_GRANTED="true"
    )
    assert proc.returncode == 0
    fallback = _section(proc.stdout, FALLBACK)
    assert "Granted by the deployment to the managed identity" in fallback
    assert "az rest" not in fallback


@pytest.mark.parametrize("hook", [HOOK_SH, HOOK_PS1], ids=["sh", "ps1"])
def test_both_hooks_grant_through_the_graph_rest_call_and_look_roles_up_by_value(hook: Path) -> None:
    text = hook.read_text()
    assert "https://graph.microsoft.com/v1.0" in text
    assert "/servicePrincipals/" in text
    assert "/appRoleAssignments" in text
    assert "az ad sp show --id" in text
    assert GRAPH_APP_ID in text
    assert "appRoles[?value==" in text
    assert "allowedMemberTypes, 'Application'" in text
    assert text.rstrip().endswith("exit 0")


# --- the Viva Learning app ----------------------------------------------------------------------

# A stand-in `az` and `azd` for running the commands the hook prints: each call's arguments, one JSON
# list a line, and the ids the real ones would answer.
RECORDER = f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
with open("{{log}}", "a") as log:
    log.write(json.dumps(["{{name}}", *args]) + "\\n")
if args[:3] == ["ad", "app", "create"]:
    print("new-app-id")
elif "--query" in args:
    query = args[args.index("--query") + 1]
    print("perm-" + query.split("'")[1] if "'" in query else "obj-" + args[args.index("--id") + 1])
"""


def _run_printed(tmp_path: Path, commands: str) -> list[list[str]]:
    """Runs the printed commands with recording stand-ins; every `az`/`azd` call's arguments."""
    bin_dir = tmp_path / "run-bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    for name in ("az", "azd"):
        (bin_dir / name).write_text(RECORDER.format(log=log, name=name))
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "printed.sh"
    script.write_text(commands)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["sh", "-eu", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def _option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_without_an_app_it_prints_the_commands_that_create_it(fake: Fake, tmp_path: Path) -> None:
    """CREATE_VIVA_APP=false: the admin's commands, which really create the app as the template would."""
    proc = fake.run(HOOK_SH, **NO_APP)
    assert proc.returncode == 0
    out = _section(proc.stdout, "== Microsoft Graph sign-in (GRAPH_AUTH_MODE=managed-identity)")
    assert "CREATE_VIVA_APP=false" in out
    assert "Application Developer" in out
    assert "Cloud Application Administrator" in out
    printed = out[out.index("# 1. The app") : out.index("\nazd provision\n") + len("\nazd provision\n")]
    calls = _run_printed(tmp_path, printed)
    az = [c[1:] for c in calls if c[0] == "az"]

    [create] = [c for c in az if c[:3] == ["ad", "app", "create"]]
    assert _option(create, "--display-name") == "Viva Learning Sync (test)"
    assert _option(create, "--sign-in-audience") == "AzureADMyOrg"
    assert _option(create, "--public-client-redirect-uris") == "http://localhost"
    assert _option(create, "--is-fallback-public-client") == "true"

    [fic] = [c for c in az if c[:4] == ["ad", "app", "federated-credential", "create"]]
    assert _option(fic, "--id") == "new-app-id"
    credential = json.loads(_option(fic, "--parameters"))
    assert credential == {
        "name": "function-app-managed-identity",
        "issuer": ISSUER,
        "subject": MSI,
        "audiences": ["api://AzureADTokenExchange"],
    }
    assert ["ad", "sp", "create", "--id", "new-app-id"] in az

    added = [_option(c, "--api-permissions") for c in az if c[:4] == ["ad", "app", "permission", "add"]]
    assert sorted(added) == sorted(
        [f"perm-{role}=Role" for role in APP_ROLES.split(",")] + ["perm-LearningProvider.ReadWrite=Scope"]
    )
    assert all(_option(c, "--api") == GRAPH_APP_ID for c in az if c[:4] == ["ad", "app", "permission", "add"])

    posts = [c for c in az if c[:3] == ["rest", "--method", "POST"]]
    roles = [json.loads(_option(c, "--body")) for c in posts if _option(c, "--uri").endswith("/appRoleAssignments")]
    app_sp = "obj-new-app-id"
    assert {r["appRoleId"] for r in roles} == {f"perm-{role}" for role in APP_ROLES.split(",")}
    assert all(r["principalId"] == app_sp and r["resourceId"] == f"obj-{GRAPH_APP_ID}" for r in roles)
    assert all(_option(c, "--uri").endswith(f"/servicePrincipals/{app_sp}/appRoleAssignments") for c in posts[:-1])
    [grant] = [json.loads(_option(c, "--body")) for c in posts if _option(c, "--uri") == GRANTS_URI]
    assert grant == {
        "clientId": app_sp,
        "consentType": "AllPrincipals",
        "resourceId": f"obj-{GRAPH_APP_ID}",
        "scope": "LearningProvider.ReadWrite",
    }
    azd = [c[1:] for c in calls if c[0] == "azd"]
    assert azd == [
        ["env", "set", "VIVA_APP_CLIENT_ID", "new-app-id"],
        ["env", "set", "GRAPH_AUTH_MODE", "app"],
        ["provision"],
    ]


def test_without_an_app_the_fallback_and_its_risk_are_spelled_out(fake: Fake) -> None:
    proc = fake.run(HOOK_SH, **NO_APP)
    fallback = _section(proc.stdout, FALLBACK)
    assert "registering app" in fallback
    assert "unconfirmed" in fallback
    assert f"az rest --method POST --uri {ASSIGNMENTS_URI}" in fallback


def test_app_mode_without_an_app_is_a_warning(no_az: Fake) -> None:
    proc = no_az.run(HOOK_SH, **(NO_APP | {"GRAPH_AUTH_MODE_IN_USE": "app"}))
    assert proc.returncode == 0
    assert "WARNING: GRAPH_AUTH_MODE is app but there is no app" in proc.stdout
    assert FALLBACK not in proc.stdout


def test_with_the_app_it_prints_its_admin_consent_and_the_registration(fake: Fake) -> None:
    proc = fake.run(HOOK_SH, **WITH_APP)
    assert proc.returncode == 0
    out = _section(proc.stdout, "== Microsoft Graph sign-in (GRAPH_AUTH_MODE=app)")
    assert CLIENT in out
    assert MSI in out
    assert "# LearningContent.ReadWrite.All: already granted" in out
    for role_id in ("role-assigned", "role-self"):
        assert f'{{"principalId": "{APP_SP}", "resourceId": "graph-sp-id", "appRoleId": "{role_id}"}}' in out
    assert out.count(f"az rest --method POST --uri {APP_SP_ASSIGNMENTS_URI}") == 2
    assert (
        f'{{"clientId": "{APP_SP}", "consentType": "AllPrincipals", "resourceId": "graph-sp-id", '
        '"scope": "LearningProvider.ReadWrite"}' in out
    )
    assert "azd env set GRANT_GRAPH_PERMISSIONS true" in out
    assert f"vlsync provider register --client-id {CLIENT} --tenant-id {TENANT}" in out
    assert "--credential device-code" in out
    assert "vlsync doctor" in out
    assert "az ad app create" not in proc.stdout, "the app exists: nothing to create"
    assert FALLBACK not in proc.stdout, "app mode: no managed-identity roles"


def test_a_consented_scope_is_not_granted_again(fake: Fake) -> None:
    fake.write("grants.txt", "openid LearningProvider.ReadWrite\n")
    proc = fake.run(HOOK_SH, **WITH_APP)
    assert "# delegated LearningProvider.ReadWrite: already consented for all users" in proc.stdout
    assert GRANTS_URI not in proc.stdout


def test_without_az_the_app_consent_looks_the_ids_up(no_az: Fake) -> None:
    proc = no_az.run(HOOK_SH, **(WITH_APP | {"VIVA_APP_CREATED": "false"}))
    out = proc.stdout
    assert f"SP_ID=$(az ad sp show --id {CLIENT} --query id -o tsv)" in out
    assert out.count("az rest --method POST --uri https://graph.microsoft.com/v1.0/servicePrincipals/$SP_ID/") == 3
    assert f"az rest --method POST --uri {GRANTS_URI}" in out
    assert "azd env set GRANT_GRAPH_PERMISSIONS" not in out, "an app made by hand is not consented by the deployment"


def test_nothing_to_consent_when_the_deployment_created_and_consented_the_app(no_az: Fake) -> None:
    proc = no_az.run(HOOK_SH, **(WITH_APP | {"GRAPH_PERMISSIONS_GRANTED": "true"}))
    out = _section(proc.stdout, "== Microsoft Graph sign-in")
    assert "Admin consent granted by the deployment" in out
    assert "az rest" not in out
    assert "vlsync provider register" in out


def test_the_ps1_twin_covers_the_same_app_steps() -> None:
    text = HOOK_PS1.read_text()
    for needle in (
        "GRAPH_AUTH_MODE_IN_USE",
        "VIVA_APP_CLIENT_ID",
        "VIVA_APP_FIC_ISSUER",
        "VIVA_APP_FIC_AUDIENCE",
        "az ad app create",
        "--public-client-redirect-uris http://localhost --is-fallback-public-client true",
        "az ad app federated-credential create",
        "az ad sp create",
        "az ad app permission add",
        "oauth2PermissionScopes[?value==",
        "/oauth2PermissionGrants",
        "consentType = 'AllPrincipals'",
        "azd env set VIVA_APP_CLIENT_ID",
        "azd env set GRAPH_AUTH_MODE app",
        "Managed-identity fallback",
        "unconfirmed",
        "vlsync provider register --client-id",
        "--credential device-code",
        "vlsync doctor",
        "WARNING: GRAPH_AUTH_MODE is app but there is no app",
    ):
        assert needle in text, needle


# --- webhook secrets -----------------------------------------------------------------------------

SECRETS = {"AZURE_KEY_VAULT_NAME": "kv-test", "WEBHOOK_SECRET_NAMES": "demo-webhook-secret,other-secret"}
LISTING = "demo-webhook-secret\t2026-03-01T10:00:00+00:00\nother-secret\t2026-03-02T11:00:00+00:00\nunrelated\tx\n"
STAMP = "demo-webhook-secret=2026-03-01T10:00:00+00:00,other-secret=2026-03-02T11:00:00+00:00"


def test_a_missing_secret_is_named_with_the_commands_that_fix_it(fake: Fake) -> None:
    fake.write("secrets.tsv", "demo-webhook-secret\t2026-03-01T10:00:00+00:00\n")
    proc = fake.run(HOOK_SH, **APP, **SECRETS, WEBHOOK_SECRETS_LOADED="demo-webhook-secret=2026-03-01T10:00:00+00:00")
    assert proc.returncode == 0
    out = proc.stdout
    assert "Secret 'other-secret' is missing from Key Vault kv-test" in out
    assert "source-misconfigured" in out
    set_at = out.index("az keyvault secret set --vault-name kv-test --name other-secret ")
    assert out.index(f"az {RESTART}", set_at) > set_at, "storing a secret ends with a restart"
    assert not [c for c in fake.log("az") if c.startswith("functionapp restart")], "nothing changed: no restart"


def test_a_created_or_changed_secret_restarts_the_app_once(fake: Fake) -> None:
    fake.write("secrets.tsv", LISTING)
    proc = fake.run(HOOK_SH, **APP, **SECRETS, WEBHOOK_SECRETS_LOADED="demo-webhook-secret=2026-01-01T00:00:00+00:00")
    assert proc.returncode == 0
    assert RESTART in fake.log("az")
    assert f"env set WEBHOOK_SECRETS_LOADED {STAMP}" in fake.log("azd")
    assert "restarted func-api-abc" in proc.stdout
    again = fake.run(HOOK_SH, **APP, **SECRETS, WEBHOOK_SECRETS_LOADED=STAMP)
    assert again.returncode == 0
    assert fake.log("az").count(RESTART) == 1, "unchanged secrets: no second restart"
    assert "unchanged" in again.stdout


def test_without_access_to_the_vault_it_prints_the_restart(fake: Fake) -> None:
    proc = fake.run(HOOK_SH, **APP, **SECRETS)
    assert proc.returncode == 0
    assert "Could not list the secrets of Key Vault kv-test" in proc.stdout
    assert f"az {RESTART}" in proc.stdout
    assert RESTART not in fake.log("az")


def test_without_sources_it_says_the_secret_comes_first(no_az: Fake) -> None:
    proc = no_az.run(HOOK_SH, AZURE_KEY_VAULT_NAME="kv-test")
    assert proc.returncode == 0
    assert "store the source's secret in Key Vault kv-test first, then add the source" in proc.stdout


def test_sources_that_name_no_secret_are_not_reported_missing(no_az: Fake) -> None:
    """A Canvas source without fetch-back names no Key Vault secret (Canvas signs with public keys)."""
    proc = no_az.run(HOOK_SH, AZURE_KEY_VAULT_NAME="kv-test", WEBHOOK_SOURCE_NAMES="canvas")
    assert proc.returncode == 0
    assert "No source names a Key Vault secret" in proc.stdout
    assert "No webhook source configured yet" not in proc.stdout.split("== Webhook secrets", 1)[1]
    assert "No source names a Key Vault secret" in HOOK_PS1.read_text()


@pytest.mark.parametrize("hook", [HOOK_SH, HOOK_PS1], ids=["sh", "ps1"])
def test_both_hooks_restart_on_changed_secrets_and_wait_for_replication(hook: Path) -> None:
    text = hook.read_text()
    for needle in (
        "keyvault secret list",
        "attributes.updated",
        "az functionapp restart",
        "WEBHOOK_SECRETS_LOADED",
        "azd env set WEBHOOK_SECRETS_LOADED",
        "Request_ResourceNotFound",
        "azd hooks run postprovision",
        "function-keys.",
    ):
        assert needle in text, needle


# --- function keys -------------------------------------------------------------------------------

KEYS_ENV = APP | {"WEBHOOK_SOURCE_NAMES": "demo,lms-b"}


def test_one_key_per_source_created_only_when_missing(fake: Fake) -> None:
    fake.write("keys.txt", "default\ndemo\n")
    proc = fake.run(KEYS_SH, **KEYS_ENV)
    assert proc.returncode == 0
    sets = [c for c in fake.log("az") if c.startswith("functionapp function keys set")]
    assert sets == [
        "functionapp function keys set -g rg-test -n func-api-abc --function-name receive_webhook --key-name lms-b"
    ]
    assert "# demo: key exists" in proc.stdout
    assert "# lms-b: key created" in proc.stdout


def test_keys_wait_for_the_deployed_function(fake: Fake) -> None:
    proc = fake.run(KEYS_SH, **KEYS_ENV)
    assert proc.returncode == 0
    assert not [c for c in fake.log("az") if c.startswith("functionapp function keys set")]
    assert "receive_webhook is not deployed yet" in proc.stdout
    assert (
        "az functionapp function keys set -g rg-test -n func-api-abc --function-name receive_webhook --key-name demo"
        in proc.stdout
    )


def test_the_lms_gets_the_default_host_name_and_the_header(fake: Fake) -> None:
    fake.write("keys.txt", "demo\nlms-b\n")
    proc = fake.run(KEYS_SH, **KEYS_ENV)
    out = proc.stdout
    assert f"https://{APP['SERVICE_API_HOST_NAME']}/api/webhooks/<source>" in out
    assert "x-functions-key" in out
    assert "keys delete -g rg-test -n func-api-abc --function-name receive_webhook --key-name <source>" in out
    assert "?code=" not in out


def test_postprovision_also_creates_the_keys(fake: Fake) -> None:
    fake.write("keys.txt", "default\n")
    proc = fake.run(HOOK_SH, **KEYS_ENV)
    assert proc.returncode == 0
    assert "== Function keys (one per source)" in proc.stdout
    assert len([c for c in fake.log("az") if c.startswith("functionapp function keys set")]) == 2


def test_both_key_hooks_create_function_level_keys_only(infra_text: dict[str, str]) -> None:
    for hook in (KEYS_SH, KEYS_PS1):
        text = hook.read_text()
        assert "az functionapp function keys" in text
        assert "receive_webhook" in text
        assert "SERVICE_API_HOST_NAME" in text
        assert "x-functions-key" in text
        assert re.search(r"delete \$\w+ --key-name", text), "how to revoke a key"
        assert "functionapp keys set" not in text, "no host keys"
        assert text.rstrip().endswith("exit 0")
    # Not Bicep resources: they cannot exist before the code (infra/app/function.bicep says why).
    for text in infra_text.values():
        assert "functionKeys" not in re.sub(r"//.*", "", text)
        assert "sites/functions/keys" not in re.sub(r"//.*", "", text)


# --- the order docs/deploy.md gives -------------------------------------------------------------


def _readme_deploy() -> str:
    return (REPO / "README.md").read_text().split("\n## Deploy", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", ["docs/deploy.md", "README.md#Deploy"])
def test_every_documented_secret_set_ends_with_a_restart(name: str) -> None:
    text = DOC.read_text() if name == "docs/deploy.md" else _readme_deploy()
    sets = [m.start() for m in re.finditer(r"az keyvault secret set", text)]
    assert sets, name
    for here, following in zip(sets, [*sets[1:], len(text)], strict=True):
        assert "az functionapp restart" in text[here:following], f"{name}: a secret set at {here} without a restart"


def test_docs_store_the_secret_before_adding_the_source() -> None:
    text = DOC.read_text()
    walkthrough = text.split("## From nothing to a working source", 1)[1].split("\n## ", 1)[0]
    assert walkthrough.index("Store the source's webhook secret") < walkthrough.index("Add the source")
    assert text.index("## Store the webhook secret first") < text.index("## Add a webhook source")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    first_secret = next(i for i, b in enumerate(blocks) if "az keyvault secret set" in b)
    first_source = next(i for i, b in enumerate(blocks) if "azd env set VIVA_SOURCES" in b)
    assert first_secret < first_source, "the first command block that adds a source comes after the secret"
    readme = _readme_deploy()
    assert readme.index("az keyvault secret set") < readme.index("azd env set VIVA_SOURCES")
    assert "24 hours" in text
    assert "24 hours" in readme


def test_docs_rotate_with_two_secrets_and_a_restart_after_each_change() -> None:
    rotation = DOC.read_text().split("## Rotate a webhook secret", 1)[1].split("\n## ", 1)[0]
    assert "space-separated" in rotation
    assert '--value "$OLD whsec_NEW..."' in rotation
    assert rotation.count("az keyvault secret set") == 2
    assert rotation.count("az functionapp restart") == 2


def test_docs_prefer_the_header_and_show_how_to_create_and_revoke_a_key() -> None:
    text = DOC.read_text()
    code = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL))
    assert "?code=" not in code, "examples send the key in the x-functions-key header"
    assert "x-functions-key" in text
    assert "--function-name receive_webhook --key-name demo" in code
    assert "function keys delete" in code
    assert "?code=" not in _readme_deploy()


def test_az_calls_use_azds_subscription(fake: Fake) -> None:
    """az's default subscription need not be the one azd deployed to."""
    fake.write("secrets.tsv", LISTING)
    fake.write("keys.txt", "default\n")
    sub = "99999999-8888-7777-6666-555555555555"
    proc = fake.run(HOOK_SH, **APP, **SECRETS, WEBHOOK_SOURCE_NAMES="demo", AZURE_SUBSCRIPTION_ID=sub)
    assert proc.returncode == 0
    calls = [c for c in fake.log("az") if c.startswith("functionapp")]
    assert calls
    assert all(f"--subscription {sub}" in c for c in calls), calls
