"""The Graph side (identity endpoint + Graph emulator, one registered provider per test) and ``vlsync``
run in-process against it: the emulator, the identity endpoint (delegated ``/dev/token`` and the real
``ManagedIdentityCredential``) and Azurite. No function host."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.identity.aio import ManagedIdentityCredential

from local import demo
from local.write_budget import LOCAL_WRITE_BUDGET
from shared.credentials import AppCredential
from shared.graph import GraphClient
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from tests.conftest import APP_CLIENT_ID, TENANT_ID, UAMI_CLIENT_ID, app_sign_in_env
from tests.vlsync_runner import Vlsync, make_runner


@dataclass
class GraphSide:
    """A fresh emulator state with one registered provider, and the env that points the SDK at it."""

    url: str
    registration_id: str
    identity: Any

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/_emulator{path}", timeout=10, **kwargs)

    def app_headers(self) -> dict[str, str]:
        token = self.identity.dev_token(roles=["LearningContent.ReadWrite.All"])["access_token"]
        return {"Authorization": f"Bearer {token}"}

    def get_content(self, external_id: str, version: str = "v1.0") -> httpx.Response:
        from shared.odata import content_by_external_id

        return httpx.get(
            self.url + f"/{version}" + content_by_external_id(self.registration_id, external_id),
            headers=self.app_headers(),
            timeout=10,
        )

    def script_faults(self, faults: list[dict[str, Any]]) -> None:
        self.admin("POST", "/faults/next", json=faults).raise_for_status()


@pytest.fixture
def graph_side(emulator: Any, identity_server: Any, monkeypatch: pytest.MonkeyPatch) -> GraphSide:
    httpx.post(f"{emulator.url}/_emulator/reset", timeout=10).raise_for_status()
    identity_server.clear_faults()
    for key, value in identity_server.env.items():
        monkeypatch.setenv(key, value)
    # An admin registers through the product's app, so the registration is bound to the app the worker
    # pushes as (the emulator refuses content from any other app id: --app-binding strict-app).
    token = identity_server.dev_token(scopes=["LearningProvider.ReadWrite"], clientId=APP_CLIENT_ID)["access_token"]
    return GraphSide(emulator.url, demo.register_provider(emulator.url, token), identity_server)


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
        "LearningSyncStorage": azurite.connection_string,
        "CONTENT_QUEUE_NAME": f"cli-{uuid.uuid4().hex[:10]}",
        "LEDGER_TABLE_NAME": f"cli{uuid.uuid4().hex[:10]}",
        "REGISTRATION_STATE_CACHE_SECONDS": "0",
        "VLS_DEV_DIR": str(tmp_path / "no-stack"),  # never the developer's own .dev/stack.env
        # backfill and reconcile spend from the shared write budget: on, above what a test sends.
        **LOCAL_WRITE_BUDGET,
        **app_sign_in_env(graph_side.identity),
    }
    return CliSide(graph_side, env, make_runner(env))


# -- the worker's Graph client, as the function app builds it ------------------------------------


async def no_sleep(_: float) -> None:
    return None


def worker_credential(graph_side: GraphSide, client_id: str = UAMI_CLIENT_ID) -> AppCredential:
    """The worker's credential (GRAPH_AUTH_MODE=app): the managed identity ``client_id`` exchanged, by the
    real azure-identity classes, for the app's Graph token at the identity endpoint's Entra route."""
    return AppCredential(
        ManagedIdentityCredential(client_id=client_id),
        client_id=APP_CLIENT_ID,
        home_tenant=TENANT_ID,
        authority=graph_side.identity.authority_host,
        connection_verify=graph_side.identity.ca_file,
    )


def make_graph(
    graph_side: GraphSide,
    http: httpx.AsyncClient,
    client_id: str = UAMI_CLIENT_ID,
    *,
    as_app: bool = True,
) -> GraphClient:
    """The worker's Graph client as ``shared.credentials`` builds it: as the app through the managed
    identity ``client_id`` (``as_app``), or as that identity itself (GRAPH_AUTH_MODE=managed-identity)."""
    credential: Any = (
        worker_credential(graph_side, client_id) if as_app else ManagedIdentityCredential(client_id=client_id)
    )
    CREDENTIALS.append(credential)
    return GraphClient(
        http,
        credential,
        root=f"{graph_side.url}/v1.0",
        scope="https://graph.microsoft.com/.default",
        max_inline_retry_seconds=5,
        sleep=no_sleep,
    )


CREDENTIALS: list[Any] = []


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client
    while CREDENTIALS:
        await CREDENTIALS.pop().close()


@pytest.fixture
def queue(settings: Settings) -> StorageCommandQueue:
    q = StorageCommandQueue.from_settings(settings)
    q.ensure_queues()
    return q


@pytest.fixture
def ledger(settings: Settings) -> Ledger:
    return Ledger.from_settings(settings)
