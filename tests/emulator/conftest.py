"""Fixtures for the Graph emulator suite: one emulator per session, reset before every test.

Everything goes over real HTTP with httpx, with tokens minted by ``local/tokens.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import tokens
from local.graph_emulator import RunningEmulator, run_in_thread

REPO_ROOT = Path(__file__).resolve().parents[2]

PROVIDERS = "/v1.0/employeeExperience/learningProviders"

PROVIDER_BODY: dict[str, Any] = {
    "displayName": "Contoso Academy",
    "squareLogoWebUrlForDarkTheme": "https://contoso.example/logo-sq-dark.png",
    "longLogoWebUrlForDarkTheme": "https://contoso.example/logo-long-dark.png",
    "squareLogoWebUrlForLightTheme": "https://contoso.example/logo-sq-light.png",
    "longLogoWebUrlForLightTheme": "https://contoso.example/logo-long-light.png",
}

CONTENT_BODY: dict[str, Any] = {
    "title": "Intro to Python",
    "contentWebUrl": "https://contoso.example/courses/python",
    "languageTag": "en-us",
}


def bearer(
    *,
    roles: tuple[str, ...] = (),
    scopes: tuple[str, ...] = (),
    tenant_id: str = tokens.DEFAULT_TENANT_ID,
    **kwargs: Any,
) -> dict[str, str]:
    token, _ = tokens.mint(tokens.TokenRequest(roles=roles, scopes=scopes, tenant_id=tenant_id, **kwargs))
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(scopes=("LearningProvider.ReadWrite",))  # delegated: manages providers
APP_WRITE = bearer(roles=("LearningContent.ReadWrite.All",))
APP_READ = bearer(roles=("LearningContent.Read.All",))
USER_CONTENT_READ = bearer(scopes=("LearningContent.Read.All",))


def content_url(provider_id: str, key: str, *, version: str = "v1.0") -> str:
    """``key`` is the already-encoded segment suffix, e.g. ``(externalId='x')`` or ``/<id>``."""
    return f"/{version}/employeeExperience/learningProviders/{provider_id}/learningContents{key}"


def assert_graph_error(response: httpx.Response, status: int, code: str, *fragments: str) -> dict[str, Any]:
    """Check status, Graph error shape and that the message mentions each fragment."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], (fragment, error["message"])
    inner = error["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] == response.headers["client-request-id"]
    assert inner["date"]
    return dict(error)


@pytest.fixture(scope="session")
def emulator() -> Iterator[RunningEmulator]:
    with run_in_thread() as emu:
        yield emu


@pytest.fixture(scope="session")
def session_client(emulator: RunningEmulator) -> Iterator[httpx.Client]:
    # One client for the session: building an httpx.Client (its TLS context) costs ~50 ms.
    with httpx.Client(base_url=emulator.url, timeout=10) as http:
        yield http


@pytest.fixture
def client(session_client: httpx.Client) -> httpx.Client:
    """The session client, with the emulator reset (state, faults, request log) before the test."""
    session_client.post("/_emulator/reset").raise_for_status()
    return session_client


@pytest.fixture
def provider_id(client: httpx.Client) -> str:
    response = client.post(PROVIDERS, json=PROVIDER_BODY, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
