"""Shared fixtures: one real Azurite per test session, fresh queue names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

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
        sources_json='{"demo": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "TEST_WEBHOOK_SECRET"}}',
        graph_base_url="http://127.0.0.1:9",
    )
