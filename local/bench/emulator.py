"""The Graph emulator as the bench runs it: its own process (its CPU is not the client's), seeded from a
snapshot file so N stored items take seconds, not N requests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from local import tokens
from local.graph_emulator.schema import DEFAULTS

REPO_ROOT = Path(__file__).resolve().parents[2]
TENANT_ID = tokens.DEFAULT_TENANT_ID
APP_ID = tokens.TokenRequest().client_id  # the app the bench's tokens name, bound to the seeded provider
PROVIDER_PREFIX = "/v1.0/employeeExperience/learningProviders"

PROVIDER_PROPS: dict[str, Any] = {
    "displayName": "Bench Academy",
    "squareLogoWebUrlForDarkTheme": "https://bench.example/logo-sq-dark.png",
    "longLogoWebUrlForDarkTheme": "https://bench.example/logo-long-dark.png",
    "squareLogoWebUrlForLightTheme": "https://bench.example/logo-sq-light.png",
    "longLogoWebUrlForLightTheme": "https://bench.example/logo-long-light.png",
    "isCourseActivitySyncEnabled": False,
    "loginWebUrl": None,
}


def app_token() -> str:
    token, _ = tokens.mint(tokens.TokenRequest(roles=("LearningContent.ReadWrite.All",), lifetime_seconds=6 * 3600))
    return token


def content_body(index: int, *, revision: int = 0) -> dict[str, Any]:
    """A course as an LMS sends it (about 400 bytes of JSON, like a real catalog entry)."""
    return {
        "title": f"Bench course {index} rev {revision}",
        "description": f"Course {index}: a benchmark item with a description of realistic length. " * 2,
        "contentWebUrl": f"https://lms.bench.example/courses/{index}",
        "languageTag": "en-us",
        "numberOfPages": 12,
        "duration": "PT45M",
        "format": "Course",
        "isActive": True,
    }


def external_id(index: int) -> str:
    return f"bench-{index:07d}"


def seed_snapshot(path: Path, items: int, provider_id: str) -> None:
    """Write a snapshot (the emulator's own format) holding one provider bound to the bench app and
    ``items`` content items, streamed so 100,000 items need little memory."""
    blank = {name: None for name in _content_properties()}
    blank.update(DEFAULTS["learningContent"])
    provider = {**PROVIDER_PROPS, "id": provider_id, "registeredByAppId": APP_ID}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"version": 1, "tenants": {' + json.dumps(TENANT_ID) + ': {"providers": [')
        handle.write(json.dumps(provider)[:-1] + ', "learningContents": [')
        for index in range(items):
            item = {**blank, **content_body(index), "externalId": external_id(index), "id": str(uuid.uuid4())}
            handle.write(("," if index else "") + json.dumps(item))
        handle.write("]}]}}}")


def _content_properties() -> list[str]:
    from local.graph_emulator.schema import load_metadata

    return list(load_metadata().entity("learningContent").properties)


@dataclass(frozen=True)
class RunningProcess:
    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/_emulator/requests/stats", timeout=30).json()
        return body

    def cpu_seconds(self) -> float:
        """CPU time the emulator process has used (user + system, its threads included): a cost per
        request that other work on the machine hardly skews, unlike a rate."""
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def start_compaction(self) -> None:
        httpx.post(f"{self.url}/_emulator/persistence/compact", timeout=30).raise_for_status()

    def wait_compaction(self, timeout: float = 600) -> dict[str, Any]:
        """The persistence view once no compaction runs."""
        deadline = time.monotonic() + timeout
        while True:
            view: dict[str, Any] = httpx.get(f"{self.url}/_emulator/persistence", timeout=30).json()
            if not view["compacting"] or time.monotonic() > deadline:
                return view
            time.sleep(0.1)

    def clear_requests(self) -> None:
        httpx.delete(f"{self.url}/_emulator/requests", timeout=30).raise_for_status()

    def content_url(self, provider_id: str, ext_id: str) -> str:
        from shared.odata import key_literal

        return f"{self.url}{PROVIDER_PREFIX}/{provider_id}/learningContents(externalId={key_literal(ext_id)})"


@contextlib.contextmanager
def emulator_process(
    *, snapshot: Path | None = None, latency_ms: int = 0, extra: tuple[str, ...] = (), startup_timeout: float = 300
) -> Iterator[RunningProcess]:
    """``python -m local.graph_emulator`` on a free port, logging warnings only (a log line per request
    would measure the terminal, not the emulator); stopped with SIGTERM (it compacts its journal)."""
    command = [sys.executable, "-m", "local.graph_emulator", "--port", "0", "--log-level", "WARNING"]
    command += ["--latency-ms", str(latency_ms), *extra]
    if snapshot is not None:
        command += ["--snapshot", str(snapshot)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()  # loading a large snapshot comes first
        prefix = "graph emulator listening on "
        if not line.startswith(prefix):
            raise RuntimeError(f"the emulator did not start: {line!r} (exit {process.poll()})")
        yield RunningProcess(line.removeprefix(prefix), process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(startup_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
