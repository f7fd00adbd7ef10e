"""The stack the fault harness runs against: every part its own process, so that parts can be killed.

``make dev`` (``local.stack``) stops everything when one child dies, and the pytest fixtures run the
host and the emulators on threads of the test process: neither can survive a SIGKILL of the host or
a restart of Azurite. So the harness starts the same parts itself, as ``local.stack`` does, each in
its own process group: Azurite (persistent ``--location``, so a restart keeps the queues), the Graph
emulator, the identity endpoint (managed identity and the Entra exchange route) and the dev host
running ``function_app:app``. It talks to them only through what a user has: HTTP (intake, the
emulator's and the identity endpoint's admin routes, Graph with an app token) and storage.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from local import demo
from local.azurite import REPO_ROOT, AzuriteEndpoints, free_port, running_azurite
from local.identity.tls import ca_bundle
from local.stack import STACK_APP_CLIENT_ID, STACK_IDENTITY_CLIENT_ID, admin_token
from local.write_budget import LOCAL_APP_SETTINGS

logger = logging.getLogger(__name__)

QUEUE_NAME = "content-commands"
SOURCE = "faults"
# A first start that fails (a port taken between picking and binding) is tried again on fresh ports.
FIRST_START_ATTEMPTS = 3
GRAPH_RESOURCE = "https://graph.microsoft.com"
# Settings of the caller's shell that would point the host elsewhere; the harness sets its own.
_FOREIGN_SETTINGS = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID", "SOURCES", "GRAPH_BASE_URL", "CONTENT_QUEUE_NAME",
    "AzureWebJobsStorage", "LearningSyncStorage", "GRAPH_AUTH_MODE", "VIVA_APP_CLIENT_ID", "VIVA_APP_TENANT_ID",
    "AZURE_AUTHORITY_HOST", "SSL_CERT_FILE", "GRAPH_MAX_INLINE_RETRY_SECONDS", "GRAPH_MAX_DEFERRALS",
    "GRAPH_TIMEOUT_SECONDS", "APPLICATIONINSIGHTS_CONNECTION_STRING", "LEDGER_TABLE_NAME",
    "GRAPH_WRITE_RATE_PER_SECOND", "GRAPH_WRITE_BURST", "GRAPH_WRITE_BLOCK_LIMIT", "GRAPH_WRITE_BLOCK_SECONDS",
)  # fmt: skip


@dataclass(frozen=True)
class Clocks:
    """The clocks the harness may shorten (time compression), each printed with the results."""

    visibility_timeout: float = 30.0  # host.json extensions.queues.visibilityTimeout (production: 30 s)
    max_polling_interval: float = 2.0  # host.json extensions.queues.maxPollingInterval (production: 2 s)
    # The host's lease on a message it runs (Functions: 10 minutes, renewed while the function runs;
    # the dev host does not renew it, so a shortened lease must outlast the longest push).
    message_lease_seconds: int = 600
    token_lifetime_seconds: int = 3600  # tokens of the identity endpoint (Entra: about an hour)
    inline_retry_seconds: float | None = None  # GRAPH_MAX_INLINE_RETRY_SECONDS; None: the app's default
    graph_timeout_seconds: float | None = None  # GRAPH_TIMEOUT_SECONDS (the item lease derives from it)

    def __post_init__(self) -> None:
        timeout = 30.0 if self.graph_timeout_seconds is None else self.graph_timeout_seconds
        budget = 10.0 if self.inline_retry_seconds is None else self.inline_retry_seconds
        # The app bounds one push by 3 Graph timeouts plus the inline retry budget (shared/ledger.py
        # push_timing); a message redelivered while its first run still pushes would race itself.
        if self.message_lease_seconds <= 3 * timeout + budget:
            raise ValueError(
                f"a message lease of {self.message_lease_seconds}s does not outlast a push "
                f"(3 x {timeout:g}s + {budget:g}s); the Functions host renews its lease, the dev host cannot"
            )

    def describe(self) -> str:
        changed = []
        if self.visibility_timeout != 30.0:
            changed.append(f"host.json visibilityTimeout {self.visibility_timeout:g}s (production 30s)")
        if self.max_polling_interval != 2.0:
            changed.append(f"maxPollingInterval {self.max_polling_interval:g}s (production 2s)")
        if self.message_lease_seconds != 600:
            changed.append(f"host message lease {self.message_lease_seconds}s (Functions host 600s)")
        if self.token_lifetime_seconds != 3600:
            changed.append(f"token lifetime {self.token_lifetime_seconds}s (Entra ~3600s)")
        if self.inline_retry_seconds is not None:
            changed.append(f"GRAPH_MAX_INLINE_RETRY_SECONDS {self.inline_retry_seconds:g} (default 10)")
        if self.graph_timeout_seconds is not None:
            changed.append(f"GRAPH_TIMEOUT_SECONDS {self.graph_timeout_seconds:g} (default 30)")
        return "; ".join(changed) if changed else "none (production clocks)"


def timespan(seconds: float) -> str:
    """A .NET TimeSpan string for host.json (``00:00:01.500``)."""
    millis = round(seconds * 1000)
    whole, frac = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{text}.{frac:03d}" if frac else text


class Process:
    """One part of the stack in its own process group; output to ``<logs>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready: str, logs: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.ready_pattern = re.compile(ready)
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self, timeout: float = 90.0) -> re.Match[str]:
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in _closed()
        proc = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.proc = proc
        found: list[re.Match[str]] = []
        ready = threading.Event()
        log = self._log

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if not ready.is_set():
                    match = self.ready_pattern.search(line)
                    if match:
                        found.append(match)
                        ready.set()
            log.close()

        threading.Thread(target=pump, name=f"{self.name}-output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")
        return found[0]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill(self) -> None:
        """SIGKILL, no chance to finish anything (what a crashed or evicted host does)."""
        self._signal_group([(signal.SIGKILL, 10.0)])

    def stop(self) -> None:
        self._signal_group([(signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)])

    def _signal_group(self, steps: list[tuple[signal.Signals, float]]) -> None:
        proc = self.proc
        if proc is None:
            return
        for sig, wait in steps:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


