"""`scripts/scenarios.sh` performs scenarios 1-10 with `vlsync` against the `make dev` stack."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.azurite import free_port
from tests.conftest import REPO
from tests.stack.test_make_dev import StackProcess
from vlsync.envfile import read as read_env_file

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Path]:
    ports = {name: free_port() for name in ("host", "graph", "identity", "blob", "queue", "table")}
    process = StackProcess(tmp_path / "dev", ports)
    try:
        process.wait_ready()
        yield tmp_path / "dev" / "stack.env"
    finally:
        if process.proc.poll() is None:
            process.stop()


def ensure_vlsync() -> Path:
    """The console script of the editable install (the Makefile installs it; do it here if missing)."""
    script = VENV_BIN / "vlsync"
    if not script.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-e", ".", "--no-deps", "-q", "--disable-pip-version-check"],
            cwd=REPO,
            check=True,
            timeout=300,
        )
    assert script.exists()
    return script


def test_scenarios_script_runs_all_ten_against_the_stack(stack: Path, tmp_path: Path) -> None:
    ensure_vlsync()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLSYNC_", "AZURE_", "IDENTITY_"))}
    env.update(read_env_file(stack))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"

    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "scenarios.sh")],
        cwd=tmp_path,  # not the repo: the settings come from the environment, as after sourcing stack.env
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in result.stderr

    new_id = re.search(r"registrationId ([0-9a-f-]{36})", out)
    assert new_id, out
    for number in range(1, 11):
        assert f"\n== {number}. " in out
    expected = [
        f"updated provider {new_id.group(1)}: displayName, isCourseActivitySyncEnabled",
        f"registration {new_id.group(1)} disabled",
        "deactivated 0 item(s)",
        f"registration {new_id.group(1)} enabled: released 0 held command(s)",
        "Scenario LMS (renamed)",  # get
        "provider(s)",  # list
        f"deleted provider {new_id.group(1)}",
        f"upserted 3 item(s) into registration {env['REGISTRATION_ID']}",
        f"\n3 item(s) in registration {env['REGISTRATION_ID']}",
        "upsert at",  # status: last push ...
        "by cli",
        "(not yet)",  # ... and searchable by push + 24 h
        "fr-fr",  # get of the hostile id (its languageTag is only shown by get)
        "deleted scenario-101 from registration",
        "deleted O'Brien/1 + #2 100% Ünïcødé from registration",
        "all 10 scenarios done",
    ]
    positions = [out.find(line) for line in expected]
    assert all(p >= 0 for p in positions), [line for line, p in zip(expected, positions, strict=True) if p < 0]
    assert positions == sorted(positions), out  # in order
