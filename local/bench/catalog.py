"""A synthetic LMS catalog for the backfill scenarios, streamed to a file (memory stays flat)."""

from __future__ import annotations

import json
from pathlib import Path

from .emulator import content_body, external_id


def write_catalog(path: Path, count: int, *, revision: int = 0) -> Path:
    """NDJSON, one course a line: ``externalId`` plus the Graph learningContent properties the bench's
    baselines send (``content_body``). Adjust here if ``vlsync backfill --file`` reads another shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            handle.write(
                json.dumps({"externalId": external_id(index), **content_body(index, revision=revision)}) + "\n"
            )
    return path
