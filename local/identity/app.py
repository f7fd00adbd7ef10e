"""The aiohttp app: App Service's managed-identity protocol plus dev and test-control routes.

``GET /msi/token`` answers exactly what ``azure-identity``/``msal`` expect from
``IDENTITY_ENDPOINT`` on App Service, so the product code runs its real
``ManagedIdentityCredential`` locally. Errors are App Service-shaped JSON
(``{"statusCode", "message", "correlationId"}``) because that shape decides which exception the
SDK raises.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from local import tokens

from .config import API_VERSION, DEV_ADMIN_OBJECT_ID, DEV_APP_OBJECT_ID, DEV_CLIENT_ID, Identity, IdentityConfig

logger = logging.getLogger(__name__)

TOKEN_PATH = "/msi/token"  # noqa: S105 - a URL path, not a secret
DEV_TOKEN_PATH = "/dev/token"  # noqa: S105 - a URL path, not a secret
HEADER_NAME = "X-IDENTITY-HEADER"
SELECTORS = ("client_id", "object_id", "mi_res_id")
_SECRET_HINTS = ("secret", "header", "token", "password", "key", "sig")
_LOG_LIMIT = 1000


class TokenEndpointError(Exception):
    """A request the endpoint refuses; rendered as App Service's JSON error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Fault:
    """One injected failure for the next token request: wait, then answer ``status`` or drop the connection."""

    status: int | None = None
    drop: bool = False
    latency_ms: int = 0
    retry_after: str | None = None
    body: Any = None

    _KEYS = frozenset({"status", "drop", "latencyMs", "retryAfter", "body"})

    @classmethod
    def parse(cls, raw: Any) -> Fault:
        if not isinstance(raw, dict):
            raise ValueError("each fault must be a JSON object")
        unknown = set(raw) - cls._KEYS
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; allowed: {sorted(cls._KEYS)}")
        status, drop, latency = raw.get("status"), raw.get("drop", False), raw.get("latencyMs", 0)
        if status is not None and (isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599):
            raise ValueError("status must be an HTTP status code (200-599)")
        if not isinstance(drop, bool):
            raise ValueError("drop must be true or false")
        if isinstance(latency, bool) or not isinstance(latency, int) or latency < 0:
            raise ValueError("latencyMs must be a non-negative integer")
        if status is not None and drop:
            raise ValueError("a fault either answers a status or drops the connection, not both")
        if status is None and not drop and not latency:
            raise ValueError("a fault needs status, drop or latencyMs")
        retry_after = raw.get("retryAfter")
        if retry_after is not None and (status is None or isinstance(retry_after, bool)):
            raise ValueError("retryAfter needs a status and must be seconds")
        if "body" in raw and status is None:
            raise ValueError("body needs a status")
        return cls(status, drop, latency, None if retry_after is None else str(retry_after), raw.get("body"))

    def public(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"status": self.status, "drop": self.drop, "latencyMs": self.latency_ms}
        if self.retry_after is not None:
            shown["retryAfter"] = self.retry_after
        return shown


