"""Builders of signed webhook deliveries for tests (the same signing the demo sender uses)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from shared.signatures import sign


def content(external_id: str = "course-1", **extra: Any) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "title": "Intro to Widgets",
        "contentWebUrl": "https://lms.example/courses/1",
        "languageTag": "en-us",
        **extra,
    }


def event(type_: str = "com.example.course.updated", data: Any = None, **attrs: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/lms/test",
        "type": type_,
        "time": "2026-01-15T10:00:00Z",
        **attrs,
    }
    if data is not None:
        doc["data"] = data
    return doc


def signed(
    body: bytes | str | Any,
    secret: str,
    *,
    content_type: str = "application/cloudevents+json",
    timestamp: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = sign(raw, secret, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=timestamp or int(time.time()))
    headers["content-type"] = content_type
    headers.update(extra_headers or {})
    return raw, headers
