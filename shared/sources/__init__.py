"""One adapter per platform: how it authenticates a delivery and how its events become commands.

New connectors (Moodle, Canvas, Open edX, Thinkific, Docebo, Event Grid, mapped sources) plug in
here by ``kind``; the intake never knows which platform it is talking to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.models import ContentCommand
from shared.settings import SourceConfig


@dataclass(frozen=True)
class WebhookRequest:
    """A webhook delivery as plain values (the handler converts the Functions request)."""

    source_name: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    correlation_id: str
    received_at: datetime

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Delivery:
    """What authentication established about a delivery."""

    delivery_id: str
    sent_at: datetime | None


class SourceAdapter(Protocol):
    kind: str

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery: ...

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]: ...


def adapters() -> Mapping[str, Callable[[], SourceAdapter]]:
    from shared.sources.cloudevents import CloudEventsAdapter

    return {"cloudevents": CloudEventsAdapter}


def adapter_for(kind: str) -> SourceAdapter:
    return adapters()[kind]()
