"""Publish the canonical event format as JSON Schema (``docs/event-schema.json``), from the models.

Run ``make schema`` after changing a model; a test fails while the published file is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared.models import ContentCommand, LearningContent
from shared.sources.cloudevents import DELETE_SUFFIX, UPSERT_SUFFIXES

EXAMPLE_UPSERT = {
    "specversion": "1.0",
    "id": "evt-0001",
    "source": "/lms/acme",
    "type": "com.acme.course.updated",
    "time": "2026-11-27T10:00:00Z",
    "subject": "course-101",
    "datacontenttype": "application/json",
    "data": {
        "externalId": "course-101",
        "title": "Safety basics",
        "contentWebUrl": "https://lms.acme.example/courses/101",
        "languageTag": "en-us",
        "description": "Everything a new starter needs on day one.",
        "level": "beginner",
        "duration": "PT45M",
        "format": "Course",
        "skillTags": ["safety"],
        "lastModifiedDateTime": "2026-11-27T09:58:00Z",
    },
}
EXAMPLE_DELETE = {
    "specversion": "1.0",
    "id": "evt-0002",
    "source": "/lms/acme",
    "type": "com.acme.course.deleted",
    "time": "2026-11-27T11:00:00Z",
    "subject": "course-101",
}


def event_schema() -> dict[str, Any]:
    content = LearningContent.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = content.pop("$defs", {})
    defs["learningContent"] = content
    content["required"] = [r for r in content.get("required", []) if r != "externalId"]
    content["description"] = (
        "Graph learningContent properties (v1.0 metadata). externalId may be left out when the event's "
        "subject carries it; unknown properties are rejected."
    )
    suffixes = "|".join(s.lstrip(".") for s in (*UPSERT_SUFFIXES, DELETE_SUFFIX))
    event = {
        "type": "object",
        "required": ["specversion", "id", "source", "type"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "minLength": 1, "description": "Unique per source; the dedupe key."},
            "source": {"type": "string", "minLength": 1},
            "type": {
                "type": "string",
                "pattern": rf"\.({suffixes})$",
                "description": "Ends in .created, .updated or .upserted (upsert) or .deleted (delete).",
            },
            "subject": {"type": "string", "minLength": 1, "description": "externalId when data has none."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string"},
            "dataschema": {"type": "string"},
            "data": {"$ref": "#/$defs/learningContent"},
        },
        "patternProperties": {"^[a-z0-9]{1,20}$": {"description": "CloudEvents extension attribute"}},
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:vlsync:schema:cloudevent-learning-content:v1",
        "title": "Viva Learning Sync event (CloudEvents 1.0, JSON format)",
        "description": "One event (application/cloudevents+json) or an array of them "
        "(application/cloudevents-batch+json). In binary mode the ce-* headers carry the attributes and "
        "the body is the data object.",
        "oneOf": [{"$ref": "#/$defs/event"}, {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/event"}}],
        "examples": [EXAMPLE_UPSERT, [EXAMPLE_UPSERT, EXAMPLE_DELETE]],
        "$defs": {"event": event, **defs},
    }


def queue_message_schema() -> dict[str, Any]:
    return ContentCommand.model_json_schema(by_alias=True)


def render() -> str:
    return json.dumps(event_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/event-schema.json")
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