class IdentityState:
    """Pending faults and the request log; shared with the test thread, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._log: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)

    def add_faults(self, faults: list[Fault]) -> int:
        with self._lock:
            self._faults.extend(faults)
            return len(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._log.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()


STATE_KEY = web.AppKey("identity_state", IdentityState)
CONFIG_KEY = web.AppKey("identity_config", IdentityConfig)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
    return web.json_response(body, status=status, headers=headers)


def _safe_query(request: web.Request) -> dict[str, str]:
    """Query parameters for the log; anything secret-looking is masked (none of the protocol's are)."""
    return {k: ("***" if any(h in k.lower() for h in _SECRET_HINTS) else v) for k, v in request.query.items()}


def _check_header(request: web.Request, config: IdentityConfig) -> None:
    supplied = request.headers.get(HEADER_NAME)
    if supplied is None:
        raise TokenEndpointError(401, f"Unauthorized: the {HEADER_NAME} header is missing.")
    if not hmac.compare_digest(supplied.encode(), config.header.encode()):
        raise TokenEndpointError(401, f"Unauthorized: the {HEADER_NAME} header does not match.")


def normalize_resource(raw: str | None) -> str:
    """The audience to issue; a scope-style ``…/.default`` suffix is tolerated and removed."""
    resource = (raw or "").strip()
    if resource.endswith("/.default"):
        resource = resource[: -len("/.default")]
    if not resource:
        raise TokenEndpointError(400, "The 'resource' query parameter is required.")
    return resource


def select_identity(request: web.Request, config: IdentityConfig) -> Identity:
    chosen = {k: request.query[k] for k in SELECTORS if request.query.get(k)}
    if len(chosen) > 1:
        raise TokenEndpointError(400, f"Only one of {', '.join(SELECTORS)} may be given; got {sorted(chosen)}.")
    if not chosen:
        if config.system is None:
            raise TokenEndpointError(400, "Unable to load the proper Managed Identity: identity not found (system).")
        return config.system
    selector, value = next(iter(chosen.items()))
    found = config.find(selector, value)
    if found is None:
        raise TokenEndpointError(
            400, f"Unable to load the proper Managed Identity: identity not found ({selector}={value})."
        )
    return found


def _token_body(config: IdentityConfig, req: tokens.TokenRequest, resource: str) -> dict[str, Any]:
    token, expires_on = tokens.mint(req, key=config.signing_key)
    # App Service sends expires_on as a string of epoch seconds; msal and azure-identity accept it.
    return {
        "access_token": token,
        "expires_on": str(expires_on),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": req.client_id,
    }


async def _apply_fault(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    """Play the fault; ``None`` means it was latency only and the request proceeds normally."""
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.drop:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never sent: the connection is gone
    if fault.status is None:
        return None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    if fault.body is None:
        return _error(fault.status, "Injected fault (local identity endpoint).", headers)
    if isinstance(fault.body, str):
        return web.Response(status=fault.status, text=fault.body, headers=headers)
    return web.json_response(fault.body, status=fault.status, headers=headers)


async def _serve_token(
    request: web.Request, entry: dict[str, Any], issue: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Shared pipeline of both token routes: fault, then ``issue()``, then the log entry."""
    state = request.app[STATE_KEY]
    fault = state.next_fault()
    response: web.StreamResponse | None = None
    try:
        if fault is not None:
            entry["fault"] = fault.public()
            response = await _apply_fault(request, fault)
        if response is None:
            try:
                response = await issue()
            except TokenEndpointError as exc:
                entry["error"] = exc.message
                response = _error(exc.status, exc.message)
    finally:
        dropped = fault is not None and fault.drop
        entry["status"] = None if dropped or response is None else response.status
        if dropped:
            entry["dropped"] = True
        state.record(entry)
        logger.info(
            "%s %s status=%s identity=%s fault=%s error=%s",
            request.method,
            request.path,
            entry["status"],
            entry.get("identity"),
            entry.get("fault"),
            entry.get("error"),
        )
    return response


def _entry(request: web.Request) -> dict[str, Any]:
    return {
        "time": time.time(),
        "method": request.method,
        "path": request.path,
        "query": _safe_query(request),
        "headerPresent": HEADER_NAME in request.headers,
    }


async def msi_token(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    entry = _entry(request)

    async def issue() -> web.StreamResponse:
        _check_header(request, config)
        version = request.query.get("api-version")
        if version != API_VERSION:
            raise TokenEndpointError(400, f"api-version '{version or ''}' is not supported; use {API_VERSION}.")
        resource = normalize_resource(request.query.get("resource"))
        identity = select_identity(request, config)
        entry["identity"] = identity.client_id
        req = tokens.TokenRequest(
            audience=resource,
            tenant_id=config.tenant_id,
            client_id=identity.client_id,
            object_id=identity.object_id,
            roles=identity.roles,
            lifetime_seconds=config.lifetime_seconds,
        )
        return web.json_response(_token_body(config, req, resource))

    return await _serve_token(request, entry, issue)


def _string_list(body: dict[str, Any], key: str) -> tuple[str, ...]:
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TokenEndpointError(400, f"'{key}' must be a list of non-empty strings.")
    return tuple(v.strip() for v in value)


def _delegated_scopes(raw: tuple[str, ...], resource: str, config: IdentityConfig) -> tuple[str, ...]:
    """Accept bare scopes or ``<resource>/<scope>``; ``.default`` means the configured dev scopes."""
    scopes: list[str] = []
    for scope in raw:
        prefix, _, name = scope.rpartition("/") if "://" in scope else ("", "", scope)
        if prefix and prefix.rstrip("/") != resource.rstrip("/"):
            raise TokenEndpointError(400, f"Scope '{scope}' is not for resource '{resource}'.")
        for item in config.dev_scopes if name == ".default" else (name,):
            if item not in scopes:
                scopes.append(item)
    if not scopes:
        raise TokenEndpointError(400, "'scopes' must name at least one scope.")
    return tuple(scopes)


async def dev_token(request: web.Request) -> web.StreamResponse:
    """Tokens for operator tooling: delegated for the local admin user (``scopes``) or app-only (``roles``)."""
    config = request.app[CONFIG_KEY]
    entry = _entry(request)

    async def issue() -> web.StreamResponse:
        _check_header(request, config)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokenEndpointError(400, f"The body must be JSON: {exc}.") from exc
        if not isinstance(body, dict):
            raise TokenEndpointError(400, "The body must be a JSON object.")
        resource = normalize_resource(body.get("resource", tokens.GRAPH_AUDIENCE))
        entry["body"] = {k: body[k] for k in ("resource", "scopes", "roles") if k in body}
        if ("scopes" in body) == ("roles" in body):
            raise TokenEndpointError(400, "Give either 'scopes' (delegated token) or 'roles' (app token).")
        if "scopes" in body:
            scopes = _delegated_scopes(_string_list(body, "scopes"), resource, config)
            req = tokens.TokenRequest(
                audience=resource,
                tenant_id=config.tenant_id,
                client_id=DEV_CLIENT_ID,
                object_id=DEV_ADMIN_OBJECT_ID,
                scopes=scopes,
                lifetime_seconds=config.lifetime_seconds,
            )
        else:
            req = tokens.TokenRequest(
                audience=resource,
                tenant_id=config.tenant_id,
                client_id=DEV_CLIENT_ID,
                object_id=DEV_APP_OBJECT_ID,
                roles=_string_list(body, "roles"),
                lifetime_seconds=config.lifetime_seconds,
            )
        entry["identity"] = DEV_CLIENT_ID
        return web.json_response(_token_body(config, req, resource))

    return await _serve_token(request, entry, issue)


async def add_faults(request: web.Request) -> web.Response:
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"The body must be JSON: {exc}.")
    items = raw if isinstance(raw, list) else [raw]
    try:
        faults = [Fault.parse(item) for item in items]
    except ValueError as exc:
        return _error(400, str(exc))
    pending = request.app[STATE_KEY].add_faults(faults)
    logger.info("queued %s fault(s); %s pending", len(faults), pending)
    return web.json_response({"pending": pending})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_faults()
    return web.json_response({"pending": 0})


async def list_requests(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STATE_KEY].requests()})


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE_KEY].clear_requests()
    return web.Response(status=204)


async def health(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    return web.json_response(
        {
            "status": "ok",
            "apiVersion": API_VERSION,
            "lifetimeSeconds": config.lifetime_seconds,
            "systemAssigned": config.system.public() if config.system else None,
            "userAssigned": [i.public() for i in config.user_assigned],
            "pendingFaults": request.app[STATE_KEY].pending_faults,
        }
    )


def build_app(config: IdentityConfig, state: IdentityState | None = None) -> web.Application:
    """The app for ``config``; pass ``state`` to drive faults and read the log from another thread."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app[STATE_KEY] = state or IdentityState()
    app.router.add_get(TOKEN_PATH, msi_token)
    app.router.add_post(DEV_TOKEN_PATH, dev_token)
    app.router.add_post("/_identity/faults/next", add_faults)
    app.router.add_delete("/_identity/faults", clear_faults)
    app.router.add_get("/_identity/requests", list_requests)
    app.router.add_delete("/_identity/requests", clear_requests)
    app.router.add_get("/_identity/health", health)
    return app
