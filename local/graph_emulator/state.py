"""In-memory tenant data with an optional JSON snapshot.

Data is partitioned by the token's ``tid`` so two tenants never see each other's providers.
Content keeps insertion order (stable paging). With a snapshot path every mutation is appended to a
journal before it is answered, and the journal is folded into the snapshot now and then
(``persistence.py``: crash-safe, O(1) per write); ``close`` folds the rest in.

Emulator choice (real behaviour undocumented): deleting a provider deletes its content.

Content keeps every accepted write with its time, so reads can lag behind writes
(``--visibility-lag-ms``): a read sees the newest write that is at least the lag old. A delete takes
effect at once (Graph answers it 204, not 202).

A provider remembers the app id that registered it (``registered_by_app_id``: the ``appid`` of the
delegated token of its POST). It is emulator bookkeeping, not a Graph property: Graph responses never
show it; the snapshot and ``GET /_emulator/state`` keep it as ``registeredByAppId`` next to the
properties, ``GET /_emulator/providers`` lists it. A snapshot written before the binding existed has no
such key: its providers load unbound (``None``), and any app may write their content.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .persistence import COMPACT_MIN_ENTRIES, SNAPSHOT_VERSION, FsyncPolicy, Journal, ProviderView, TenantsView

log = logging.getLogger("graph_emulator.state")

# SNAPSHOT_VERSION 1: registeredByAppId and journalSeq are optional within it (older snapshots load
# unbound, with nothing journalled after them).
REGISTERED_BY = "registeredByAppId"  # the snapshot key of Provider.registered_by_app_id


@dataclass
class Provider:
    props: dict[str, Any]
    # The appid of the delegated token that registered it (None: unknown, e.g. from an older snapshot).
    registered_by_app_id: str | None = None
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)  # the newest write per id
    by_external_id: dict[str, str] = field(default_factory=dict)
    # (written at, lag when written, content) per id, oldest first, for reads that lag behind writes.
    versions: dict[str, list[tuple[float, float, dict[str, Any]]]] = field(default_factory=dict)

    def visible(self, content_id: str, lag_seconds: float, now: float) -> dict[str, Any] | None:
        """The newest write that has become visible; older writes can no longer be seen and go.

        A write becomes visible after the lag of its time, or sooner if the lag was lowered since.
        """
        versions = self.versions.get(content_id, [])
        seen = [i for i, (written, lag, _) in enumerate(versions) if written + min(lag, lag_seconds) <= now]
        if not seen:
            return None
        del versions[: seen[-1]]
        return dict(versions[0][2])

    @property
    def id(self) -> str:
        return str(self.props["id"])


class EmulatorState:
    """All tenants' providers and content. Mutators persist the snapshot when one is configured.

    The lock makes in-process inspection from a test thread safe while the server thread runs.
    """

    def __init__(
        self,
        snapshot_path: Path | str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        fsync: FsyncPolicy = "interval",
        compact_min_entries: int = COMPACT_MIN_ENTRIES,
        background_compaction: bool = True,
    ) -> None:
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self._clock = clock
        self._lock = threading.RLock()
        self._tenants: dict[str, dict[str, Provider]] = {}
        self._background = background_compaction
        self.journal: Journal | None = None
        if self.snapshot_path is None:
            return
        self.journal = Journal(self.snapshot_path, fsync=fsync, compact_min_entries=compact_min_entries)
        snapshot, entries = self.journal.read()
        if snapshot is not None:
            self.load(snapshot)
        for entry in entries:
            self._apply(entry)
        if entries:
            # Fold the replayed entries in now: the next start reads one file, and replay never grows.
            with self._lock:
                self.journal.begin_compaction(self._capture(), background=False)
        log.info("loaded snapshot path=%s tenants=%s replayed=%s", self.snapshot_path, len(self._tenants), len(entries))

    # -- providers ---------------------------------------------------------------------------
    def providers(self, tenant_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p.props) for p in self._tenants.get(tenant_id, {}).values()]

    def provider(self, tenant_id: str, provider_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._tenants.get(tenant_id, {}).get(provider_id)
            return dict(found.props) if found else None

    def create_provider(
        self, tenant_id: str, props: dict[str, Any], *, registered_by_app_id: str | None = None
    ) -> dict[str, Any]:
        """Register a provider; ``registered_by_app_id`` is the app it is bound to (kept by updates)."""
        with self._lock:
            provider_id = str(uuid.uuid4())
            provider = Provider({**props, "id": provider_id}, registered_by_app_id)
            self._tenants.setdefault(tenant_id, {})[provider_id] = provider
            self._record({"op": "provider", "t": tenant_id, "props": provider.props, "app": registered_by_app_id})
            return dict(provider.props)

    def registered_by_app_id(self, tenant_id: str, provider_id: str) -> str | None:
        """The app id the provider is bound to; None if it is unbound or does not exist."""
        with self._lock:
            found = self._tenants.get(tenant_id, {}).get(provider_id)
            return found.registered_by_app_id if found else None

    def registrations(self) -> list[dict[str, Any]]:
        """Every tenant's providers with the app each is bound to (``GET /_emulator/providers``)."""
        with self._lock:
            return [
                {
                    "tenantId": tid,
                    "id": p.id,
                    "displayName": p.props.get("displayName"),
                    REGISTERED_BY: p.registered_by_app_id,
                }
                for tid, providers in self._tenants.items()
                for p in providers.values()
            ]

    def update_provider(self, tenant_id: str, provider_id: str, changes: dict[str, Any]) -> bool:
        with self._lock:
            found = self._tenants.get(tenant_id, {}).get(provider_id)
            if not found:
                return False
            found.props = {**found.props, **changes}  # replaced, not mutated: a compaction may hold the old one
            self._record({"op": "provider", "t": tenant_id, "props": found.props, "app": found.registered_by_app_id})
            return True

    def delete_provider(self, tenant_id: str, provider_id: str) -> bool:
        with self._lock:
            removed = self._tenants.get(tenant_id, {}).pop(provider_id, None)
            if removed:
                self._record({"op": "dropProvider", "t": tenant_id, "id": provider_id})
            return removed is not None

    # -- content -----------------------------------------------------------------------------
    def _provider(self, tenant_id: str, provider_id: str) -> Provider:
        return self._tenants[tenant_id][provider_id]

    def contents(self, tenant_id: str, provider_id: str, lag_seconds: float = 0.0) -> list[dict[str, Any]]:
        """The provider's content as a read sees it (``lag_seconds``: writes younger than this are not seen)."""
        with self._lock:
            provider, now = self._provider(tenant_id, provider_id), self._clock()
            found = (provider.visible(content_id, lag_seconds, now) for content_id in provider.contents)
            return [content for content in found if content is not None]

    def content_by_id(
        self, tenant_id: str, provider_id: str, content_id: str, lag_seconds: float = 0.0
    ) -> dict[str, Any] | None:
        """By id; with the default lag 0 the newest write (what writes work on)."""
        with self._lock:
            provider = self._provider(tenant_id, provider_id)
            if content_id not in provider.contents:
                return None
            return provider.visible(content_id, lag_seconds, self._clock())

    def content_by_external_id(
        self, tenant_id: str, provider_id: str, external_id: str, lag_seconds: float = 0.0
    ) -> dict[str, Any] | None:
        with self._lock:
            content_id = self._provider(tenant_id, provider_id).by_external_id.get(external_id)
            return self.content_by_id(tenant_id, provider_id, content_id, lag_seconds) if content_id else None

    def put_content(
        self, tenant_id: str, provider_id: str, content: dict[str, Any], lag_seconds: float = 0.0
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace by ``content['externalId']``; keep the id and position on replace.

        Returns the stored content and whether it was created; reads see it after ``lag_seconds``.
        """
        with self._lock:
            provider = self._provider(tenant_id, provider_id)
            external_id = str(content["externalId"])
            existing_id = provider.by_external_id.get(external_id)
            content_id = existing_id or str(uuid.uuid4())
            stored = {**content, "id": content_id}
            provider.contents[content_id] = stored
            provider.by_external_id[external_id] = content_id
            provider.versions.setdefault(content_id, []).append((self._clock(), lag_seconds, dict(stored)))
            self._record({"op": "content", "t": tenant_id, "p": provider_id, "c": stored})
            return dict(stored), existing_id is None

    def delete_content(self, tenant_id: str, provider_id: str, content_id: str) -> bool:
        with self._lock:
            provider = self._provider(tenant_id, provider_id)
            removed = provider.contents.pop(content_id, None)
            if removed is None:
                return False
            provider.by_external_id.pop(str(removed["externalId"]), None)
            provider.versions.pop(content_id, None)
            self._record({"op": "dropContent", "t": tenant_id, "p": provider_id, "id": content_id})
            return True

    # -- whole state -------------------------------------------------------------------------
    def clear(self) -> None:
        with self._lock:
            self._tenants.clear()
            self._record({"op": "clear"})

    def dump(self) -> dict[str, Any]:
        """JSON form used for the snapshot file and ``GET /_emulator/state``."""
        with self._lock:
            return {
                "version": SNAPSHOT_VERSION,
                "tenants": {
                    tid: {
                        "providers": [
                            {
                                **p.props,
                                REGISTERED_BY: p.registered_by_app_id,
                                "learningContents": list(p.contents.values()),
                            }
                            for p in providers.values()
                        ]
                    }
                    for tid, providers in self._tenants.items()
                },
            }

    def load(self, data: dict[str, Any]) -> None:
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
        tenants: dict[str, dict[str, Provider]] = {}
        for tid, tenant in data["tenants"].items():
            providers: dict[str, Provider] = {}
            for raw in tenant["providers"]:
                props = {k: v for k, v in raw.items() if k not in ("learningContents", REGISTERED_BY)}
                registered_by = raw.get(REGISTERED_BY)
                provider = Provider(props, str(registered_by) if registered_by else None)
                for content in raw.get("learningContents", []):
                    provider.contents[content["id"]] = content
                    provider.by_external_id[content["externalId"]] = content["id"]
                    provider.versions[content["id"]] = [(float("-inf"), 0.0, content)]  # visible at once
                providers[provider.id] = provider
            tenants[tid] = providers
        with self._lock:
            self._tenants = tenants

    # -- persistence ---------------------------------------------------------------------------
    def _record(self, entry: dict[str, Any]) -> None:
        """Journal a mutation (under the lock, before it is answered); compact when the journal is due."""
        journal = self.journal
        if journal is None:
            return
        journal.append(entry)
        if journal.wants_compaction():
            journal.begin_compaction(self._capture(), background=self._background)

    def _capture(self) -> TenantsView:
        """The state by reference, for a snapshot written outside the lock: the lists are new, the dicts
        are never mutated once stored (writes replace them)."""
        return {
            tid: [
                ProviderView({**p.props, REGISTERED_BY: p.registered_by_app_id}, list(p.contents.values()))
                for p in providers.values()
            ]
            for tid, providers in self._tenants.items()
        }

    def _apply(self, entry: dict[str, Any]) -> None:
        """Replay one journal entry (written by ``_record``); reads see it at once, as after ``load``."""
        op = entry["op"]
        if op == "clear":
            self._tenants.clear()
        elif op == "provider":
            tenant = self._tenants.setdefault(entry["t"], {})
            props = dict(entry["props"])
            existing = tenant.get(str(props["id"]))
            if existing is None:
                tenant[str(props["id"])] = Provider(props, entry.get("app"))
            else:
                existing.props = props
        elif op == "dropProvider":
            self._tenants.get(entry["t"], {}).pop(entry["id"], None)
        elif op == "content":
            provider = self._provider(entry["t"], entry["p"])
            content = entry["c"]
            provider.contents[content["id"]] = content
            provider.by_external_id[content["externalId"]] = content["id"]
            provider.versions[content["id"]] = [(float("-inf"), 0.0, content)]
        elif op == "dropContent":
            provider = self._provider(entry["t"], entry["p"])
            removed = provider.contents.pop(entry["id"], None)
            if removed is not None:
                provider.by_external_id.pop(str(removed["externalId"]), None)
                provider.versions.pop(entry["id"], None)
        else:
            raise ValueError(f"unknown journal operation {op!r} (entry {entry.get('s')})")

    def persistence(self) -> dict[str, Any]:
        """What ``GET /_emulator/persistence`` shows."""
        journal = self.journal
        if journal is None:
            return {"snapshot": str(self.snapshot_path) if self.snapshot_path else None, "journal": None}
        error = journal.last_error
        return {
            "snapshot": str(journal.snapshot_path),
            "journal": [str(p) for p in journal.segments()],
            "fsync": journal.fsync,
            "pendingEntries": journal.pending,
            "compactions": journal.compactions,
            "compacting": journal.compacting,
            "lastCompactionSeconds": journal.last_compaction_seconds,
            "lastError": repr(error) if error else None,
        }

    def compact(self, *, background: bool = False) -> bool:
        """Fold the journal into the snapshot now (in this thread, or in the background); False without a
        snapshot path, or in the background while a compaction already runs."""
        journal = self.journal
        if journal is None:
            return False
        if background and journal.compacting:
            return False
        journal.wait_compaction()
        with self._lock:
            journal.begin_compaction(self._capture(), background=background)
        return True

    def close(self) -> None:
        """Fold what is journalled into the snapshot and close the journal; the state stays readable."""
        journal = self.journal
        if journal is None:
            return
        journal.wait_compaction()
        with self._lock:
            if journal.pending or journal.segments():
                journal.begin_compaction(self._capture(), background=False)
            journal.close()
            self.journal = None
