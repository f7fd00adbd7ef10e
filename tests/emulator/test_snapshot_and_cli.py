"""Snapshot persistence across restarts, and the CLI the stack launcher runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from local.graph_emulator import EmulatorState, run_in_thread
from shared.odata import key_literal

from .conftest import ADMIN, APP_READ, APP_WRITE, CONTENT_BODY, PROVIDER_BODY, PROVIDERS, REPO_ROOT, content_url


def test_snapshot_survives_restart(tmp_path: Path) -> None:
    snapshot = tmp_path / "state" / "graph.json"
    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url) as client:
        provider_id = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN).json()["id"]
        url = content_url(provider_id, "(externalId=" + key_literal("O'Brien/é") + ")")
        content_id = client.patch(url, json=CONTENT_BODY, headers=APP_WRITE).json()["id"]
    assert json.loads(snapshot.read_text(encoding="utf-8"))["version"] == 1
    assert [p.name for p in snapshot.parent.iterdir()] == ["graph.json"]  # no temp files left

    with run_in_thread(snapshot=snapshot) as emu, httpx.Client(base_url=emu.url) as client:
        got = client.get(url, headers=APP_READ)
        assert got.status_code == 200
        assert got.json()["id"] == content_id
        assert got.json()["externalId"] == "O'Brien/é"
        assert client.get(f"{PROVIDERS}/{provider_id}", headers=ADMIN).status_code == 200
        assert client.delete(url + "/$ref", headers=APP_WRITE).status_code == 204

    assert EmulatorState(snapshot).contents(next(iter(json.loads(snapshot.read_text())["tenants"])), provider_id) == []


def test_bad_snapshot_fails_loudly(tmp_path: Path) -> None:
    snapshot = tmp_path / "graph.json"
    snapshot.write_text('{"version": 99, "tenants": {}}')
    with pytest.raises(ValueError, match="snapshot version"):
        EmulatorState(snapshot)


def test_cli_prints_listening_line_and_serves(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "local.graph_emulator", "--host", "127.0.0.1", "--port", "0", "--page-size", "7"]
    command += ["--delete-forms", "both", "--patch-semantics", "replace", "--visibility-lag-ms", "5"]
    command += ["--app-binding", "lenient", "--batch", "off", "--latency-ms", "3", "--fsync", "always"]
    with subprocess.Popen(
        [*command, "--snapshot", str(tmp_path / "s.json")],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            prefix = "graph emulator listening on http://127.0.0.1:"
            assert line.startswith(prefix), line
            port = int(line.removeprefix(prefix))
            assert port > 0
            health = httpx.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=5).json()
            assert health == {"status": "ok", "pageSize": 7, "snapshot": str(tmp_path / "s.json")}
            modes = httpx.get(f"http://127.0.0.1:{port}/_emulator/settings", timeout=5).json()
            assert modes == {
                "deleteForms": "both",
                "patchSemantics": "replace",
                "visibilityLagMs": 5,
                "appBinding": "lenient",
                "batch": "off",
                "latencyMs": 3,
            }
            response = httpx.get(f"http://127.0.0.1:{port}{PROVIDERS}", headers=ADMIN, timeout=5)
            assert response.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert time.monotonic() - started < 5
    assert "graph request method=GET" in stderr  # structured request logging
