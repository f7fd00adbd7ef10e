"""Crash-safe persistence at O(1) per write: a snapshot file plus an append-only journal.

Files, for ``--snapshot FILE``:

- ``FILE``: the snapshot (version 1, the format older emulators wrote; it now also carries
  ``journalSeq``, the last journal entry it includes, which older snapshots lack and which counts as 0).
- ``FILE.journal.<first seq>``: journal segments, one JSON line per mutation (``{"s": seq, "op": …}``),
  oldest first. Normally one; a second exists while a compaction runs.

A write appends its line with one ``os.write`` on an ``O_APPEND`` descriptor before the request is
answered, so an acknowledged write is in the kernel once the answer leaves: a killed emulator
(SIGKILL, a crash) loses nothing it acknowledged. ``fsync`` policy ``interval`` (the default) syncs the
journal to disk once a second, so a power cut or kernel crash loses at most the last second: an
emulator on a developer's machine guards against its own process dying, and an ``fsync`` per write
(``always``) costs a disk flush per request (milliseconds on many disks, well below 1,000 writes/s).

Compaction folds the journal into a new snapshot: under the state's lock the current segment is closed
(new writes start the next one) and the state is captured by reference (stored content dicts are never
mutated, only replaced); a background thread then streams the snapshot to a temporary file, fsyncs it,
renames it over ``FILE``, fsyncs the directory, and only then deletes the segments it covers. A crash at
any point leaves a snapshot plus segments that hold every later entry; replay skips entries the snapshot
already holds (``s <= journalSeq``). Compaction starts when the journal since the last one holds more
entries than the larger of ``compact_min_entries`` and the item count of the last snapshot, so its O(N)
cost is spread over at least N writes (amortised O(1)).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("graph_emulator.persistence")

FsyncPolicy = Literal["always", "interval"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval")

SNAPSHOT_VERSION = 1
JOURNAL_SEQ = "journalSeq"
# Below this many journal entries a compaction is not worth its full rewrite, whatever the state's size.
COMPACT_MIN_ENTRIES = 50_000
FSYNC_INTERVAL_SECONDS = 1.0  # what a power cut may lose under the "interval" policy
_CHUNK_ITEMS = 500  # items encoded per write while streaming a snapshot: short GIL holds, few syscalls


@dataclass(frozen=True)
class ProviderView:
    """A provider as a snapshot stores it: properties (with ``registeredByAppId``) and content."""

    props: dict[str, Any]
    contents: list[dict[str, Any]]


TenantsView = dict[str, list[ProviderView]]


class JournalCorrupt(ValueError):
    """A journal line that is not a complete JSON entry, other than a torn last line."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_seq(path: Path, prefix: str) -> int | None:
    suffix = path.name.removeprefix(prefix)
    return int(suffix) if suffix != path.name and suffix.isdigit() else None


def snapshot_chunks(seq: int, tenants: TenantsView) -> Iterator[str]:
    """The snapshot document, piece by piece (same JSON as ``EmulatorState.dump`` plus ``journalSeq``)."""
    yield f'{{"version": {SNAPSHOT_VERSION}, "{JOURNAL_SEQ}": {seq}, "tenants": {{'
    for t_index, (tid, providers) in enumerate(tenants.items()):
        yield ("," if t_index else "") + json.dumps(tid, ensure_ascii=False) + ': {"providers": ['
        for p_index, provider in enumerate(providers):
            head = json.dumps(provider.props, ensure_ascii=False)[:-1]  # reopen the object for the content
            yield ("," if p_index else "") + head + (", " if provider.props else "") + '"learningContents": ['
            contents = provider.contents
            for start in range(0, len(contents), _CHUNK_ITEMS):
                chunk = ",".join(json.dumps(c, ensure_ascii=False) for c in contents[start : start + _CHUNK_ITEMS])
                yield ("," if start else "") + chunk
            yield "]}"
        yield "]}"
    yield "}}"


