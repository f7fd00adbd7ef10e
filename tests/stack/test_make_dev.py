"""`make dev`'s stack as a user runs it: start, send signed events with the sender, read Graph, stop, restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from local.azurite import free_port
from tests.conftest import REPO
from vlsync.envfile import read as read_env_file

READY_TIMEOUT = 120  # the promise: ready within 2 minutes on a clean machine


class StackProcess:
    def __init__(self, dev_dir: Path, ports: dict[str, int], *args: str) -> None:
        env = {**os.environ, "VLS_DEV_DIR": str(dev_dir), "PYTHONUNBUFFERED": "1"}
        for key in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID", "SOURCES", "GRAPH_BASE_URL"):
            env.pop(key, None)
        env.update({f"VLS_{name.upper()}_PORT": str(port) for name, port in ports.items()})
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local.stack", "--no-func", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self) -> float:
        started = time.monotonic()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.monotonic() - started < READY_TIMEOUT:
            line = self.proc.stdout.readline()
            if line:
                self.output.append(line)
                if line.startswith("stop with Ctrl-C"):  # printed after the ready line and the send command
                    return time.monotonic() - started
            elif self.proc.poll() is not None:
                break
            else:
                time.sleep(0.05)
        raise AssertionError("stack not ready:\n" + "".join(self.output))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=40)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def ports() -> dict[str, int]:
    return {
        name: free_port() for name in ("host", "graph", "identity", "identity_tls", "lms", "blob", "queue", "table")
    }


@pytest.fixture
def stack_process(tmp_path: Path, ports: dict[str, int]) -> Iterator[StackProcess]:
    process = StackProcess(tmp_path / "dev", ports)
    yield process
    if process.proc.poll() is None:
        process.stop()


def send(env_file: Path, sample: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "local.send", "--env-file", str(env_file), f"local/samples/{sample}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def graph_get(env: dict[str, str], external_id: str) -> httpx.Response:
    token = httpx.get(
        env["IDENTITY_ENDPOINT"],
        params={"api-version": "2019-08-01", "resource": "https://graph.microsoft.com"},
        headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
        timeout=10,
    ).json()["access_token"]
    url = (
        f"{env['GRAPH_BASE_URL']}/v1.0/employeeExperience/learningProviders/{env['REGISTRATION_ID']}"
        f"/learningContents(externalId='{external_id}')"
    )
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def eventually(check: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_make_dev_stack_end_to_end(stack_process: StackProcess, tmp_path: Path, ports: dict[str, int]) -> None:
    stack_process.wait_ready()
    env_file = tmp_path / "dev" / "stack.env"
    env = read_env_file(env_file)
    assert set(env) >= {
        "INTAKE_URL", "GRAPH_BASE_URL", "IDENTITY_ENDPOINT", "IDENTITY_HEADER",
        "REGISTRATION_ID", "DEMO_SOURCE", "DEMO_WEBHOOK_SECRET",
    }  # fmt: skip
    assert any(line.startswith("ready: webhooks at") for line in stack_process.output)
    assert any("-m local.send" in line for line in stack_process.output)

    sent = send(env_file, "course-upserted.json")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert sent.stdout.startswith("202")
    assert eventually(lambda: graph_get(env, "demo-course-101").status_code == 200)
    assert graph_get(env, "demo-course-101").json()["title"] == "Safety basics"

    # One app (issue 13): the demo provider was registered through the app, and the worker signed in as
    # that app by the managed-identity exchange (a token for the exchange audience, then Entra's route).
    providers = httpx.get(f"{env['GRAPH_BASE_URL']}/_emulator/providers", timeout=10).json()["value"]
    [demo_provider] = [p for p in providers if p["id"] == env["REGISTRATION_ID"]]
    assert demo_provider["registeredByAppId"] == env["VIVA_APP_CLIENT_ID"]
    identity_base = env["IDENTITY_ENDPOINT"].removesuffix("/msi/token")
    log = httpx.get(f"{identity_base}/_identity/requests", timeout=10).json()["requests"]
    assert any(e["path"] == "/msi/token" and "AzureADTokenExchange" in e["query"].get("resource", "") for e in log)
    assert any(e["path"].endswith("/oauth2/v2.0/token") and e["status"] == 200 for e in log)
    assert env["GRAPH_AUTH_MODE"] == "app"

    # A wrongly signed event: 401, and nothing changes.
    bad = subprocess.run(
        [sys.executable, "-m", "local.send", "--env-file", str(env_file), "--secret",
         "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==", "local/samples/course-deleted.json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.stdout.startswith("401")
    time.sleep(1)
    assert graph_get(env, "demo-course-101").status_code == 200

    # level "expert": 400 naming /data/level.
    sample = (REPO / "local/samples/course-upserted.json").read_text().replace('"beginner"', '"expert"')
    (tmp_path / "expert.json").write_text(sample)
    rejected = subprocess.run(
        [sys.executable, "-m", "local.send", "--env-file", str(env_file), str(tmp_path / "expert.json")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rejected.stdout.startswith("400")
    assert re.search(r'"pointer": "/data/level"', rejected.stdout)

    assert send(env_file, "course-deleted.json").stdout.startswith("202")
    assert eventually(lambda: graph_get(env, "demo-course-101").status_code == 404)

    assert stack_process.stop() == 0
    assert "stack stopped" in "".join(stack_process.proc.stdout.read() if stack_process.proc.stdout else "")

    # Running it again works and keeps the registration and the secrets.
    again = StackProcess(tmp_path / "dev", ports)
    try:
        again.wait_ready()
        env_again = read_env_file(env_file)
        assert env_again["REGISTRATION_ID"] == env["REGISTRATION_ID"]
        assert env_again["DEMO_WEBHOOK_SECRET"] == env["DEMO_WEBHOOK_SECRET"]
    finally:
        assert again.stop() == 0


SOURCE_STACK_ENV = "set -a; . .dev/stack.env; set +a"


def test_stack_env_sourced_as_the_readme_says_serves_vlsync(tmp_path: Path, ports: dict[str, int]) -> None:
    """The README's own lines, in bash: source .dev/stack.env, then `vlsync content status`."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert SOURCE_STACK_ENV in readme
    assert "vlsync content status demo-course-101" in readme
    process = StackProcess(tmp_path / ".dev", ports)  # ./.dev under the shell's working directory, as in the README
    try:
        process.wait_ready()
        env_file = tmp_path / ".dev" / "stack.env"
        assert send(env_file, "course-upserted.json").stdout.startswith("202")
        env = read_env_file(env_file)
        assert eventually(lambda: graph_get(env, "demo-course-101").status_code == 200)

        venv_bin = Path(sys.executable).parent
        assert (venv_bin / "vlsync").exists()
        shell_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VLSYNC_", "AZURE_", "IDENTITY_", "VLS_"))
            and k not in ("GRAPH_BASE_URL", "REGISTRATION_ID", "LearningSyncStorage")
        }
        shell_env.update({"PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"})

        def bash(script: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", "-c", script], cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=60
            )

        script = f"set -eu\n{SOURCE_STACK_ENV}\nvlsync content status demo-course-101"
        status = bash(script)
        assert status.returncode == 0, status.stdout + status.stderr
        # The worker records its push in the ledger just after Graph has the item.
        assert eventually(lambda: "by worker" in bash(script).stdout)
        status = bash(script)
        rows = {line.split(None, 1)[0]: line for line in status.stdout.splitlines() if line.strip()}
        assert "yes" in rows["in"], status.stdout  # in Graph
        assert "by worker" in status.stdout  # the ledger through the sourced connection string (it holds ';')
        assert "Traceback" not in status.stderr

        # vlsync doctor against the stack: every check passes; without the federated credential it names it.
        doctor = bash(f"set -eu\n{SOURCE_STACK_ENV}\nvlsync --json doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert {c["status"] for c in json.loads(doctor.stdout)["checks"]} == {"pass"}
        # make dev records the demo registration as vlsync provider register does: through the stack's app
        assert "recorded as registered by app" in json.loads(doctor.stdout)["checks"][-1]["detail"]
        # stack.env carries the app's SOURCES, so vlsync knows the demo source as the function app does
        report = bash(f"set -eu\n{SOURCE_STACK_ENV}\nvlsync --json status")
        assert report.returncode == 0, report.stdout + report.stderr
        [demo_source] = [s for s in json.loads(report.stdout)["sources"] if s["source"] == "demo"]
        assert demo_source["configured"] is True
        env_now = read_env_file(env_file)
        identity_base = env_now["IDENTITY_ENDPOINT"].removesuffix("/msi/token")
        app_url = f"{identity_base}/_identity/apps/{env_now['VIVA_APP_CLIENT_ID']}"
        httpx.delete(f"{app_url}/federatedCredentials", timeout=10).raise_for_status()
        no_fic = bash(f"{SOURCE_STACK_ENV}\nvlsync doctor")
        assert no_fic.returncode == 1, no_fic.stdout + no_fic.stderr
        assert re.search(r"federated credential\s*│\s*fail", no_fic.stdout), no_fic.stdout
        assert "fix (federated credential): az ad app federated-credential create" in " ".join(no_fic.stdout.split())

        broken = bash(
            f"{SOURCE_STACK_ENV}\n"
            "LearningSyncStorage='DefaultEndpointsProtocol=http;AccountName' vlsync content status demo-course-101"
        )
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert "Error: storage: " in broken.stderr
        assert "Usage:" not in broken.stderr
    finally:
        if process.proc.poll() is None:
            assert process.stop() == 0
