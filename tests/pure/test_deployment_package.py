"""What `azd deploy` ships: the files `.funcignore` lets through, and the packages `requirements.txt` installs.

The function app deploys only what its functions import. The operator CLI (``vlsync/``, click, rich)
and the local stack stay on the operator's machine.
"""

from __future__ import annotations

import ast
import re
import subprocess
from importlib.metadata import packages_distributions
from pathlib import Path

import pathspec

REPO = Path(__file__).resolve().parents[2]
# Not imported by our code, yet needed at run time; each has its reason in requirements.txt.
RUNTIME_ONLY = {"aiohttp", "sniffio"}


def deployed_files() -> list[str]:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, check=True, capture_output=True, text=True).stdout
    ignore = pathspec.GitIgnoreSpec.from_lines((REPO / ".funcignore").read_text().splitlines())
    return [path for path in tracked.splitlines() if not ignore.match_file(path)]


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\s=<>~!\[;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def imported_top_level(files: list[str]) -> set[str]:
    names: set[str] = set()
    for path in files:
        if path.endswith(".py"):
            for node in ast.walk(ast.parse((REPO / path).read_text(), path)):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names


def test_the_package_holds_the_app_and_nothing_of_the_cli_or_the_local_stack() -> None:
    files = deployed_files()
    assert {"function_app.py", "host.json", "requirements.txt"} <= set(files)
    assert any(f.startswith("handlers/") for f in files)
    assert any(f.startswith("shared/") for f in files)
    strays = [f for f in files if f.split("/")[0] in {"vlsync", "local", "tests", "infra", "scripts", "docs"}]
    assert strays == []
    assert {f for f in files if f.startswith("requirements")} == {"requirements.txt"}


def test_deployed_code_imports_neither_the_cli_nor_its_libraries() -> None:
    imported = imported_top_level(deployed_files())
    assert imported & {"vlsync", "local", "tests", "click", "rich"} == set()


def test_deployed_requirements_are_what_the_functions_import() -> None:
    deployed = requirement_names(REPO / "requirements.txt")
    cli_only = requirement_names(REPO / "requirements-cli.txt") - deployed
    assert cli_only >= {"click", "rich"}, "the CLI's own libraries live in requirements-cli.txt"
    assert deployed & {"click", "rich"} == set()
    distributions = packages_distributions()
    imported = {
        dist.lower().replace("_", "-")
        for module in imported_top_level(deployed_files())
        for dist in distributions.get(module, [])
    }
    # azure-* distributions share the `azure` namespace: count each one only if its own module is imported.
    unused = {
        name
        for name in deployed - RUNTIME_ONLY
        if name not in imported or (name.startswith("azure-") and not _azure_module_imported(name))
    }
    assert unused == set(), f"deployed but never imported by the functions: {sorted(unused)}"


def _azure_module_imported(distribution: str) -> bool:
    module = {
        "azure-functions": "azure.functions",
        "azure-identity": "azure.identity",
        "azure-storage-queue": "azure.storage.queue",
        "azure-storage-blob": "azure.storage.blob",
        "azure-data-tables": "azure.data.tables",
        "azure-monitor-opentelemetry": "azure.monitor.opentelemetry",
    }[distribution]
    pattern = re.compile(rf"^\s*(from|import) {re.escape(module)}\b", re.MULTILINE)
    return any(pattern.search((REPO / f).read_text()) for f in deployed_files() if f.endswith(".py"))
