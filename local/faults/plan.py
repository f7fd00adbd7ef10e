"""The events a fault run sends, and the state they must leave in Graph.

A plan is seeded and made before anything is sent: bursts of events for a few hot and many cold
courses (creates, updates, deletes, deletes of what is not there), about a third without ``time``
(their time is then the delivery's 1-second ``webhook-timestamp``) and the rest with explicit times
that often tie within a burst, some deliveries sent twice (same ``webhook-id``, same body, signed
again: a sender's retry), all in shuffled order. Each upsert carries its sequence number in the
title, the description and the URL, so the state Graph ends with names the event it came from.

The oracle is independent of the product's code: the newest event of a course under the product's
documented total order (``shared/ledger.py`` ``order_key``: event time; at equal times a delete
after an upsert; then the source event id) decides whether the course is present and with which
content.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

LEVELS = ("beginner", "intermediate", "advanced")
BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"
COMPARED = ("title", "description", "contentWebUrl", "level")  # the properties each event sets
_SEQ = re.compile(r"#(\d+)$")

Op = Literal["upsert", "delete"]


@dataclass(frozen=True)
class Event:
    seq: int
    course: str
    kind: Literal["created", "updated", "deleted"]
    event_id: str
    time: int | None  # explicit CloudEvents time (epoch seconds); None: the webhook-timestamp counts

    @property
    def op(self) -> Op:
        return "delete" if self.kind == "deleted" else "upsert"

    def content(self) -> dict[str, Any]:
        return {
            "externalId": self.course,
            "title": f"{self.course} #{self.seq}",
            "description": f"Fault harness event {self.seq} of {self.course}.",
            "contentWebUrl": f"https://lms.example/courses/{self.course}/{self.seq}",
            "languageTag": "en-us",
            "level": LEVELS[self.seq % len(LEVELS)],
        }

    def document(self, source: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "specversion": "1.0",
            "id": self.event_id,
            "source": source,
            "type": f"com.lms.course.{self.kind}",
            "subject": self.course,
        }
        if self.time is not None:
            doc["time"] = datetime.fromtimestamp(self.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.op == "upsert":
            doc["data"] = self.content()
        return doc


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: one event (structured mode) or several (a CloudEvents batch)."""

    index: int
    webhook_id: str
    events: tuple[Event, ...]
    body: bytes
    content_type: str


@dataclass(frozen=True)
class Plan:
    prefix: str
    courses: tuple[str, ...]
    events: tuple[Event, ...]
    deliveries: tuple[Delivery, ...]
    order: tuple[int, ...]  # delivery indexes in send order; a re-sent delivery appears twice

    @property
    def resends(self) -> int:
        return len(self.order) - len(self.deliveries)


