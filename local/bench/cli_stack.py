"""What ``vlsync backfill`` needs to run as a user runs it, for the backfill scenarios: Azurite (the
ledger), the identity endpoint (the app's sign-in, as ``make dev`` has it), the Graph emulator in its own
process, a provider registered through the app, and the CLI itself as a child process whose peak RSS
is read from the kernel (``wait4``'s ``ru_maxrss``: that process's own high-water mark)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from local import demo
from local.azurite import running_azurite
from local.identity import AppRegistration, Identity, run_in_thread
from local.identity.tls import ca_bundle
from local.stack import STACK_APP_CLIENT_ID, STACK_IDENTITY_CLIENT_ID
from vlsync.config import TARGET_ENVIRONMENT

from .emulator import PROVIDER_PREFIX, REPO_ROOT, RunningProcess, emulator_process

IDENTITY_HEADER = "bench-identity-header"
# Settings that would make vlsync pick another credential, storage or target than the bench's.
CLEARED = (*TARGET_ENVIRONMENT, "IDENTITY_ENDPOINT", "IDENTITY_HEADER")
# Listing Graph at the end (the lost-items check): 1,000 a page keeps 100,000 items to 100 round trips.
LIST_PAGE_SIZE = 1000


@dataclass
class CliStack:
    emulator: RunningProcess
    registration_id: str
    env: dict[str, str]  # what vlsync gets (besides the parent's PATH and the like)
    reader: str  # an app token that may list the registration's content

    def graph_external_ids(self) -> set[str]:
        """Every externalId the registration holds, listed through Graph (every page)."""
        found: set[str] = set()
        url: str | None = (
            f"{self.emulator.url}{PROVIDER_PREFIX}/{self.registration_id}/learningContents"
            f"?$top={LIST_PAGE_SIZE}&$select=externalId"
        )
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {self.reader}"}) as client:
            while url:
                page = client.get(url)
                page.raise_for_status()
                body = page.json()
                found.update(str(item["externalId"]) for item in body["value"])
                url = body.get("@odata.nextLink")
        return found


@contextlib.contextmanager
def cli_stack(
    workdir: Path, *, latency_ms: int, budget: Mapping[str, str], faults: dict[str, Any] | None = None
) -> Iterator[CliStack]:
    """Azurite (in memory), the identity endpoint (a thread here: it signs a token per CLI process), and the
    emulator (``--snapshot`` on, ``latency_ms`` per request, ``faults`` put once the provider is registered,
    so the registration spends none of a throttle's tokens). ``budget``: the GRAPH_WRITE_* settings."""
    workdir.mkdir(parents=True, exist_ok=True)
    identity = Identity.user(STACK_IDENTITY_CLIENT_ID)
    with (
        running_azurite(workdir / "azurite", in_memory=True) as azurite,
        run_in_thread(
            header=IDENTITY_HEADER,
            user_assigned=[identity],
            apps=[AppRegistration.trusting(STACK_APP_CLIENT_ID, [identity])],
            tls_dir=workdir / "tls",
        ) as idp,
        emulator_process(
            snapshot=workdir / "graph.json",
            latency_ms=latency_ms,
            extra=("--page-size", str(LIST_PAGE_SIZE)),
        ) as emu,
    ):
        admin = idp.dev_token(
            resource="https://graph.microsoft.com", scopes=["LearningProvider.ReadWrite"], clientId=STACK_APP_CLIENT_ID
        )["access_token"]
        registration = demo.register_provider(emu.url, admin)
        if faults is not None:
            httpx.put(f"{emu.url}/_emulator/faults", json=faults, timeout=30).raise_for_status()
        reader = idp.dev_token(roles=["LearningContent.ReadWrite.All"])["access_token"]
        env = {
            **idp.env,
            "GRAPH_BASE_URL": emu.url,
            "REGISTRATION_ID": registration,
            "LearningSyncStorage": azurite.connection_string,
            "LEDGER_TABLE_NAME": f"bench{uuid.uuid4().hex[:10]}",
            "VLS_DEV_DIR": str(workdir / "no-stack"),  # never the developer's own .dev/stack.env
            "GRAPH_AUTH_MODE": "app",
            "VIVA_APP_CLIENT_ID": STACK_APP_CLIENT_ID,
            "VIVA_APP_TENANT_ID": idp.tenant_id,
            "AZURE_CLIENT_ID": STACK_IDENTITY_CLIENT_ID,
            "AZURE_AUTHORITY_HOST": idp.authority_host,
            "SSL_CERT_FILE": str(ca_bundle(workdir / "ca-bundle.pem", idp.ca_file)),
            **budget,
        }
        yield CliStack(emu, registration, env, reader)


@dataclass
class CliRun:
    """One finished ``vlsync --json backfill``: its summary, exit code, peak RSS and when it ended."""

    exit_code: int
    wall_seconds: float  # process start to exit (interpreter start-up and sign-in included)
    ended: float  # time.monotonic() at exit
    peak_rss_mib: float
    summary: dict[str, Any]
    stderr: str

    @property
    def work_seconds(self) -> float:
        """The run's own time (the CLI's ``elapsedSeconds``: reading, leasing and writing, not start-up)."""
        return float(self.summary.get("elapsedSeconds") or self.wall_seconds)

    @property
    def work_started(self) -> float:
        return self.ended - self.work_seconds


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    started: float
    out: IO[bytes]
    err: IO[bytes]
    files: tuple[Path, Path] = field(default=(Path(), Path()))


def start_backfill(stack: CliStack, catalog: Path, logs: Path, *extra: str) -> _Child:
    """``python -m vlsync --json backfill CATALOG`` with the stack's environment only (stdout and stderr
    to files, so a long run never blocks on a full pipe)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("GRAPH_WRITE_")}
    env.update(stack.env)
    env["PYTHONPATH"] = str(REPO_ROOT)
    logs.mkdir(parents=True, exist_ok=True)
    name = f"{catalog.stem}-{uuid.uuid4().hex[:6]}"
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    out, err = out_path.open("wb"), err_path.open("wb")
    command = [sys.executable, "-m", "vlsync", "--json", "backfill", str(catalog), *extra]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
    return _Child(process, started, out, err, (out_path, err_path))


def finish(child: _Child) -> CliRun:
    """Wait for the child with ``wait4``: its exit status and its own ``ru_maxrss`` (KiB on Linux)."""
    _, status, usage = os.wait4(child.process.pid, 0)
    ended = time.monotonic()
    child.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    child.out.close()
    child.err.close()
    stdout = child.files[0].read_text(encoding="utf-8", errors="replace")
    stderr = child.files[1].read_text(encoding="utf-8", errors="replace")
    summary = _summary(stdout, stderr)
    return CliRun(child.process.returncode, ended - child.started, ended, usage.ru_maxrss / 1024, summary, stderr)


def _summary(stdout: str, stderr: str) -> dict[str, Any]:
    """The JSON summary: stdout on success, the ``error`` object on stderr's last line on exit 1."""
    with contextlib.suppress(json.JSONDecodeError):
        body: dict[str, Any] = json.loads(stdout)  # --json prints one document (indented)
        return body
    lines = [line for line in stderr.strip().splitlines() if line.startswith("{")]
    with contextlib.suppress(json.JSONDecodeError, IndexError):
        error = json.loads(lines[-1]).get("error")  # exit 1: the error object, on one line
        return dict(error) if isinstance(error, dict) else {}
    return {}


def run_backfill(stack: CliStack, catalog: Path, logs: Path, *extra: str) -> CliRun:
    return finish(start_backfill(stack, catalog, logs, *extra))


def checked(run: CliRun, what: str) -> CliRun:
    """A run that printed no summary is a broken bench, not a figure: raise with its stderr."""
    if not run.summary or "pushed" not in run.summary:
        raise RuntimeError(f"{what}: vlsync exited {run.exit_code} without a summary: {run.stderr[-3000:]}")
    return run
