"""Offline checks of the Azure infrastructure (infra/, azure.yaml, .funcignore, docs/deploy.md).

The tools run from their own virtual environment, ``.venv-infra``, never from the app's: checkov's
pins conflict with ours, and checkov pins ``pycep-parser==0.5.1``, which cannot parse
``extension``, user-defined types or lambdas, so a newer pycep sits beside it in a separate folder
(``--target``) and is put first on ``PYTHONPATH`` only for the parse step.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
INFRA_VENV = REPO / ".venv-infra"
INFRA_PYTHON = INFRA_VENV / "bin" / "python"
CHECKOV = INFRA_VENV / "bin" / "checkov"
PYCEP_NEW = INFRA_VENV / "pycep-0.7.1"
CHECKOV_VERSION = "3.3.30"
PYCEP_NEW_VERSION = "0.7.1"

SETUP = (
    f"python3 -m venv .venv-infra && .venv-infra/bin/pip install checkov=={CHECKOV_VERSION} lark==1.3.1 && "
    f".venv-infra/bin/pip install --no-deps --target .venv-infra/pycep-{PYCEP_NEW_VERSION} "
    f"pycep-parser=={PYCEP_NEW_VERSION}"
)


def require_infra_tools() -> None:
    missing = [str(p.relative_to(REPO)) for p in (INFRA_PYTHON, CHECKOV, PYCEP_NEW / "pycep") if not p.exists()]
    if missing:
        pytest.fail(
            f"infra tools missing ({', '.join(missing)}): `make infra-tools` creates them, or run: {SETUP}",
            pytrace=False,
        )


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="session")
def infra_dump() -> dict[str, Any]:
    """Every .bicep file parsed by pycep 0.7.1, and azure.yaml, from the infra venv."""
    require_infra_tools()
    env = _clean_env() | {"PYTHONPATH": str(PYCEP_NEW)}
    proc = _run([str(INFRA_PYTHON), str(Path(__file__).with_name("_infra_dump.py")), str(REPO)], env, 120)
    assert proc.returncode == 0, proc.stderr
    dump: dict[str, Any] = json.loads(proc.stdout)
    return dump


@pytest.fixture(scope="session")
def bicep(infra_dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Parse tree per file, keyed by path relative to infra/ (``main.bicep``, ``app/storage.bicep``)."""
    trees = {}
    for path, result in infra_dump["bicep"].items():
        assert "tree" in result, f"{path}: {result.get('error')}"
        trees[path.removeprefix("infra/")] = result["tree"]
    return trees


@pytest.fixture(scope="session")
def checkov_report() -> dict[str, Any]:
    """One offline checkov run over infra/ (JSON report)."""
    require_infra_tools()
    env = _clean_env() | {"BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    args = [str(CHECKOV), "-d", "infra", "--framework", "bicep", "--skip-download", "--compact", "-o", "json"]
    proc = _run(args, env, 300)
    assert proc.stdout.strip(), f"checkov printed no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    if isinstance(report, list):  # one entry per framework; only bicep here
        [report] = report
    report["_exit_code"] = proc.returncode
    return report  # type: ignore[no-any-return]


@pytest.fixture
def infra_text() -> dict[str, str]:
    return {p.relative_to(INFRA).as_posix(): p.read_text() for p in sorted(INFRA.rglob("*.bicep"))}


_OLD_PYCEP = """
import sys
from pycep import BicepParser
try:
    BicepParser().parse(text=sys.stdin.read())
except Exception as exc:
    print(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
"""


@pytest.fixture(scope="session")
def old_pycep_parse() -> Any:
    """Parse Bicep text with checkov's own pycep (0.5.1): None, or the parser's error."""
    require_infra_tools()

    def parse(text: str) -> str | None:
        proc = subprocess.run(
            [str(INFRA_PYTHON), "-c", _OLD_PYCEP],
            input=text,
            cwd=REPO,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip() or None

    return parse
