"""The fault harness's own oracle (local/faults/plan.py): the plan it sends and how it judges Graph's state.

`make faults` can only prove the product right if its oracle is right, so the oracle is tested here
without a stack: the order mirrors the ledger's, and each verdict (lost, resurrected, stale-won) is
given exactly when it should be.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from typing import Any

from local.faults.plan import Event, Plan, compare, make_plan, newest_per_course, order_key
from shared.ledger import order_key as ledger_order_key


def plan_of(events: list[Event]) -> Plan:
    courses = tuple(sorted({e.course for e in events}))
    return Plan("t", courses, tuple(events), (), ())


def graph_item(event: Event) -> dict[str, Any]:
    return {**event.content(), "id": f"id-{event.seq}"}


def test_order_mirrors_the_ledger() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        pair = [
            (rng.choice([100, 101]), rng.choice(["upsert", "delete"]), rng.choice(["a", "b", "c"])) for _ in range(2)
        ]
        ours = [order_key(t, op, i) for t, op, i in pair]  # type: ignore[arg-type]
        theirs = [ledger_order_key(datetime.fromtimestamp(t, tz=UTC), op, i) for t, op, i in pair]
        assert (ours[0] < ours[1]) == (theirs[0] < theirs[1])
        assert (ours[0] == ours[1]) == (theirs[0] == theirs[1])


def test_at_equal_times_the_delete_is_newest_then_the_larger_id() -> None:
    upsert = Event(0, "c1", "updated", "ffff", 100)
    delete = Event(1, "c1", "deleted", "0000", 100)
    assert newest_per_course([(delete, 100), (upsert, 100)])["c1"][0] is delete
    other = Event(2, "c2", "updated", "bbbb", 100)
    assert newest_per_course([(other, 100), (Event(3, "c2", "updated", "aaaa", 100), 100)])["c2"][0] is other
    assert newest_per_course([(upsert, 101), (delete, 100)])["c1"][0] is upsert


def test_each_verdict_is_given_when_it_should_be() -> None:
    old, new = Event(0, "kept", "created", "a", 100), Event(1, "kept", "updated", "b", 101)
    gone_upsert, gone = Event(2, "gone", "created", "c", 100), Event(3, "gone", "deleted", "d", 100)
    stale_old, stale_new = Event(4, "stale", "created", "e", 100), Event(5, "stale", "updated", "f", 102)
    missing = Event(6, "missing", "created", "g", 100)
    differs = Event(7, "differs", "created", "h", 100)
    events = [old, new, gone_upsert, gone, stale_old, stale_new, missing, differs]
    accepted = [(e, e.time or 0) for e in events]
    graph = {
        "kept": graph_item(new),
        "gone": graph_item(gone_upsert),
        "stale": graph_item(stale_old),
        "differs": {**graph_item(differs), "description": "something else"},
    }
    verdict = compare(plan_of(events), accepted, graph)
    assert verdict.matched == 1
    assert verdict.resurrected == ["gone"]
    assert verdict.stale_won == ["stale"]
    assert sorted(verdict.lost) == ["differs", "missing"]

    clean = {"kept": graph_item(new), "stale": graph_item(stale_new), "missing": graph_item(missing)}
    clean["differs"] = graph_item(differs)
    assert compare(plan_of(events), accepted, clean).matched == len({e.course for e in events})


def test_an_untimed_event_takes_its_accepted_time() -> None:
    untimed = Event(0, "c", "deleted", "z", None)
    timed = Event(1, "c", "updated", "a", 105)
    assert newest_per_course([(untimed, 104), (timed, 105)])["c"][0] is timed
    assert newest_per_course([(untimed, 106), (timed, 105)])["c"][0] is untimed


def test_a_plan_mixes_what_the_issue_asks_for() -> None:
    now = 1_800_000_000.0
    plan = make_plan("p", 2000, seed=1, now=now)
    kinds = {e.kind for e in plan.events}
    assert kinds == {"created", "updated", "deleted"}
    assert len(plan.events) == 2000
    assert len(plan.courses) == 100
    assert sum(e.time is None for e in plan.events) > 500  # untimed: the webhook-timestamp counts
    timed = [e for e in plan.events if e.time is not None]
    assert all(now - 20 <= (e.time or 0) < now + 10 for e in timed)
    ties = {(e.course, e.time) for e in timed}
    assert len(ties) < len(timed) / 2  # equal explicit times within a course are common
    assert any(
        a.course == b.course and a.time == b.time and {a.op, b.op} == {"upsert", "delete"}
        for a, b in itertools.pairwise(timed)
    )
    assert plan.resends == 200
    assert len(plan.order) == 2200
    assert plan.order != tuple(sorted(plan.order))  # shuffled
    first_seen: dict[int, int] = {}
    for position, index in enumerate(plan.order):
        first_seen.setdefault(index, position)
    assert all(first_seen[i] <= p for p, i in enumerate(plan.order))
    assert make_plan("p", 2000, seed=1, now=now) == plan  # seeded: a failing run can be replayed
    batched = make_plan("p", 200, seed=2, now=now, batch_ratio=0.5)
    assert any(len(d.events) > 1 for d in batched.deliveries)
    assert sum(len(d.events) for d in batched.deliveries) == 200
