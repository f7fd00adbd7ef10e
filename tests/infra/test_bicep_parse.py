"""Every Bicep file parses, and checkov reads every file but the two that need `extension`.

checkov pins pycep 0.5.1, which stops at the `extension` keyword, lambdas other than filter(),
user-defined types and newer functions such as cidrSubnet(). A file checkov cannot parse is a file
none of its checks cover, so "0 failed" would say nothing about it. Only the Microsoft Graph files,
app/graph-permissions.bicep and app/viva-app.bicep, may be such files: the Microsoft Graph extension
cannot be declared without `extension`, and they hold only Microsoft.Graph resources, which checkov
has no checks for. They are parsed with pycep 0.7.1 and checked on their own here instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .bicep_tree import body, resources
from .conftest import INFRA, PYCEP_NEW, PYCEP_NEW_VERSION

MODULES = {
    "identity.bicep",
    "storage.bicep",
    "monitoring.bicep",
    "keyvault.bicep",
    "diagnostics.bicep",
    "network.bicep",
    "private-endpoints.bicep",
    "sources.bicep",
    "rbac.bicep",
    "function.bicep",
    "graph-permissions.bicep",
    "viva-app.bicep",
}
# The only files checkov may fail to parse, and why (see the module docstring).
CHECKOV_UNPARSABLE = {"app/graph-permissions.bicep", "app/viva-app.bicep"}
# The Microsoft.Graph resource types each of them may declare (pycep keeps a nested resource's
# `@version` in its type; it is cut off before comparing).
GRAPH_TYPES = {
    "app/graph-permissions.bicep": {
        "Microsoft.Graph/servicePrincipals",
        "Microsoft.Graph/appRoleAssignedTo",
        "Microsoft.Graph/oauth2PermissionGrants",
    },
    "app/viva-app.bicep": {
        "Microsoft.Graph/servicePrincipals",
        "Microsoft.Graph/applications",
        "Microsoft.Graph/applications/federatedIdentityCredentials",
    },
}
GRAPH_EXTENSION = re.compile(r"^extension microsoftGraphV1\n", re.MULTILINE)


def test_the_newer_pycep_is_the_one_parsing(infra_dump: dict[str, Any]) -> None:
    assert infra_dump["pycep"] == PYCEP_NEW_VERSION
    assert Path(infra_dump["pycep_path"]).is_relative_to(PYCEP_NEW)


def test_every_bicep_file_parses(infra_dump: dict[str, Any]) -> None:
    errors = {path: result["error"] for path, result in infra_dump["bicep"].items() if "error" in result}
    assert not errors
    assert "infra/main.bicep" in infra_dump["bicep"]


def test_main_is_composed_of_the_small_modules(bicep: dict[str, dict[str, Any]]) -> None:
    assert {p.name for p in (INFRA / "app").glob("*.bicep")} == MODULES
    used = {m["detail"]["path"] for m in bicep["main.bicep"]["modules"].values()}
    assert used == {f"app/{name}" for name in MODULES}
    assert all(m["type"] == "local" for m in bicep["main.bicep"]["modules"].values()), "no registry modules"


def test_checkov_parses_every_file_but_the_graph_extension_files(checkov_report: dict[str, Any]) -> None:
    unparsed = {Path(p).relative_to(INFRA).as_posix() for p in checkov_report["results"]["parsing_errors"]}
    assert unparsed == CHECKOV_UNPARSABLE
    assert checkov_report["summary"]["parsing_errors"] == len(CHECKOV_UNPARSABLE)


def test_graph_permissions_fails_checkov_only_for_the_extension_keyword(
    old_pycep_parse: Any, infra_text: dict[str, str]
) -> None:
    """Without its `extension` line, checkov's own pycep reads the file: nothing else is out of its reach."""
    text = infra_text["app/graph-permissions.bicep"]
    assert GRAPH_EXTENSION.search(text)
    assert old_pycep_parse(text) is not None, "expected checkov's pycep to fail on `extension`"
    assert old_pycep_parse(GRAPH_EXTENSION.sub("", text)) is None


def test_viva_app_fails_checkov_for_the_extension_keyword(old_pycep_parse: Any, infra_text: dict[str, str]) -> None:
    """viva-app.bicep also maps with a lambda (map()), which checkov's pycep cannot read either."""
    text = infra_text["app/viva-app.bicep"]
    assert GRAPH_EXTENSION.search(text)
    assert old_pycep_parse(text) is not None


@pytest.mark.parametrize("path", sorted(CHECKOV_UNPARSABLE))
def test_the_graph_extension_files_hold_only_graph_resources(bicep: dict[str, dict[str, Any]], path: str) -> None:
    tree = bicep[path]
    types = {r["type"].split("@")[0] for r in resources(tree, existing=None).values()}
    assert types == GRAPH_TYPES[path]
    assert all(r["api_version"] == "v1.0" for r in resources(tree, existing=None).values())
    assert not tree.get("modules")


def test_no_file_uses_syntax_checkov_cannot_read(infra_text: dict[str, str], bicep: dict[str, dict[str, Any]]) -> None:
    newer = re.compile(
        r"^(extension|import|type)\s|@sealed|=>|\b(map|toObject|reduce|items|cidrSubnet|objectKeys)\(", re.MULTILINE
    )
    for path, text in infra_text.items():
        code = "\n".join(line.split("//")[0] for line in text.splitlines())
        uses_newer = bool(newer.search(code))
        assert uses_newer == (path in CHECKOV_UNPARSABLE), path
    for path in CHECKOV_UNPARSABLE:
        azure = [
            r["type"] for r in resources(bicep[path], existing=None).values() if r["type"].startswith("Microsoft.")
        ]
        assert all(t.startswith("Microsoft.Graph/") for t in azure), (path, azure)


def test_sources_is_a_resource_free_mapping(bicep: dict[str, dict[str, Any]]) -> None:
    tree = bicep["app/sources.bicep"]
    assert not tree.get("resources")
    assert "types" not in tree or not tree["types"]
    assert tree["parameters"]["sources"]["type"] == "array"
    assert body(bicep["main.bicep"]["modules"]["webhookSources"])["params"]["sources"] == "sources"