class Azurite:
    """Azurite on fixed ports over one data folder, so that a restart keeps every queue and table."""

    def __init__(self, location: Path, log_file: Path) -> None:
        self.location = location
        self.log_file = log_file
        self.ports = (free_port(), free_port(), free_port())
        self._running: contextlib.ExitStack | None = None
        self.endpoints: AzuriteEndpoints | None = None

    def start(self) -> AzuriteEndpoints:
        running = contextlib.ExitStack()
        self.endpoints = running.enter_context(running_azurite(self.location, ports=self.ports, log_file=self.log_file))
        self._running = running
        return self.endpoints

    def first_start(self) -> AzuriteEndpoints:
        """The first start, on fresh ports if another process took one since they were picked (the
        ports then stay fixed: a restart must come back where the app's settings point)."""
        for attempt in range(FIRST_START_ATTEMPTS):
            try:
                return self.start()
            except (RuntimeError, TimeoutError):
                if attempt == FIRST_START_ATTEMPTS - 1:
                    raise
                logger.warning("azurite did not start on ports %s; picking others", self.ports)
                self.ports = (free_port(), free_port(), free_port())
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGINT (Azurite saves its data and exits), SIGKILL only if it hangs."""
        if self._running is not None:
            self._running.close()
            self._running = None


class FaultStack:
    """Azurite, the Graph emulator, the identity endpoint and the dev host running the app."""

    def __init__(
        self,
        run_dir: Path,
        clocks: Clocks,
        *,
        graph_args: tuple[str, ...] = (),
        host_env: dict[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir.resolve()
        self.clocks = clocks
        self.graph_args = graph_args  # extra emulator options (the bench's ``--latency-ms 40``)
        self.host_env = dict(host_env or {})  # extra dev host settings (the bench's profiling switch)
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.identity_header = secrets.token_hex(16)
        self.azurite = Azurite(self.run_dir / "azurite", self.logs / "azurite.log")
        self.host_port = free_port()
        self.graph_url = ""
        self.identity_url = ""  # the identity endpoint's base URL (no /msi/token)
        self.registration_id = ""
        self.connection_string = ""
        self._parts: list[Process] = []
        self.host: Process | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> FaultStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        py = sys.executable
        base_env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_SETTINGS}
        base_env["PYTHONUNBUFFERED"] = "1"
        self.connection_string = self.azurite.first_start().connection_string
        graph = Process(
            "graph-emulator",
            [py, "-m", "local.graph_emulator", "--port", "0", "--page-size", "500", *self.graph_args],
            base_env,
            r"listening on (http://\S+)",
            self.logs,
        )
        self._parts.append(graph)
        self.graph_url = graph.start(60).group(1).rstrip("/")
        identity = Process(
            "identity",
            [
                *(py, "-m", "local.identity", "--port", "0", "--tls-port", "0"),
                *("--tls-dir", str(self.run_dir / "tls"), "--client-id", STACK_IDENTITY_CLIENT_ID),
                *("--app", f"{STACK_APP_CLIENT_ID}={STACK_IDENTITY_CLIENT_ID}"),
                *("--lifetime", str(self.clocks.token_lifetime_seconds)),
            ],
            {**base_env, "IDENTITY_HEADER": self.identity_header},
            r"listening on (http://\S+)",
            self.logs,
        )
        self._parts.append(identity)
        endpoint = identity.start(60).group(1)
        self.identity_url = endpoint.removesuffix("/msi/token")
        health = httpx.get(f"{self.identity_url}/_identity/health", timeout=10).json()
        bundle = ca_bundle(self.run_dir / "ca-bundle.pem", health["caFile"])
        self.registration_id = demo.register_provider(self.graph_url, admin_token(endpoint, self.identity_header))
        host_json = json.loads((REPO_ROOT / "host.json").read_text())
        host_json["extensions"]["queues"].update(
            {
                "visibilityTimeout": timespan(self.clocks.visibility_timeout),
                "maxPollingInterval": timespan(self.clocks.max_polling_interval),
            }
        )
        (self.run_dir / "host.json").write_text(json.dumps(host_json, indent=2))
        app_env = {
            **base_env,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": self.connection_string,
            "LearningSyncStorage": self.connection_string,
            "CONTENT_QUEUE_NAME": QUEUE_NAME,
            "SOURCES": json.dumps({SOURCE: demo.source_entry(self.registration_id, "FAULTS_WEBHOOK_SECRET")}),
            "FAULTS_WEBHOOK_SECRET": self.secret,
            "GRAPH_BASE_URL": self.graph_url,
            "IDENTITY_ENDPOINT": endpoint,
            "IDENTITY_HEADER": self.identity_header,
            # The worker signs in as the app through its managed identity, as `make dev` sets it up.
            "GRAPH_AUTH_MODE": "app",
            "AZURE_CLIENT_ID": STACK_IDENTITY_CLIENT_ID,
            "VIVA_APP_CLIENT_ID": STACK_APP_CLIENT_ID,
            "VIVA_APP_TENANT_ID": str(health["tenantId"]),
            "AZURE_AUTHORITY_HOST": str(health["authorityHost"]),
            "SSL_CERT_FILE": str(bundle),
            # The write budget stays on but above what the harness sends (local/write_budget.py).
            **LOCAL_APP_SETTINGS,  # the write budget and the timers' settings (local/write_budget.py)
            **self.host_env,
        }
        if self.clocks.inline_retry_seconds is not None:
            app_env["GRAPH_MAX_INLINE_RETRY_SECONDS"] = f"{self.clocks.inline_retry_seconds:g}"
        if self.clocks.graph_timeout_seconds is not None:
            app_env["GRAPH_TIMEOUT_SECONDS"] = f"{self.clocks.graph_timeout_seconds:g}"
        for attempt in range(FIRST_START_ATTEMPTS):
            self.host = Process(
                "function-host",
                [
                    *(py, "-m", "local.faults.devhost"),
                    *("--message-lease-seconds", str(self.clocks.message_lease_seconds)),
                    *("--app", "function_app:app", "--port", str(self.host_port)),
                    *("--host-json", str(self.run_dir / "host.json")),
                    # Not the repository's local.settings.json: every setting comes from app_env.
                    *("--settings", str(self.run_dir / "local.settings.json")),
                ],
                app_env,
                r"dev host listening on (http://\S+)",
                self.logs,
            )
            self._parts.append(self.host)
            try:
                self.host.start(90)
                return
            except RuntimeError:  # exited: most likely the port, taken since it was picked
                self._parts.remove(self.host)
                self.host.stop()
                if attempt == FIRST_START_ATTEMPTS - 1:
                    raise
                logger.warning("the dev host did not start on port %s; picking another", self.host_port)
                self.host_port = free_port()

    def close(self) -> None:
        for part in reversed(self._parts):
            part.stop()
        self._parts.clear()
        self.azurite.stop()

    # -- what the faults do to the stack ------------------------------------------------------

    def kill_host(self) -> None:
        assert self.host is not None
        self.host.kill()

    def start_host(self) -> None:
        assert self.host is not None
        self.host.start(90)

    def stop_azurite(self) -> None:
        self.azurite.stop()

    def start_azurite(self) -> None:
        self.azurite.start()

    # -- what the harness reads ---------------------------------------------------------------

    @property
    def intake_url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}/api/webhooks/{SOURCE}"

    def queue_count(self, role: str = "work") -> int:
        """The queue's approximate depth, hidden messages (in flight, deferred) included; 0 if absent."""
        name = QUEUE_NAME if role == "work" else f"{QUEUE_NAME}-{role}"
        with QueueClient.from_connection_string(self.connection_string, name, retry_total=0) as client:
            try:
                return int(client.get_queue_properties().approximate_message_count or 0)
            except ResourceNotFoundError:
                return 0

    def clear_work_queue(self) -> None:
        with (
            QueueClient.from_connection_string(self.connection_string, QUEUE_NAME, retry_total=0) as client,
            contextlib.suppress(ResourceNotFoundError),
        ):
            client.clear_messages()

    def read_token(self) -> str:
        """An app token that may read content (not the worker's app: reads are open to any app)."""
        answer = httpx.post(
            f"{self.identity_url}/dev/token",
            json={"resource": GRAPH_RESOURCE, "roles": ["LearningContent.Read.All"]},
            headers={"X-IDENTITY-HEADER": self.identity_header},
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    def list_contents(self) -> Iterator[dict[str, Any]]:
        """Every learningContent of the registration, through Graph's list call (paged)."""
        auth = {"Authorization": f"Bearer {self.read_token()}"}
        url: str | None = (
            f"{self.graph_url}/v1.0/employeeExperience/learningProviders/{self.registration_id}/learningContents"
        )
        while url:
            page = httpx.get(url, headers=auth, timeout=30)
            page.raise_for_status()
            body = page.json()
            yield from body.get("value", [])
            url = body.get("@odata.nextLink")

    def graph_requests(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.graph_url}/_emulator/requests", timeout=10).json()
        return list(body["value"])
