"""Seams for many tenants (issue 13 point 5): a source names its tenant, commands carry it, and the
payload never chooses it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.models import ContentCommand
from shared.settings import Settings, SettingsError, SourceConfig
from shared.sources import Delivery, WebhookRequest
from shared.sources.cloudevents import CloudEventsAdapter
from tests.webhooks import content, event

HOME = "00000000-0000-0000-0000-00000000a11c"
OTHER = "11111111-2222-4333-8444-555555555555"


def command(**extra: object) -> ContentCommand:
    return ContentCommand.model_validate(
        {
            "op": "delete",
            "registrationId": "reg-1",
            "externalId": "c-1",
            "source": "demo",
            "sourceEventId": "e-1",
            "eventTime": "2026-11-27T09:00:00Z",
            "correlationId": "corr-1",
            **extra,
        }
    )


def test_commands_carry_a_tenant_id_in_one_spelling() -> None:
    assert command(tenantId=OTHER.upper()).tenant_id == OTHER
    assert command().tenant_id is None  # queued before tenants were recorded: the deployment's own
    assert json.loads(command(tenantId=OTHER).to_json())["tenantId"] == OTHER
    for bad in ("contoso.onmicrosoft.com", "", "../x", OTHER + "0"):
        with pytest.raises(ValidationError):
            command(tenantId=bad)


def test_a_source_without_a_tenant_belongs_to_the_deployments() -> None:
    sources = json.dumps(
        {
            "mine": {"kind": "cloudevents", "registrationId": "reg-1", "secretSetting": "S"},
            "theirs": {"kind": "cloudevents", "registrationId": "reg-2", "secretSetting": "S", "tenantId": OTHER},
        }
    )
    settings = Settings.model_validate({"SOURCES": sources, "VIVA_APP_TENANT_ID": HOME.upper()})
    found = settings.sources()
    assert (found["mine"].tenant_id, found["theirs"].tenant_id) == (HOME, OTHER)
    bare = Settings.model_validate({"SOURCES": sources})
    assert bare.sources()["mine"].tenant_id is None
    with pytest.raises(SettingsError, match="VIVA_APP_TENANT_ID"):
        bare.home_tenant()
    with pytest.raises(ValidationError):
        Settings.model_validate({"VIVA_APP_TENANT_ID": "contoso"})


def test_the_payload_never_chooses_the_tenant() -> None:
    """Whatever a payload says about tenants (an extension attribute, a data field), the command's
    tenant is the source's. Without the source's tenant in the command this fails: it would be None."""
    source = SourceConfig(registrationId="reg-1", secretSetting="S", tenantId=OTHER)
    body = event("x.created", {**content("c-1")})
    body["tenantid"] = HOME  # a CloudEvents extension attribute naming another tenant
    request = WebhookRequest(
        source_name="demo",
        headers={"content-type": "application/cloudevents+json"},
        body=json.dumps(body).encode(),
        correlation_id="corr-1",
        received_at=datetime(2026, 11, 27, 9, 1, tzinfo=UTC),
    )
    [parsed] = CloudEventsAdapter().parse(request, source, Delivery("msg_1", datetime(2026, 11, 27, 9, 0, tzinfo=UTC)))
    assert parsed.tenant_id == OTHER


def test_every_lms_adapter_takes_the_tenant_from_its_source() -> None:
    """The field-by-field adapters (shared/sources/pipeline.py), Thinkific as the example."""
    from shared.sources.thinkific import ThinkificAdapter
    from tests.payloads import load, request, thinkific_headers
    from tests.pure.test_source_thinkific import API_KEY, source

    body = load("thinkific/product_updated")
    body["tenantId"] = HOME
    body.setdefault("payload", {})["tenantId"] = HOME
    src = source(tenantId=OTHER)
    req = request(body, source="thinkific", headers=thinkific_headers(body, API_KEY))
    adapter = ThinkificAdapter()
    commands = adapter.parse(req, src, adapter.authenticate(req, src, API_KEY))
    assert commands
    assert {c.tenant_id for c in commands} == {OTHER}
