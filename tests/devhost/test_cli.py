"""``python -m local.devhost`` as the stack launcher runs it: a subprocess, a ready line, signals."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.storage.queue import QueueClient

from local.azurite import AzuriteEndpoints

from .conftest import b64, wait_for

REPO = Path(__file__).resolve().parents[2]

APP_SOURCE = textwrap.dedent(
    """
    import os
    import azure.functions as func

    GREETING = os.environ.get("GREETING", "unset")  # read at import, as apps do
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    seen = []

    @app.route(route="hello/{name}", methods=["GET"])
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(f"{GREETING} {req.route_params['name']} {os.environ['ONLY_IN_FILE']} {seen}")

    @app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="Store")
    def work(msg: func.QueueMessage) -> None:
        seen.append(msg.get_body().decode())
    """
)


class HostProcess:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output from the dev host") from None


def launch(app_dir: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "local.devhost", "--cwd", str(app_dir), "--app", "my_app:app", "--port", "0"]
    return subprocess.Popen(
        [*args, *extra],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def app_dir(tmp_path: Path, azurite: AzuriteEndpoints, queue_name: str) -> Path:
    (tmp_path / "my_app.py").write_text(APP_SOURCE, encoding="utf-8")
    values = {
        "GREETING": "from-file",
        "ONLY_IN_FILE": "file-value",
        "WORK_QUEUE": queue_name,
        "Store": azurite.connection_string,
    }
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}), encoding="utf-8")
    (tmp_path / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"queues": {"maxPollingInterval": "00:00:00.1"}}}),
        encoding="utf-8",
    )
    return tmp_path


@pytest.fixture
def running(app_dir: Path) -> Iterator[HostProcess]:
    proc = launch(app_dir, env={"GREETING": "from-env"})
    host = HostProcess(proc)
    try:
        yield host
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_ready_line_function_list_settings_and_clean_sigterm(
    running: HostProcess, queue_name: str, azurite: AzuriteEndpoints
) -> None:
    ready = running.next_line()
    found = re.fullmatch(r"dev host listening on (http://127\.0\.0\.1:(\d+)/api)", ready)
    assert found, ready
    base_url = found.group(1)
    listed = {running.next_line(), running.next_line()}
    assert listed == {"hello: httpTrigger GET /api/hello/{name}", f"work: queueTrigger queue={queue_name}"}

    # GREETING is set in the environment, so the file's value must not override it.
    assert httpx.get(f"{base_url}/hello/ada").text == "from-env ada file-value []"

    with QueueClient.from_connection_string(azurite.connection_string, queue_name) as client:
        client.send_message(b64("queued"))
    wait_for(lambda: "queued" in httpx.get(f"{base_url}/hello/ada").text, timeout=10, message="queue trigger")

    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=15) == 0
    _, stderr = running.proc.communicate(timeout=5)
    assert "SIGTERM received" in stderr
    assert "auth levels are not enforced locally" in stderr


def test_unsupported_binding_stops_the_start_with_a_clear_message(app_dir: Path) -> None:
    (app_dir / "my_app.py").write_text(
        textwrap.dedent(
            """
            import azure.functions as func
            app = func.FunctionApp()

            @app.blob_trigger(arg_name="blob", path="uploads/{name}", connection="")
            def uploaded(blob: func.InputStream) -> None:
                pass
            """
        ),
        encoding="utf-8",
    )
    proc = launch(app_dir)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "listening" not in stdout
    assert "function 'uploaded': binding 'blob' of type 'blobTrigger'" in stderr


def test_timer_function_runs_on_its_schedule(app_dir: Path) -> None:
    """The schedule comes from a setting; the first run is at start (runOnStartup), then every second."""
    marks = app_dir / "ticks.txt"
    (app_dir / "my_app.py").write_text(
        textwrap.dedent(
            f"""
            import azure.functions as func
            app = func.FunctionApp()

            @app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", run_on_startup=True)
            def tick(timer: func.TimerRequest) -> None:
                with open({str(marks)!r}, "a", encoding="utf-8") as out:
                    out.write(f"{{timer.past_due}}\\n")
            """
        ),
        encoding="utf-8",
    )
    host = HostProcess(launch(app_dir, env={"TICK_SCHEDULE": "* * * * * *"}))
    try:
        assert host.next_line().startswith("dev host listening on ")
        wait_for(lambda: marks.exists() and len(marks.read_text().splitlines()) >= 3, 20, "three timer runs")
        assert set(marks.read_text().split()) == {"False"}
    finally:
        host.proc.send_signal(signal.SIGTERM)
        host.proc.wait(timeout=30)
