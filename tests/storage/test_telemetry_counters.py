"""The product counters of the intake (real OTel SDK), with the commands queued in Azurite."""

from __future__ import annotations

import pytest

from shared import intake
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from tests import otel
from tests.conftest import SECRET
from tests.webhooks import content, event, signed


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    otel.install()


def test_counters_count_accepted_and_rejected(settings: Settings) -> None:
    before = otel.counter("vlsync.events.accepted").get((("vlsync.source", "demo"),), 0)
    batch = [event("x.created", content(f"k-{i}")) for i in range(3)]
    raw, headers = signed(batch, SECRET, content_type="application/cloudevents-batch+json")
    intake.receive(
        intake.make_request("demo", headers, raw), settings, lambda: StorageCommandQueue.from_settings(settings)
    )
    assert otel.counter("vlsync.events.accepted")[(("vlsync.source", "demo"),)] == before + 3

    raw, headers = signed(event("x.created", content()), SECRET)
    intake.receive(
        intake.make_request("demo", headers, raw + b"x"), settings, lambda: StorageCommandQueue.from_settings(settings)
    )
    rejected = otel.counter("vlsync.events.rejected")
    assert rejected[(("vlsync.problem", "signature-invalid"), ("vlsync.source", "demo"))] >= 1
