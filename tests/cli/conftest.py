"""``vlsync`` run in-process (click's runner) against the real parts: the Graph emulator, the identity
endpoint (delegated ``/dev/token`` and the real ``ManagedIdentityCredential``) and Azurite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.conftest import GraphSide
from vlsync import cli

Vlsync = Callable[..., Result]

# Environment variables that would change which credential or storage vlsync picks.
CLEARED = (
    "AZURE_CLIENT_ID",
    "VLSYNC_CREDENTIAL",
    "VLSYNC_ENV_FILE",
    "VLSYNC_STORAGE_ACCOUNT",
    "GRAPH_API_VERSION",
    "STORAGE_CONNECTION_STRING",
    "REGISTRATION_ID",
)


def make_runner(env: dict[str, str]) -> Vlsync:
    runner = CliRunner()
    full_env: dict[str, str | None] = {key: None for key in CLEARED}
    full_env.update(env)

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), env=full_env, input=input, catch_exceptions=False)

    return invoke


@dataclass
class CliSide:
    graph: GraphSide
    env: dict[str, str]
    run: Vlsync

    @property
    def registration_id(self) -> str:
        return self.graph.registration_id

    def json(self, *args: str, input: str | None = None) -> Any:
        result = self.run("--json", *args, input=input)
        assert result.exit_code == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def graph_requests(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.graph.url}/_emulator/requests", timeout=10).json()
        return list(body.get("value", body) if isinstance(body, dict) else body)


@pytest.fixture
def cli_side(graph_side: GraphSide, azurite: Any, tmp_path: Path) -> CliSide:
    """The emulator with one provider, the identity endpoint and Azurite; fresh queue and ledger names."""
    env = {
        "GRAPH_BASE_URL": graph_side.url,
        **graph_side.identity.env,
        "REGISTRATION_ID": graph_side.registration_id,
        "STORAGE_CONNECTION_STRING": azurite.connection_string,
        "CONTENT_QUEUE_NAME": f"cli-{uuid.uuid4().hex[:10]}",
        "LEDGER_TABLE_NAME": f"cli{uuid.uuid4().hex[:10]}",
        "REGISTRATION_STATE_CACHE_SECONDS": "0",
        "VLS_DEV_DIR": str(tmp_path / "no-stack"),  # never the developer's own .dev/stack.env
    }
    return CliSide(graph_side, env, make_runner(env))


def content_line(external_id: str, **extra: Any) -> str:
    return json.dumps(
        {
            "externalId": external_id,
            "title": f"Course {external_id}",
            "contentWebUrl": "https://lms.example/courses/1",
            "languageTag": "en-us",
            **extra,
        },
        ensure_ascii=False,
    )
