"""The demo learning provider and webhook source that ``make dev`` sets up, and the tests reuse."""

from __future__ import annotations

from typing import Any

import httpx

DEMO_SOURCE = "demo"
DEMO_PROVIDER: dict[str, Any] = {
    "displayName": "Viva Learning Sync demo LMS",
    "squareLogoWebUrlForDarkTheme": "https://lms.example.com/logo/square-dark.png",
    "longLogoWebUrlForDarkTheme": "https://lms.example.com/logo/long-dark.png",
    "squareLogoWebUrlForLightTheme": "https://lms.example.com/logo/square-light.png",
    "longLogoWebUrlForLightTheme": "https://lms.example.com/logo/long-light.png",
    "loginWebUrl": "https://lms.example.com/login",
    "isCourseActivitySyncEnabled": False,
}


def source_entry(registration_id: str, secret_setting: str) -> dict[str, str]:
    """One entry of the ``SOURCES`` setting for a CloudEvents source signed with ``secret_setting``."""
    return {"kind": "cloudevents", "registrationId": registration_id, "secretSetting": secret_setting}


def register_provider(graph_url: str, token: str, *, known: str | None = None) -> str:
    """Register the demo provider with a delegated admin token; reuse ``known`` if Graph still has it."""
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{graph_url}/v1.0/employeeExperience/learningProviders"
    if known and httpx.get(f"{base}/{known}", headers=auth, timeout=10).status_code == 200:
        return known
    created = httpx.post(base, json=DEMO_PROVIDER, headers=auth, timeout=10)
    created.raise_for_status()
    return str(created.json()["id"])
