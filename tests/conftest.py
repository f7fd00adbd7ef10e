"""Shared fixtures: one real Azurite per test session, fresh queue names per test."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.azurite import AzuriteEndpoints, running_azurite
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng=="  # base64 of a test-only key


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEndpoints]:
    with running_azurite(tmp_path_factory.mktemp("azurite"), in_memory=True) as endpoints:
        yield endpoints


@pytest.fixture
def queue_name() -> str:
    return f"cmd-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(azurite: AzuriteEndpoints, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of a test app: one source ``demo`` of kind cloudevents, signed with SECRET."""
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    return Settings(
        content_queue_name=queue_name,
        storage_connection_string=azurite.connection_string,
        sources_json=json.dumps(
            {"demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "TEST_WEBHOOK_SECRET"}}
        ),
        graph_base_url="http://127.0.0.1:9",
        ledger_table_name=f"ledger{uuid.uuid4().hex[:12]}",
        registration_state_cache_seconds=0,
    )


# -- the local Graph side: identity endpoint + Graph emulator -------------------------------------

IDENTITY_HEADER = "tests-identity-header"
UAMI_CLIENT_ID = "5a5a5a5a-0000-4000-8000-000000000001"  # holds LearningContent.ReadWrite.All
READ_ONLY_CLIENT_ID = "5a5a5a5a-0000-4000-8000-0000000000ff"  # may read content, not write: Graph answers 403
DEMO_PROVIDER = {
    "displayName": "Test LMS",
    "squareLogoWebUrlForDarkTheme": "https://lms.example/sd.png",
    "longLogoWebUrlForDarkTheme": "https://lms.example/ld.png",
    "squareLogoWebUrlForLightTheme": "https://lms.example/sl.png",
    "longLogoWebUrlForLightTheme": "https://lms.example/ll.png",
}


@pytest.fixture(scope="session")
def identity_server() -> Iterator[Any]:
    from local.identity import Identity, run_in_thread

    with run_in_thread(
        header=IDENTITY_HEADER,
        user_assigned=[UAMI_CLIENT_ID, Identity.user(READ_ONLY_CLIENT_ID, roles=("LearningContent.Read.All",))],
    ) as idp:
        yield idp


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    from local.graph_emulator import run_in_thread

    with run_in_thread(page_size=50) as emu:
        yield emu


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
    token = identity_server.dev_token(scopes=["LearningProvider.ReadWrite"])["access_token"]
    created = httpx.post(
        f"{emulator.url}/v1.0/employeeExperience/learningProviders",
        json=DEMO_PROVIDER,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    created.raise_for_status()
    return GraphSide(emulator.url, created.json()["id"], identity_server)
