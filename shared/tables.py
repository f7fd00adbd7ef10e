"""Table storage's optimistic concurrency, the one way every shared row here is written (the circuit,
the write budget): create the row if it is new, replace it only if nobody changed it since it was read."""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
from azure.data.tables import TableClient, UpdateMode


def write_if_unchanged(table: TableClient, entity: dict[str, Any], etag: str | None) -> bool:
    """Create ``entity`` (``etag`` None: the row was absent when read) or replace it if its etag is still
    ``etag``. False: another writer got there first; read again and decide again."""
    try:
        if etag is None:
            table.create_entity(entity)
        else:
            table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
    except (ResourceExistsError, ResourceModifiedError):
        return False
    return True
