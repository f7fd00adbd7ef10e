"""How the telemetry settings are read (nothing is exported)."""

from __future__ import annotations

from shared import telemetry


def test_auth_string_parsing() -> None:
    assert telemetry._auth_client_id("ClientId=abc;Authorization=AAD") == "abc"
    assert telemetry._auth_client_id("Authorization=AAD") is True
    assert telemetry._auth_client_id(None) is False
    assert telemetry._auth_client_id("Authorization=Key") is False