class Journal:
    """The snapshot file and its journal segments. The owner serialises ``append`` and ``begin_compaction``
    (``EmulatorState`` calls both under its lock); the rest is thread-safe."""

    def __init__(
        self,
        snapshot_path: Path,
        *,
        fsync: FsyncPolicy = "interval",
        compact_min_entries: int = COMPACT_MIN_ENTRIES,
        fsync_interval: float = FSYNC_INTERVAL_SECONDS,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"unknown fsync policy {fsync!r}")
        self.snapshot_path = snapshot_path
        self.fsync = fsync
        self.compact_min_entries = compact_min_entries
        self._prefix = snapshot_path.name + ".journal."
        self._seq = 0
        self._fd: int | None = None
        self._segment_first = 1
        self._entries_since_compaction = 0
        self._snapshot_items = 0
        self._dirty = False
        self._io_lock = threading.Lock()  # the descriptor, against the fsync thread
        self._compacting: threading.Thread | None = None
        self.compactions = 0
        self.last_compaction_seconds: float | None = None
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync == "interval":
            self._syncer = threading.Thread(
                target=self._sync_loop, args=(fsync_interval,), name="graph-emulator-fsync", daemon=True
            )
            self._syncer.start()

    # -- reading -------------------------------------------------------------------------------
    def segments(self) -> list[Path]:
        """The journal segments on disk, oldest first."""
        directory = self.snapshot_path.parent
        if not directory.exists():
            return []
        found = [(seq, p) for p in directory.iterdir() if (seq := _segment_seq(p, self._prefix)) is not None]
        return [p for _, p in sorted(found)]

    def read(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The snapshot (None if there is none) and the journal entries it does not hold, in order."""
        snapshot: dict[str, Any] | None = None
        if self.snapshot_path.exists():
            snapshot = json.loads(self.snapshot_path.read_text(encoding="utf-8"))
        covered = int(snapshot.get(JOURNAL_SEQ, 0)) if snapshot else 0
        self._snapshot_items = _count_items(snapshot) if snapshot else 0
        entries = [e for e in self._read_segments() if e["s"] > covered]
        self._seq = max([covered, *(e["s"] for e in entries)])
        self._segment_first = self._seq + 1
        self._entries_since_compaction = len(entries)
        return snapshot, entries

    def _read_segments(self) -> Iterator[dict[str, Any]]:
        segments = self.segments()
        for index, segment in enumerate(segments):
            lines = segment.read_bytes().split(b"\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as exc:
                    last = index == len(segments) - 1 and number == len(lines)
                    if last:
                        # A line without its newline was cut by a crash inside its write: that write was
                        # never acknowledged (the answer follows the whole line), so it is not lost.
                        log.warning("journal ends with a torn entry, ignored path=%s line=%s", segment, number)
                        continue
                    raise JournalCorrupt(f"{segment}:{number}: not a journal entry ({exc})") from exc
                if not isinstance(entry, dict) or not isinstance(entry.get("s"), int):
                    raise JournalCorrupt(f"{segment}:{number}: a journal entry needs an integer 's'")
                yield entry

    # -- writing -------------------------------------------------------------------------------
    def append(self, entry: dict[str, Any]) -> int:
        """Write one mutation; returns its sequence number. Call under the owner's lock."""
        self._seq += 1
        line = json.dumps({"s": self._seq, **entry}, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._io_lock:
            if self._fd is None:
                self.snapshot_path.parent.mkdir(parents=True, exist_ok=True)
                path = self.snapshot_path.with_name(f"{self._prefix}{self._segment_first:012d}")
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            data = line.encode("utf-8")
            written = os.write(self._fd, data)
            if written != len(data):  # a regular file takes a whole write unless the disk is full
                raise OSError(f"short journal write ({written} of {len(data)} bytes)")
            if self.fsync == "always":
                os.fsync(self._fd)
            else:
                self._dirty = True
        self._entries_since_compaction += 1
        return self._seq

    def wants_compaction(self) -> bool:
        due = self._entries_since_compaction > max(self.compact_min_entries, self._snapshot_items)
        return due and self._compacting is None

    def begin_compaction(self, tenants: TenantsView, *, background: bool) -> None:
        """Seal the current segment and write a snapshot of ``tenants`` (captured by the caller under its
        lock, at the current sequence number), then delete the sealed segments."""
        seq = self._seq
        with self._io_lock:
            self._close_fd()
        sealed = [p for p in self.segments() if (_segment_seq(p, self._prefix) or 0) <= seq]
        self._segment_first = seq + 1
        self._entries_since_compaction = 0
        items = sum(len(p.contents) for providers in tenants.values() for p in providers)
        if not background:
            self._compact(seq, tenants, sealed, items)
            return
        thread = threading.Thread(
            target=self._compact, args=(seq, tenants, sealed, items), name="graph-emulator-compaction", daemon=True
        )
        self._compacting = thread
        thread.start()

    def _compact(self, seq: int, tenants: TenantsView, sealed: list[Path], items: int) -> None:
        started = time.perf_counter()
        try:
            self.write_snapshot(snapshot_chunks(seq, tenants))
            for segment in sealed:
                segment.unlink(missing_ok=True)
            self._snapshot_items = items
            self.compactions += 1
            self.last_compaction_seconds = time.perf_counter() - started
            log.info("journal compacted path=%s seq=%s items=%s", self.snapshot_path, seq, items)
        except Exception as exc:
            # The sealed segments stay, so nothing is lost; the next compaction covers them again.
            self.last_error = exc
            log.exception("journal compaction failed path=%s seq=%s", self.snapshot_path, seq)
            if threading.current_thread() is not self._compacting:
                raise
        finally:
            self._compacting = None

    def write_snapshot(self, chunks: Iterable[str]) -> None:
        """Write the snapshot atomically: temporary file, fsync, rename, fsync of the directory."""
        target = self.snapshot_path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
            _fsync_dir(target.parent)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def wait_compaction(self, timeout: float | None = None) -> None:
        thread = self._compacting
        if thread is not None:
            thread.join(timeout)

    @property
    def compacting(self) -> bool:
        return self._compacting is not None

    @property
    def pending(self) -> int:
        """Journal entries written since the last compaction began."""
        return self._entries_since_compaction

    # -- syncing and closing -----------------------------------------------------------------------
    def sync(self) -> None:
        with self._io_lock:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
            self._dirty = False

    def _sync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except OSError:
                log.exception("journal fsync failed path=%s", self.snapshot_path)

    def _close_fd(self) -> None:
        if self._fd is not None:
            if self._dirty or self.fsync == "always":
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._dirty = False

    def close(self) -> None:
        """Stop the fsync thread and close the segment (synced); the owner compacts first if it wants."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        self.wait_compaction()
        with self._io_lock:
            self._close_fd()


def _count_items(snapshot: dict[str, Any]) -> int:
    tenants = snapshot.get("tenants", {})
    return sum(len(p.get("learningContents", [])) for t in tenants.values() for p in t.get("providers", []))
