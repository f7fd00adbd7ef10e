"""Fixtures: the identity endpoint on a thread and the App Service env that points the real SDK at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.identity import Identity, IdentityServer, run_in_thread

HEADER = "local-identity-header-for-tests"
UAMI_CLIENT_ID = "7e57c11e-0000-4000-8000-000000000001"
NO_ROLE_CLIENT_ID = "7e57c11e-0000-4000-8000-0000000000ff"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Fast, deterministic retries for tests that exhaust them; the default policy is used where the
# test is about the default behaviour.
FAST_RETRY: dict[str, Any] = {"retry_total": 0}


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityServer]:
    with run_in_thread(
        header=HEADER,
        user_assigned=[UAMI_CLIENT_ID, Identity.user(NO_ROLE_CLIENT_ID, roles=())],
    ) as server:
        yield server


@pytest.fixture
def endpoint(idp: IdentityServer, monkeypatch: pytest.MonkeyPatch) -> IdentityServer:
    """A clean endpoint (no faults, empty log) and the App Service env vars; build credentials after this."""
    idp.clear_faults()
    idp.clear_requests()
    for var in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("IDENTITY_ENDPOINT", idp.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    return idp
