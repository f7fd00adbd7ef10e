"""One adapter per platform: how it authenticates a delivery and how its events become commands.

Connectors plug in here by ``kind`` (``adapters()``); the intake never knows which platform it is
talking to. docs/sources.md describes every kind and its ``SOURCES`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the settings import the sources' rules (mapping, normalisation), not the reverse
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
    # The URL's query parameters (a source key may travel there: Event Grid, Open edX, Docebo).
    query: Mapping[str, str] = field(default_factory=dict)

    @property
    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Delivery:
    """What authentication established about a delivery."""

    delivery_id: str
    sent_at: datetime | None


@dataclass(frozen=True)
class VerifiedDocument(Delivery):
    """A delivery whose credential sits inside the body (a JWT, a token field): authentication had
    to decode the body, so it hands the decoded document on instead of parsing it twice."""

    document: Any = None


@dataclass
class Reply(Exception):
    """An answer a platform's protocol demands instead of a queued command (Event Grid's
    subscription validation, the CloudEvents abuse-protection preflight). Raised by an adapter;
    nothing is queued, and the intake renders it as the response (``shared.intake``)."""

    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class SourceAdapter(Protocol):
    kind: str
    # Top-level members of a JSON body that carry only the credential, never content (Moodle's
    # ``token``): the archive masks them, and a replay may still read the body (``intake.rederive``).
    body_credentials: frozenset[str]

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery: ...

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        """What ``authenticate`` establishes, without checking the credential: only for a delivery this
        app accepted and archived itself (``shared.archive``: its signature or key is masked, its
        timestamp old). A check of the source's own configuration (Canvas's account) still applies."""
        ...

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]: ...


def adapters() -> Mapping[str, Callable[[], SourceAdapter]]:
    from shared.sources.canvas import CanvasAdapter
    from shared.sources.cloudevents import CloudEventsAdapter
    from shared.sources.docebo import DoceboAdapter
    from shared.sources.eventgrid import EventGridAdapter
    from shared.sources.mapped import MappedAdapter
    from shared.sources.moodle import MoodleAdapter
    from shared.sources.openedx import OpenEdxAdapter
    from shared.sources.thinkific import ThinkificAdapter

    return {
        "cloudevents": CloudEventsAdapter,
        "canvas": CanvasAdapter,
        "moodle": MoodleAdapter,
        "openedx": OpenEdxAdapter,
        "thinkific": ThinkificAdapter,
        "docebo": DoceboAdapter,
        "eventgrid": EventGridAdapter,
        "mapped": MappedAdapter,
    }


def adapter_for(kind: str) -> SourceAdapter:
    return adapters()[kind]()


def preflight(request: WebhookRequest, source: SourceConfig, secret: str | None) -> Reply:
    """The answer to ``OPTIONS /api/webhooks/{source}``: the adapter's (a ``preflight`` method with
    this signature; it may raise a Problem, e.g. for a missing key), or 405 where it has none."""
    adapter = adapter_for(source.kind)
    if hasattr(adapter, "preflight"):
        answer: Reply = adapter.preflight(request, source, secret)
        return answer
    return Reply(405, None, {"Allow": "POST"})  # this platform has no preflight: only POST is served
