"""In-memory tenant data with an optional JSON snapshot.

Data is partitioned by the token's ``tid`` so two tenants never see each other's providers.
Content keeps insertion order (stable paging). The snapshot is rewritten atomically (temp file +
rename) after every mutation so a killed emulator never leaves a torn file.

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

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("graph_emulator.state")

SNAPSHOT_VERSION = 1  # registeredByAppId is optional within version 1: older snapshots load unbound
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

    def __init__(self, snapshot_path: Path | str | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.snapshot_path = Path(snapshot_path) if snapshot_path else None
        self._clock = clock
        self._lock = threading.RLock()
        self._tenants: dict[str, dict[str, Provider]] = {}
        if self.snapshot_path and self.snapshot_path.exists():
            self.load(json.loads(self.snapshot_path.read_text(encoding="utf-8")))
            log.info("loaded snapshot path=%s tenants=%s", self.snapshot_path, len(self._tenants))

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
            self._persist()
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
            found.props.update(changes)
            self._persist()
            return True

    def delete_provider(self, tenant_id: str, provider_id: str) -> bool:
        with self._lock:
            removed = self._tenants.get(tenant_id, {}).pop(provider_id, None)
            if removed:
                self._persist()
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
            self._persist()
            return dict(stored), existing_id is None

    def delete_content(self, tenant_id: str, provider_id: str, content_id: str) -> bool:
        with self._lock:
            provider = self._provider(tenant_id, provider_id)
            removed = provider.contents.pop(content_id, None)
            if removed is None:
                return False
            provider.by_external_id.pop(str(removed["externalId"]), None)
            provider.versions.pop(content_id, None)
            self._persist()
            return True

    # -- whole state -------------------------------------------------------------------------
    def clear(self) -> None:
        with self._lock:
            self._tenants.clear()
            self._persist()

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

    def _persist(self) -> None:
        if not self.snapshot_path:
            return
        target = self.snapshot_path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.dump(), handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
