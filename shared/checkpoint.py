"""The checkpoint of a backfill: which catalog records are finished, so a run started again after an
interruption sends none of them twice.

Records finish out of order (many are in flight at once), so the finished set is kept as sorted,
merged ranges of line numbers: its first range is the contiguous done prefix, and the few ranges
after it are what finished beyond a record still in flight or failed. Its size follows the number
of gaps, not of records. The file is rewritten whole (a temporary file, then an atomic rename), so
a crash leaves the previous checkpoint or the new one, never half of one.

A checkpoint belongs to one input and one target: the input's name, size and modification time are
recorded, and so are the tenant, the registration, the Graph base URL and the storage account the
run wrote to; a checkpoint of another (or an edited) file, or of another target, is refused rather
than applied to the wrong lines or taken as work done where it was not (``CheckpointMismatch``).
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION = 2  # 2: the target is recorded (a version 1 checkpoint is refused: its target is unknown)
TARGET_KEYS = ("tenant", "registrationId", "graph", "storage")


class DoneRanges:
    """A set of positive integers held as sorted, disjoint, non-adjacent ``[start, end]`` ranges."""

    def __init__(self, ranges: list[tuple[int, int]] | None = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges or []:
            for number in (start, end):
                if not isinstance(number, int) or number < 1:
                    raise ValueError(f"a range holds positive line numbers, not {number!r}")
            if end < start:
                raise ValueError(f"range [{start}, {end}] ends before it starts")
            self.add_range(start, end)

    def add(self, number: int) -> None:
        self.add_range(number, number)

    def add_range(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self._ends, start - 1)  # the first range that ends at or after start - 1
        j = i
        while j < len(self._starts) and self._starts[j] <= end + 1:
            start, end = min(start, self._starts[j]), max(end, self._ends[j])
            j += 1
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        i = bisect.bisect_right(self._starts, number) - 1
        return i >= 0 and number <= self._ends[i]

    def prefix(self) -> int:
        """The last line of the contiguous done prefix starting at line 1 (0: line 1 is not done)."""
        return self._ends[0] if self._starts and self._starts[0] == 1 else 0

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def count(self) -> int:
        return sum(end - start + 1 for start, end in zip(self._starts, self._ends, strict=True))


class CheckpointMismatch(ValueError):
    """The checkpoint was written for another input (or before the input was edited)."""


def fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtimeNs": stat.st_mtime_ns}


def default_path(input_path: Path) -> Path:
    """Next to the input: ``catalog.ndjson`` -> ``catalog.ndjson.checkpoint.json``."""
    return input_path.with_name(input_path.name + ".checkpoint.json")


def source_input(name: str, identity: dict[str, Any]) -> dict[str, Any]:
    """The recorded input of an LMS source's backfill (``vlsync backfill --source``): its name and what
    says which LMS catalog it lists (``identity``: kind, API root, account), in place of a file's size and
    modification time. A checkpoint of another source, or of this one re-pointed, is refused."""
    return {"source": name, **identity}


def default_source_path(name: str, directory: Path) -> Path:
    """In ``directory`` (the working directory): ``source-NAME.checkpoint.json``."""
    return directory / f"source-{name}.checkpoint.json"


@dataclass
class Checkpoint:
    """The done ranges of one input, plus what a resumed run must reuse (the run's event time)."""

    path: Path
    input: dict[str, Any]
    done: DoneRanges = field(default_factory=DoneRanges)
    extra: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] | None = None  # what the run writes to (``TARGET_KEYS``); None until bound

    def bind(self, target: dict[str, Any]) -> None:
        """Tie the checkpoint to ``target`` (``TARGET_KEYS``: tenant, registration, Graph, storage), or
        ``CheckpointMismatch`` when it was written for another one. A value not known (``None``) on
        either side is not compared, and is filled in when the other side knows it."""
        wanted = {key: target.get(key) for key in TARGET_KEYS}
        if self.target is not None:
            differing = [
                key
                for key in TARGET_KEYS
                if self.target.get(key) is not None and wanted[key] is not None and self.target[key] != wanted[key]
            ]
            if differing:
                was = ", ".join(f"{key} {self.target[key]!r}" for key in differing)
                now = ", ".join(f"{key} {wanted[key]!r}" for key in differing)
                raise CheckpointMismatch(
                    f"{self.path} was written for {was}, not {now}: its done lines were done there; "
                    "use --restart to start over for this target, or --checkpoint to name another file"
                )
            wanted = {key: wanted[key] if wanted[key] is not None else self.target.get(key) for key in TARGET_KEYS}
        self.target = wanted

    @classmethod
    def open(
        cls,
        path: Path,
        input_path: Path | dict[str, Any],
        *,
        target: dict[str, Any] | None = None,
        restart: bool = False,
    ) -> Checkpoint:
        """The checkpoint at ``path`` for ``input_path`` (a file, or the recorded input of another kind of
        catalog: ``source_input``), bound to ``target`` (``bind``): a new one when there is none (or
        ``restart``); ``CheckpointMismatch`` when the one there belongs to another input or another target."""
        current = input_path if isinstance(input_path, dict) else fingerprint(input_path)
        if restart or not path.exists():
            fresh = cls(path, current)
            if target is not None:
                fresh.bind(target)
            return fresh
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            recorded = data["input"]
            done = DoneRanges([(int(a), int(b)) for a, b in data["done"]])
            bound = data.get("target")
            if data.get("version") != VERSION or not isinstance(bound, dict):
                raise ValueError(f"version {data.get('version')!r}, this version writes {VERSION} with its target")
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatch(
                f"{path} is not a checkpoint this version can read ({exc}); use --restart"
            ) from None
        if recorded != current and ("source" in recorded or "source" in current):
            raise CheckpointMismatch(
                f"{path} was written for {_described(recorded)}, not {_described(current)}; use --restart to "
                "start over, or --checkpoint to name another file"
            )
        if recorded != current:
            raise CheckpointMismatch(
                f"{path} was written for {recorded.get('name')!r} of {recorded.get('size')} bytes "
                f"(modified {recorded.get('mtimeNs')}), not this input ({current['size']} bytes, modified "
                f"{current['mtimeNs']}); use --restart to start over, or --checkpoint to name another file"
            )
        found = cls(path, current, done, dict(data.get("extra") or {}), bound)
        if target is not None:
            found.bind(target)
        return found

    def save(self) -> None:
        if self.target is None:
            raise ValueError("bind the checkpoint to its target before saving it")
        document = {
            "version": VERSION,
            "input": self.input,
            "target": self.target,
            "done": self.done.ranges(),
            "extra": self.extra,
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, self.path)


def _described(recorded: dict[str, Any]) -> str:
    if "source" in recorded:
        return (
            "source "
            + ", ".join(f"{key} {value!r}" for key, value in recorded.items() if key != "source")
            + (f" named {recorded['source']!r}")
        )
    return f"file {recorded.get('name')!r}"