def make_plan(
    prefix: str,
    size: int,
    *,
    seed: int,
    now: float,
    batch_ratio: float = 0.0,
    duplicate_ratio: float = 0.1,
    untimed_ratio: float = 0.35,
    time_span: int = 30,
) -> Plan:
    """``size`` events for ``prefix``-named courses; explicit times lie in ``[now - 20, now - 20 + time_span)``.

    The intake refuses times more than 5 minutes ahead, so the span stays short; it overlaps the
    send window, where the untimed events take their times, so both kinds interleave.
    """
    rng = random.Random(seed)
    n_courses = max(6, size // 20)
    courses = tuple(f"{prefix}-c{i:03d}" for i in range(n_courses))
    hot = courses[: max(1, n_courses // 5)]
    exists = dict.fromkeys(courses, False)
    base = int(now) - 20
    events: list[Event] = []
    while len(events) < size:
        course = rng.choice(hot) if rng.random() < 0.5 else rng.choice(courses)
        previous_time: int | None = None
        for _ in range(min(rng.randint(1, 6), size - len(events))):
            seq = len(events)
            if exists[course]:
                kind: Literal["created", "updated", "deleted"] = "deleted" if rng.random() < 0.3 else "updated"
            else:
                kind = "deleted" if rng.random() < 0.15 else "created"
            exists[course] = kind != "deleted"
            explicit: int | None = None
            if rng.random() >= untimed_ratio:
                # Monotone in the plan, one second holding many events, and half the time the same
                # second as the burst's previous event: equal times between updates and deletes.
                explicit = base + seq * time_span // size
                if previous_time is not None and rng.random() < 0.5:
                    explicit = previous_time
                previous_time = explicit
            events.append(Event(seq, course, kind, str(uuid.UUID(int=rng.getrandbits(128), version=4)), explicit))
    source = f"/lms/faults/{prefix}"
    deliveries: list[Delivery] = []
    i = 0
    while i < len(events):
        take = rng.randint(2, 5) if rng.random() < batch_ratio else 1
        group = tuple(events[i : i + take])
        i += len(group)
        if len(group) == 1:
            body, content_type = json.dumps(group[0].document(source)).encode(), STRUCTURED
        else:
            body, content_type = json.dumps([e.document(source) for e in group]).encode(), BATCH
        webhook_id = f"msg_{uuid.UUID(int=rng.getrandbits(128), version=4).hex}"
        deliveries.append(Delivery(len(deliveries), webhook_id, group, body, content_type))
    order = [d.index for d in deliveries]
    rng.shuffle(order)
    for again in rng.sample(range(len(deliveries)), round(duplicate_ratio * len(deliveries))):
        first = order.index(again)
        order.insert(rng.randint(first + 1, len(order)), again)
    return Plan(prefix, courses, tuple(events), tuple(deliveries), tuple(order))


def order_key(time: int, op: Op, event_id: str) -> tuple[int, int, str]:
    """The product's total order of one item's events (mirrors ``shared.ledger.order_key``)."""
    return (time, 1 if op == "delete" else 0, event_id)


def newest_per_course(accepted: Iterable[tuple[Event, int]]) -> dict[str, tuple[Event, int]]:
    """The newest accepted event of each course; ``accepted`` pairs each event with its effective time."""
    newest: dict[str, tuple[Event, int]] = {}
    for event, time in accepted:
        kept = newest.get(event.course)
        if kept is None or order_key(time, event.op, event.event_id) > order_key(kept[1], kept[0].op, kept[0].event_id):
            newest[event.course] = (event, time)
    return newest


@dataclass
class Verdict:
    """How Graph's state compares with the newest event of each course."""

    matched: int = 0
    lost: list[str] = field(default_factory=list)  # expected present, absent or with unknown content
    resurrected: list[str] = field(default_factory=list)  # expected absent (newest is a delete), present
    stale_won: list[str] = field(default_factory=list)  # present with an older event's content
    details: list[dict[str, Any]] = field(default_factory=list)


def landed_seq(item: Mapping[str, Any]) -> int | None:
    match = _SEQ.search(str(item.get("title") or ""))
    return int(match.group(1)) if match else None


def compare(
    plan: Plan,
    accepted: Iterable[tuple[Event, int]],
    graph: Mapping[str, Mapping[str, Any]],
) -> Verdict:
    """``accepted``: each accepted event with its effective time; ``graph``: the registration's items of
    this plan's courses, by externalId."""
    verdict = Verdict()
    accepted = list(accepted)
    newest = newest_per_course(accepted)
    by_seq = {e.seq: e for e in plan.events}
    times = {event.seq: time for event, time in accepted}
    batch_of = {e.seq: len(d.events) for d in plan.deliveries for e in d.events}

    def about(seq: int | None) -> dict[str, Any] | None:
        if seq is None or seq not in by_seq:
            return None
        event = by_seq[seq]
        timed = "time" if event.time is not None else "webhook-timestamp"
        return {"seq": seq, "op": event.op, timed: times.get(seq), "id": event.event_id, "batch": batch_of.get(seq, 1)}

    for course in plan.courses:
        want = newest.get(course)
        have = graph.get(course)
        expected_seq = want[0].seq if want and want[0].op == "upsert" else None
        note: dict[str, Any] = {"course": course, "newest": about(want[0].seq if want else None)}
        if expected_seq is None:
            if have is None:
                verdict.matched += 1
                continue
            verdict.resurrected.append(course)
            verdict.details.append({**note, "problem": "resurrected", "graph": about(landed_seq(have))})
            continue
        if have is None:
            verdict.lost.append(course)
            verdict.details.append({**note, "problem": "lost (absent)", "graph": None})
            continue
        seq = landed_seq(have)
        expected = by_seq[expected_seq].content()
        if seq == expected_seq and all(have.get(k) == expected[k] for k in COMPARED):
            verdict.matched += 1
        elif seq is not None and seq != expected_seq and seq in by_seq and by_seq[seq].course == course:
            verdict.stale_won.append(course)
            verdict.details.append({**note, "problem": "stale-won", "graph": about(seq)})
        else:
            verdict.lost.append(course)
            shown = {k: have.get(k) for k in COMPARED}
            verdict.details.append({**note, "problem": "lost (content differs)", "graph": seq, "properties": shown})
    return verdict
