"""The azd postprovision hook prints the Graph grant for an admin (ids looked up by value) and never fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import INFRA, REPO

HOOK_SH = INFRA / "hooks/postprovision.sh"
HOOK_PS1 = INFRA / "hooks/postprovision.ps1"
MSI = "11111111-2222-3333-4444-555555555555"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ROLES = "LearningContent.ReadWrite.All,LearningAssignedCourse.ReadWrite.All"
ASSIGNMENTS_URI = f"https://graph.microsoft.com/v1.0/servicePrincipals/{MSI}/appRoleAssignments"

# A stand-in `az`: Graph's service principal, two of its application roles, one already assigned.
FAKE_AZ = """#!/bin/sh
case "$*" in
  *"appRoles[?contains"*)
    printf 'LearningContent.ReadWrite.All\\trole-content\\n'
    printf 'LearningAssignedCourse.ReadWrite.All\\trole-assigned\\n' ;;
  "ad sp show --id 00000003-0000-0000-c000-000000000000 --query id -o tsv") echo graph-sp-id ;;
  *appRoleAssignments*) echo role-assigned ;;
  *) exit 1 ;;
esac
"""
NO_AZ = "#!/bin/sh\necho 'Please run az login' >&2\nexit 1\n"


def run_hook(tmp_path: Path, az: str, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "az").write_text(az)
    (bin_dir / "az").chmod(0o755)
    environ = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path)} | env
    return subprocess.run(["sh", str(HOOK_SH)], env=environ, capture_output=True, text=True, timeout=30, check=False)


def test_azure_yaml_runs_the_hooks(infra_dump: dict[str, Any]) -> None:
    hooks = infra_dump["azure_yaml"]["hooks"]["postprovision"]
    assert hooks["posix"] == {"shell": "sh", "run": "./infra/hooks/postprovision.sh"}
    assert hooks["windows"] == {"shell": "pwsh", "run": "./infra/hooks/postprovision.ps1"}
    assert (REPO / hooks["posix"]["run"]).is_file()
    assert (REPO / hooks["windows"]["run"]).is_file()


def test_hook_is_valid_posix_sh() -> None:
    proc = subprocess.run(["sh", "-n", str(HOOK_SH)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_without_a_signed_in_az_it_prints_the_lookups_and_calls(tmp_path: Path) -> None:
    proc = run_hook(
        tmp_path,
        NO_AZ,
        AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI,
        GRAPH_APP_ROLES=ROLES,
        GRAPH_PERMISSIONS_GRANTED="false",
    )
    assert proc.returncode == 0
    out = proc.stdout
    assert f"GRAPH_SP_ID=$(az ad sp show --id {GRAPH_APP_ID} --query id -o tsv)" in out
    for role in ROLES.split(","):
        assert f"--query \"appRoles[?value=='{role}'].id\"" in out
    assert out.count(f"az rest --method POST --uri {ASSIGNMENTS_URI}") == 2
    assert (
        f'\\"principalId\\": \\"{MSI}\\", \\"resourceId\\": \\"$GRAPH_SP_ID\\", \\"appRoleId\\": \\"$ROLE_ID\\"' in out
    )


def test_with_az_it_resolves_the_ids_and_skips_granted_roles(tmp_path: Path) -> None:
    proc = run_hook(tmp_path, FAKE_AZ, AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI, GRAPH_APP_ROLES=ROLES)
    assert proc.returncode == 0
    out = proc.stdout
    assert f'{{"principalId": "{MSI}", "resourceId": "graph-sp-id", "appRoleId": "role-content"}}' in out
    assert "# LearningAssignedCourse.ReadWrite.All: already granted" in out
    assert out.count("az rest --method POST") == 1


def test_nothing_to_do_when_the_deployment_granted_the_roles(tmp_path: Path) -> None:
    proc = run_hook(
        tmp_path,
        NO_AZ,
        AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI,
        GRAPH_APP_ROLES=ROLES,
        GRAPH_PERMISSIONS_GRANTED="true",
    )
    assert proc.returncode == 0
    assert "Granted by the deployment" in proc.stdout
    assert "az rest" not in proc.stdout


def test_it_lists_the_webhook_secrets_to_set(tmp_path: Path) -> None:
    proc = run_hook(
        tmp_path,
        NO_AZ,
        AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=MSI,
        AZURE_KEY_VAULT_NAME="kv-test",
        WEBHOOK_SECRET_NAMES="demo-webhook-secret,other-secret",
    )
    assert proc.returncode == 0
    for name in ("demo-webhook-secret", "other-secret"):
        assert f"az keyvault secret set --vault-name kv-test --name {name} " in proc.stdout


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
