"""The lease rule with announced events (issue 11, coalescing), as a property of ``judge_claim``: an
announcement only ever holds back events older than itself, and a recorded event keeps its meaning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ledger import ItemBusy, announced_key, judge_claim
from shared.models import order_key

T = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW = T + timedelta(hours=1)

keys = st.tuples(st.integers(0, 4), st.sampled_from(["upsert", "delete"]), st.sampled_from(["", "a", "b"]))


def at(seconds: int) -> datetime:
    return T + timedelta(seconds=seconds)


def row(recorded: Any, announced: Any, holder: str, live: bool) -> dict[str, Any] | None:
    entity: dict[str, Any] = {"PartitionKey": "t:reg", "externalId": "x"}
    if recorded is not None:
        seconds, op, event_id = recorded
        entity.update(op=op, eventTime=at(seconds), pushedAt=T, sourceEventId=event_id)
    if announced is not None:
        seconds, op, event_id = announced
        entity.update(announcedTime=at(seconds), announcedOp=op, announcedEventId=event_id)
    if holder:
        entity.update(leaseOwner=holder, leaseUntil=NOW + timedelta(seconds=30 if live else -30))
    return entity if len(entity) > 2 else None


@given(
    recorded=st.none() | keys,
    announced=st.none() | keys,
    holder=st.sampled_from(["", "me", "other"]),
    live=st.booleans(),
    event=keys,
)
def test_only_an_event_older_than_what_is_recorded_or_announced_is_held_back(
    recorded: Any, announced: Any, holder: str, live: bool, event: Any
) -> None:
    current = row(recorded, announced, holder, live)
    seconds, op, event_id = event
    mine = order_key(at(seconds), op, event_id or None)
    older_than_recorded = recorded is not None and order_key(at(recorded[0]), recorded[1], recorded[2] or None) >= mine
    older_than_announced = (
        announced is not None and order_key(at(announced[0]), announced[1], announced[2] or None) > mine
    )
    if not (older_than_recorded or older_than_announced) and holder == "other" and live:
        with pytest.raises(ItemBusy):
            judge_claim(current, "x", at(seconds), "me", op, event_id or None, NOW)
        return
    claim = judge_claim(current, "x", at(seconds), "me", op, event_id or None, NOW)
    assert claim.stale == (older_than_recorded or older_than_announced)
    # Superseded only names an event the record alone would have let through.
    assert claim.superseded == (older_than_announced and not older_than_recorded)


def test_the_announced_event_itself_and_newer_ones_go_ahead() -> None:
    current = row(None, (3, "upsert", "e"), "", False)
    assert announced_key(current) == order_key(at(3), "upsert", "e")
    assert not judge_claim(current, "x", at(3), "me", "upsert", "e", NOW).stale
    assert not judge_claim(current, "x", at(3), "me", "delete", "e", NOW).stale  # a delete orders after
    assert judge_claim(current, "x", at(2), "me", "delete", "z", NOW).superseded
    assert announced_key(row((1, "upsert", ""), None, "", False)) is None
