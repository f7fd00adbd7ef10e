"""OpenTelemetry for the product: one trace from webhook to Graph call, and its counters.

The intake's span context travels inside each queue message (W3C ``traceparent``), so the worker's
span and the Graph call join the webhook's trace even though a queue sits between them. Export goes
to Application Insights (azure-monitor-opentelemetry) when its connection setting is present, with
Entra authentication when ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` asks for it (local auth is
off in the deployed resource). Without the setting the API is a no-op, so nothing else changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context

from shared.settings import Settings

logger = logging.getLogger(__name__)

tracer = trace.get_tracer("vlsync")
_meter = metrics.get_meter("vlsync")

EVENTS_ACCEPTED = _meter.create_counter(
    "vlsync.events.accepted", unit="{event}", description="Webhook events accepted and queued"
)
EVENTS_REJECTED = _meter.create_counter(
    "vlsync.events.rejected", unit="{request}", description="Webhook requests rejected, by problem type"
)
COMMANDS_APPLIED = _meter.create_counter(
    "vlsync.commands.applied", unit="{command}", description="Commands applied to Graph, by outcome"
)
COMMANDS_RETRIED = _meter.create_counter(
    "vlsync.commands.retried", unit="{command}", description="Commands handed back to the queue for a retry"
)
COMMANDS_SKIPPED_STALE = _meter.create_counter(
    "vlsync.commands.skipped_stale", unit="{command}", description="Commands older than what Graph already has"
)
COMMANDS_HELD = _meter.create_counter(
    "vlsync.commands.held", unit="{command}", description="Commands held while their registration is disabled"
)
COMMANDS_PARKED = _meter.create_counter(
    "vlsync.commands.parked", unit="{command}", description="Commands parked in the poison queue, by reason"
)
CIRCUIT_OPENED = _meter.create_counter(
    "vlsync.circuit.opened", unit="{event}", description="Times the Graph circuit opened (Graph kept failing)"
)
CIRCUIT_CLOSED = _meter.create_counter(
    "vlsync.circuit.closed", unit="{event}", description="Times the Graph circuit closed again (Graph answered)"
)

_configured = False


def _auth_client_id(auth: str | None) -> str | bool | None:
    """Parse ``ClientId=<id>;Authorization=AAD``: the client id, ``True`` for system identity, or ``False``."""
    if not auth:
        return False
    parts = dict(p.split("=", 1) for p in auth.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return False
    return parts.get("ClientId") or True


def configure(settings: Settings) -> bool:
    """Start exporting to Application Insights once per process, if configured."""
    global _configured
    if _configured or not settings.applicationinsights_connection_string:
        return _configured
    from azure.monitor.opentelemetry import configure_azure_monitor

    client_id = _auth_client_id(settings.applicationinsights_authentication_string)
    kwargs = {}
    if client_id is not False:
        from azure.identity import ManagedIdentityCredential

        kwargs["credential"] = ManagedIdentityCredential(client_id=client_id if isinstance(client_id, str) else None)
    configure_azure_monitor(connection_string=settings.applicationinsights_connection_string, **kwargs)
    _configured = True
    logger.info("telemetry export to Application Insights on (entra auth: %s)", client_id is not False)
    return True


def inject() -> dict[str, str]:
    """The current span context as W3C trace headers, to carry in a queue message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str] | None) -> Context:
    return propagate.extract(dict(carrier or {}))
