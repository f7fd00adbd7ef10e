"""Fixtures: the identity endpoint on a thread and the App Service env that points the real SDK at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from local.identity import AppRegistration, Identity, IdentityServer, run_in_thread

HEADER = "local-identity-header-for-tests"
UAMI_CLIENT_ID = "7e57c11e-0000-4000-8000-000000000001"
NO_ROLE_CLIENT_ID = "7e57c11e-0000-4000-8000-0000000000ff"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
# The worker's Entra app: its one federated credential trusts UAMI_CLIENT_ID (not NO_ROLE_CLIENT_ID).
APP_CLIENT_ID = "a9900000-0000-4000-8000-000000000001"
APP_ROLES = ("LearningContent.ReadWrite.All",)
# An app operator tooling signs in to (public client); consented more than the default scope.
CLI_APP_CLIENT_ID = "a9900000-0000-4000-8000-0000000000c1"
CLI_APP_SCOPES = ("LearningProvider.ReadWrite", "LearningContent.Read.All")
# A confidential app (no public client flows): /dev/token refuses it.
CONFIDENTIAL_APP_CLIENT_ID = "a9900000-0000-4000-8000-0000000000c2"
# Fast, deterministic retries for tests that exhaust them; the default policy is used where the
# test is about the default behaviour.
FAST_RETRY: dict[str, Any] = {"retry_total": 0}

UAMI = Identity.user(UAMI_CLIENT_ID)
APPS = (
    AppRegistration.trusting(APP_CLIENT_ID, [UAMI], roles=APP_ROLES),
    AppRegistration(CLI_APP_CLIENT_ID, display_name="vlsync-cli", scopes=CLI_APP_SCOPES),
    AppRegistration(CONFIDENTIAL_APP_CLIENT_ID, public_client=False),
)


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityServer]:
    with run_in_thread(
        header=HEADER,
        user_assigned=[UAMI, Identity.user(NO_ROLE_CLIENT_ID, roles=())],
        apps=APPS,
    ) as server:
        yield server


@pytest.fixture
def endpoint(idp: IdentityServer, monkeypatch: pytest.MonkeyPatch) -> IdentityServer:
    """A clean endpoint (no faults, empty log, the initial apps) and the App Service env vars.

    Build credentials after this fixture has run.
    """
    idp.clear_faults()
    idp.clear_requests()
    idp.reset_apps()
    for var in (
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "AZURE_CLIENT_ID",
        "AZURE_AUTHORITY_HOST",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("IDENTITY_ENDPOINT", idp.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", HEADER)
    return idp
