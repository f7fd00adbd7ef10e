"""The app's own functions, run by the dev host over Azurite, the identity endpoint and the Graph emulator."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.storage.queue import QueueClient

from local import demo
from local.devhost import DevHost
from local.write_budget import LOCAL_APP_SETTINGS
from shared import bootstrap
from shared.odata import content_by_external_id
from tests.conftest import APP_CLIENT_ID, REPO, SECRET, app_sign_in_env
from tests.queues import peek_json
from tests.webhooks import signed


@dataclass
class Stack:
    host: DevHost
    graph_url: str
    registration_id: str
    queue_name: str
    connection_string: str
    identity: Any

    @property
    def intake(self) -> str:
        return self.host.base_url

    def post(self, body: Any, source: str = "demo", secret: str = SECRET, **kw: Any) -> httpx.Response:
        raw, headers = signed(body, secret, **kw)
        return httpx.post(f"{self.intake}/webhooks/{source}", content=raw, headers=headers, timeout=30)

    def graph_get(self, external_id: str, registration_id: str | None = None) -> httpx.Response:
        token = self.identity.dev_token(roles=["LearningContent.Read.All"])["access_token"]
        path = content_by_external_id(registration_id or self.registration_id, external_id)
        return httpx.get(f"{self.graph_url}/v1.0{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(0.1)

    def poison(self) -> list[dict[str, Any]]:
        return peek_json(self.connection_string, f"{self.queue_name}-poison")

    def clear_poison(self) -> None:
        QueueClient.from_connection_string(self.connection_string, f"{self.queue_name}-poison").clear_messages()

    def graph_requests(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.graph_url}/_emulator/requests", timeout=10).json()
        return list(body.get("value", body) if isinstance(body, dict) else body)


@pytest.fixture(scope="module")
def stack(azurite: Any, emulator: Any, identity_server: Any) -> Iterator[Stack]:
    # Registered through the product's app; the worker pushes as that app (issue 13, one app).
    token = identity_server.dev_token(scopes=["LearningProvider.ReadWrite"], clientId=APP_CLIENT_ID)["access_token"]
    registration_id = demo.register_provider(emulator.url, token)
    queue_name = f"e2e-{uuid.uuid4().hex[:10]}"
    env = {
        "LearningSyncStorage": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "CONTENT_QUEUE_NAME": queue_name,
        "SOURCES": json.dumps(
            {
                "demo": demo.source_entry(registration_id, "E2E_SECRET"),
                "orphan": demo.source_entry("not-registered", "E2E_SECRET"),
            }
        ),
        "E2E_SECRET": SECRET,
        "GRAPH_BASE_URL": emulator.url,
        "GRAPH_MAX_INLINE_RETRY_SECONDS": "3",
        "GRAPH_MAX_DEFERRALS": "1",
        # Each module its own ledger table (and so its own circuit row); a 2 s cool-down keeps an
        # outage test short. The circuit's logic is the same at any length (tests/pure/test_circuit.py).
        "LEDGER_TABLE_NAME": f"e2e{uuid.uuid4().hex[:10]}",
        "GRAPH_CIRCUIT_COOLDOWN_SECONDS": "2",
        # The write budget on, above what the tests send (local/write_budget.py: the draft's 0.8/s
        # would pace a test's dozens of writes over a minute); tests/storage covers its arithmetic.
        **LOCAL_APP_SETTINGS,  # the write budget, and %RECONCILE_SCHEDULE% resolves as in Azure
        **identity_server.env,
        **app_sign_in_env(identity_server),
    }
    host_json = json.loads((REPO / "host.json").read_text())
    # Same semantics as production, shorter clocks: retries after 1 s instead of 30 s.
    host_json["extensions"]["queues"].update({"visibilityTimeout": "00:00:01", "maxPollingInterval": "00:00:00.500"})
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        bootstrap.reset()
        import function_app

        with DevHost.start(function_app.app, host_json=host_json, port=0) as host:
            yield Stack(host, emulator.url, registration_id, queue_name, azurite.connection_string, identity_server)
            host.run(bootstrap.aclose())  # the app's clients, closed on their own loop before it ends
        bootstrap.reset()
