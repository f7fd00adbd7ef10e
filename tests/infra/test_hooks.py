"""The azd hooks, run with a stand-in `az`, `azd` and `sleep`; and the order docs/deploy.md gives.

postprovision: the Graph grant for an admin (ids looked up by value, waiting for a new identity to
replicate), the webhook secrets (a restart when one was created or changed, because App Service
caches Key Vault references for up to 24 hours), then the sources' function keys. postdeploy: the
function keys. Neither ever fails.
"""

from __future__ import annotations

import os
import re
import subprocess
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
FAKE_AZ = """#!/bin/sh
dir="{dir}"
echo "$*" >> "$dir/az.log"
case "$*" in
  *"appRoles[?contains"*)
    printf 'LearningContent.ReadWrite.All\\trole-content\\n'
    printf 'LearningAssignedCourse.ReadWrite.All\\trole-assigned\\n' ;;
  "ad sp show --id {graph} --query id -o tsv") echo graph-sp-id ;;
  "ad sp show --id {msi} --query id -o tsv")
    hidden=$(cat "$dir/sp-hidden" 2>/dev/null || echo 0)
    if [ "$hidden" -gt 0 ]; then echo $((hidden - 1)) > "$dir/sp-hidden"; exit 3; fi
    echo {msi} ;;
  *appRoleAssignments*) echo role-assigned ;;
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
            "az": az.format(dir=tmp_path, graph=GRAPH_APP_ID, msi=MSI),
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


def test_with_az_it_resolves_the_ids_and_skips_granted_roles(fake: Fake) -> None:
    proc = fake.run(HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    out = proc.stdout
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
    assert f"service principal ({MSI}) is not visible in Microsoft Graph yet" in out
    assert "Request_ResourceNotFound" in out
    assert "Run 'azd hooks run postprovision' again in a few minutes." in out
    assert "az rest --method POST" in out, "the calls are still printed for later"


def test_nothing_to_do_when_the_deployment_granted_the_roles(no_az: Fake) -> None:
    proc = no_az.run(
        HOOK_SH, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES, GRAPH_PERMISSIONS_GRANTED="true"
    )
    assert proc.returncode == 0
    assert "Granted by the deployment" in proc.stdout
    assert "az rest" not in proc.stdout


@pytest.mark.parametrize("hook", [HOOK_SH, HOOK_PS1], ids=["sh", "ps1"])
def test_both_hooks_grant_through_the_graph_rest_call_and_look_roles_up_by_value(hook: Path) -> None:
    text = hook.read_text()
    assert "https://graph.microsoft.com/v1.0/servicePrincipals/" in text
    assert "/appRoleAssignments" in text
    assert "az ad sp show --id" in text
    assert GRAPH_APP_ID in text
    assert "appRoles[?value==" in text
    assert "allowedMemberTypes, 'Application'" in text
    assert text.rstrip().endswith("exit 0")


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
