"""The bench's synthetic catalog is valid Graph content, one course a line."""

from __future__ import annotations

import json
from pathlib import Path

from local.bench.catalog import write_catalog
from local.graph_emulator.schema import Validator, load_metadata


def test_every_line_is_a_complete_learning_content(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "items.ndjson", 50)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    metadata = load_metadata()
    validator = Validator(metadata)
    schema = metadata.entity("learningContent")
    ids = set()
    for line in lines:
        item = json.loads(line)
        ids.add(item["externalId"])
        validator.validate_body(schema, item, complete=True)  # raises a Graph 400 on anything Graph refuses
    assert len(ids) == 50
