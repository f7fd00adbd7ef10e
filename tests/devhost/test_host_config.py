"""host.json: queue extension defaults, validation and TimeSpan parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from local.devhost.host_config import (
    HostConfig,
    HostConfigError,
    QueueOptions,
    load_host_config,
    parse_queue_options,
    parse_timespan,
)


def test_defaults_are_the_extensions_local_ones() -> None:
    config = load_host_config(None)
    assert config.route_prefix == "api"
    assert config.queues == QueueOptions(
        batch_size=16,
        new_batch_threshold=8,
        max_polling_interval=2.0,
        visibility_timeout=0.0,
        max_dequeue_count=5,
        message_encoding="base64",
    )


def test_new_batch_threshold_defaults_to_half_the_batch_per_processor() -> None:
    assert parse_queue_options({"batchSize": 5}).new_batch_threshold == 2
    assert parse_queue_options({"batchSize": 5}, processor_count=4).new_batch_threshold == 8
    assert parse_queue_options({"batchSize": 5, "newBatchThreshold": 0}).new_batch_threshold == 0


def test_values_are_read_case_insensitively() -> None:
    config = load_host_config(
        {
            "Extensions": {
                "HTTP": {"RoutePrefix": "/v1/"},
                "Queues": {"BATCHSIZE": 4, "visibilitytimeout": "00:00:30", "MessageEncoding": "None"},
            }
        }
    )
    assert config.route_prefix == "v1"
    assert config.queues.batch_size == 4
    assert config.queues.visibility_timeout == 30.0
    assert config.queues.message_encoding == "none"


def test_empty_route_prefix_is_allowed() -> None:
    assert load_host_config({"extensions": {"http": {"routePrefix": ""}}}).route_prefix == ""


def test_project_host_json_is_readable(tmp_path: Path) -> None:
    doc = {"version": "2.0", "extensions": {"queues": {"batchSize": 8, "maxPollingInterval": "00:00:00.5"}}}
    path = tmp_path / "host.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    config = load_host_config(path)
    assert (config.queues.batch_size, config.queues.max_polling_interval) == (8, 0.5)
    assert load_host_config(tmp_path / "missing.json") == HostConfig()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:02", 2.0),
        ("00:01:00", 60.0),
        ("00:00:00.1", 0.1),
        ("00:00:00.250", 0.25),
        ("01:02:03", 3723.0),
        ("1.00:00:01", 86401.0),
        ("00:05", 300.0),
        ("2", 172800.0),  # TimeSpan.Parse: a bare number is days
    ],
)
def test_timespans(text: str, seconds: float) -> None:
    assert parse_timespan(text, setting="x") == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["2s", "00:60:00", 2000, "abc"])
def test_bad_timespans_are_rejected(value: object) -> None:
    with pytest.raises(HostConfigError, match="x"):
        parse_timespan(value, setting="x")


@pytest.mark.parametrize(
    ("queues", "fragment"),
    [
        ({"batchSize": 0}, "batchSize must be between 1 and 32"),
        ({"batchSize": 33}, "batchSize must be between 1 and 32"),
        ({"batchSize": "many"}, "batchSize must be an integer"),
        ({"newBatchThreshold": -1}, "newBatchThreshold"),
        ({"maxDequeueCount": 0}, "maxDequeueCount must be at least 1"),
        ({"maxPollingInterval": "00:00:00.05"}, "at least 00:00:00.1"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
    ],
)
def test_invalid_queue_options_are_rejected(queues: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HostConfigError, match=fragment):
        parse_queue_options(queues)
