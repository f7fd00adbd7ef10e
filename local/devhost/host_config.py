"""The parts of host.json the dev host honours: the HTTP route prefix and ``extensions.queues``.

Defaults follow the queue extension's ``QueuesOptions`` with local-development values: one
processor (so ``newBatchThreshold`` defaults to ``batchSize // 2``) and a 2 s maximum polling
interval. Keys are matched case-insensitively, as .NET configuration binding does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_BATCH_SIZE = 32  # the Storage GetMessages limit
MIN_POLLING_INTERVAL = 0.1  # seconds; the extension rejects anything lower
LOCAL_MAX_POLLING_INTERVAL = 2.0  # seconds; the host's default when running locally
MESSAGE_ENCODINGS = ("base64", "none")

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,7}))?)?$")


class HostConfigError(ValueError):
    """host.json holds a value the host would reject."""


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues``; times are in seconds."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = LOCAL_MAX_POLLING_INTERVAL
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def parse_timespan(value: object, *, setting: str) -> float:
    """Parse a .NET TimeSpan string (``[d.]hh:mm[:ss[.fffffff]]``) into seconds."""
    if not isinstance(value, str):
        raise HostConfigError(f"{setting} must be a TimeSpan string such as '00:00:02', got {value!r}")
    text = value.strip()
    if text.isdigit():  # TimeSpan.Parse("2") is two days
        return int(text) * 86400.0
    match = _TIMESPAN.match(text)
    if not match:
        raise HostConfigError(f"{setting} must be a TimeSpan string such as '00:00:02', got {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes) > 59 or int(seconds or 0) > 59:
        raise HostConfigError(f"{setting}: {value!r} is out of range")
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def _lower_keys(section: object) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in section.items()} if isinstance(section, Mapping) else {}


def _int_setting(section: Mapping[str, Any], key: str, default: int, *, setting: str) -> int:
    value = section.get(key.lower(), default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HostConfigError(f"{setting} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise HostConfigError(f"{setting} must be an integer, got {value!r}") from exc


def parse_queue_options(section: Mapping[str, Any] | None, *, processor_count: int = 1) -> QueueOptions:
    """Validate ``extensions.queues`` the way ``QueuesOptions`` does and fill in the defaults."""
    raw = _lower_keys(section or {})
    prefix = "extensions.queues."
    batch_size = _int_setting(raw, "batchSize", 16, setting=prefix + "batchSize")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise HostConfigError(f"{prefix}batchSize must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    threshold = _int_setting(
        raw, "newBatchThreshold", (batch_size // 2) * processor_count, setting=prefix + "newBatchThreshold"
    )
    if threshold < 0:
        raise HostConfigError(f"{prefix}newBatchThreshold must not be negative, got {threshold}")
    max_dequeue = _int_setting(raw, "maxDequeueCount", 5, setting=prefix + "maxDequeueCount")
    if max_dequeue < 1:
        raise HostConfigError(f"{prefix}maxDequeueCount must be at least 1, got {max_dequeue}")
    polling = LOCAL_MAX_POLLING_INTERVAL
    if "maxpollinginterval" in raw:
        polling = parse_timespan(raw["maxpollinginterval"], setting=prefix + "maxPollingInterval")
        if polling < MIN_POLLING_INTERVAL:
            raise HostConfigError(f"{prefix}maxPollingInterval must be at least 00:00:00.1")
    visibility = 0.0
    if "visibilitytimeout" in raw:
        visibility = parse_timespan(raw["visibilitytimeout"], setting=prefix + "visibilityTimeout")
    encoding = str(raw.get("messageencoding", "base64")).lower()
    if encoding not in MESSAGE_ENCODINGS:
        raise HostConfigError(f"{prefix}messageEncoding must be 'base64' or 'none', got {encoding!r}")
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        max_polling_interval=polling,
        visibility_timeout=visibility,
        max_dequeue_count=max_dequeue,
        message_encoding=encoding,
    )


def parse_host_config(doc: Mapping[str, Any]) -> HostConfig:
    """Read the route prefix and queue options from a parsed host.json document."""
    extensions = _lower_keys(_lower_keys(doc).get("extensions"))
    http = _lower_keys(extensions.get("http"))
    prefix = http.get("routeprefix", "api")
    if not isinstance(prefix, str):
        raise HostConfigError(f"extensions.http.routePrefix must be a string, got {prefix!r}")
    return HostConfig(route_prefix=prefix.strip("/"), queues=parse_queue_options(extensions.get("queues")))


def load_host_config(source: Path | str | Mapping[str, Any] | None) -> HostConfig:
    """Accept a host.json path, an already-parsed document, or None (all defaults).

    A path that does not exist means defaults, like an app without host.json under Core Tools.
    """
    if source is None:
        return HostConfig()
    if isinstance(source, Mapping):
        return parse_host_config(source)
    path = Path(source)
    if not path.exists():
        return HostConfig()
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise HostConfigError(f"{path} must hold a JSON object")
    return parse_host_config(doc)
