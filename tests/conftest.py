"""Shared fixtures (one real Azurite, identity endpoint and Graph emulator per session, fresh queue
names per test) and the rule that a test's folder says what it needs (see tests/README.md)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.azurite import AzuriteEndpoints, running_azurite
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy1vbmx5LTEyMzQ1Ng=="  # base64 of a test-only key

# Folders whose tests run the app's functions in the dev host (or the whole `make dev` stack):
# exactly these are marked e2e (`make e2e` runs them, `make unit` leaves them out).
E2E_FOLDERS = frozenset({"stack"})


def folder_of(item: pytest.Item) -> str:
    """The folder under tests/ holding the test ("" for a test directly in tests/)."""
    try:
        relative = item.path.resolve().relative_to(TESTS)
    except ValueError:  # collected from outside tests/
        return ""
    return relative.parts[0] if len(relative.parts) > 1 else ""


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the marker must be there to be selected on
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder is the one source of the e2e marker: added here, refused anywhere else."""
    misplaced = []
    for item in items:
        if folder_of(item) in E2E_FOLDERS:
            item.add_marker(pytest.mark.e2e)
        elif item.get_closest_marker("e2e") is not None:
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "the e2e marker comes from the folder (tests/stack), not from the test; move or unmark: "
            + ", ".join(misplaced)
        )


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
        tenant_id=TENANT_ID,
    )


# -- the local Graph side: identity endpoint + Graph emulator -------------------------------------

IDENTITY_HEADER = "tests-identity-header"
TENANT_ID = "00000000-0000-0000-0000-00000000a11c"  # the local stack's tenant (local.tokens.DEFAULT_TENANT_ID)
UAMI_CLIENT_ID = "5a5a5a5a-0000-4000-8000-000000000001"  # holds LearningContent.ReadWrite.All
# The product's Entra app: the UAMI above is its federated credential; admins register through it.
APP_CLIENT_ID = "a99c0000-0000-4000-8000-00000000a001"
READ_ONLY_CLIENT_ID = "5a5a5a5a-0000-4000-8000-0000000000ff"  # may read content, not write: Graph answers 403


@pytest.fixture(scope="session")
def identity_server() -> Iterator[Any]:
    from local.identity import AppRegistration, Identity, run_in_thread

    uami = Identity.user(UAMI_CLIENT_ID)
    with run_in_thread(
        header=IDENTITY_HEADER,
        user_assigned=[uami, Identity.user(READ_ONLY_CLIENT_ID, roles=("LearningContent.Read.All",))],
        apps=[AppRegistration.trusting(APP_CLIENT_ID, [uami])],
    ) as idp:
        yield idp


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    from local.graph_emulator import run_in_thread

    with run_in_thread(page_size=50) as emu:
        yield emu


def app_sign_in_env(identity: Any) -> dict[str, str]:
    """The settings with which the worker (and vlsync's local content calls) sign in as the app."""
    return {
        "GRAPH_AUTH_MODE": "app",
        "VIVA_APP_CLIENT_ID": APP_CLIENT_ID,
        "VIVA_APP_TENANT_ID": TENANT_ID,
        "AZURE_CLIENT_ID": UAMI_CLIENT_ID,
        "AZURE_AUTHORITY_HOST": identity.authority_host,
        "SSL_CERT_FILE": str(ca_bundle(identity)),
    }


@functools.cache
def ca_bundle(identity: Any) -> Path:
    """certifi's roots plus the identity endpoint's CA, once per endpoint (for ``SSL_CERT_FILE``)."""
    return Path(identity.ca_bundle(Path(identity.ca_file).with_name("bundle.pem")))
