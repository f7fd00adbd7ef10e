"""The aiohttp app: App Service's managed-identity protocol, Entra's token endpoint, dev and test-control routes.

``GET /msi/token`` answers exactly what ``azure-identity``/``msal`` expect from
``IDENTITY_ENDPOINT`` on App Service, so the product code runs its real
``ManagedIdentityCredential`` locally. Errors are App Service-shaped JSON
(``{"statusCode", "message", "correlationId"}``) because that shape decides which exception the
SDK raises.

``POST /{tenant}/oauth2/v2.0/token`` is Entra's token endpoint for the managed identity → app
exchange (``ClientAssertionCredential``); it answers only on the HTTPS listener, with Entra-shaped
errors (see ``entra.py``). All three token routes share fault injection and the request log.

Control routes (no header needed; the endpoint is local-only): ``/_identity/faults``,
``/_identity/requests``, ``/_identity/health`` and the app registrations ``GET /_identity/apps``,
``PUT``/``DELETE /_identity/apps/{clientId}``, ``DELETE /_identity/apps/{clientId}/federatedCredentials``.
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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from local import tokens

from . import entra
from .config import (
    API_VERSION,
    DEV_ADMIN_OBJECT_ID,
    DEV_APP_OBJECT_ID,
    DEV_CLIENT_ID,
    AppRegistration,
    Identity,
    IdentityConfig,
)

logger = logging.getLogger(__name__)

TOKEN_PATH = "/msi/token"  # noqa: S105 - a URL path, not a secret
DEV_TOKEN_PATH = "/dev/token"  # noqa: S105 - a URL path, not a secret
ENTRA_TOKEN_ROUTE = "/{tenant}/oauth2/v2.0/token"  # noqa: S105 - a URL path, not a secret
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


def entra_token_path(tenant_id: str) -> str:
    """The token endpoint's path for ``tenant_id`` (append it to the authority host)."""
    return ENTRA_TOKEN_ROUTE.replace("{tenant}", tenant_id)


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
    """Pending faults, the request log and the app registrations; shared with the test thread, hence the lock.

    Apps live here rather than in the frozen ``IdentityConfig`` because tests and the admin routes
    change them at run time (e.g. remove a federated credential, then restore it). Client ids are
    matched case-insensitively, as Entra matches GUIDs.
    """

    def __init__(self, apps: Iterable[AppRegistration] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._log: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)
        self._apps: dict[str, AppRegistration] = {a.client_id.lower(): a for a in apps}
        self._authority: tuple[str, str] | None = None

    def apps(self) -> list[AppRegistration]:
        with self._lock:
            return list(self._apps.values())

    def get_app(self, client_id: str) -> AppRegistration | None:
        with self._lock:
            return self._apps.get(client_id.strip().lower())

    def put_app(self, app: AppRegistration) -> bool:
        """Add or replace; ``True`` when it is new."""
        with self._lock:
            created = app.client_id.lower() not in self._apps
            self._apps[app.client_id.lower()] = app
            return created

    def replace_apps(self, apps: Iterable[AppRegistration]) -> None:
        with self._lock:
            self._apps = {a.client_id.lower(): a for a in apps}

    def delete_app(self, client_id: str) -> AppRegistration | None:
        with self._lock:
            return self._apps.pop(client_id.strip().lower(), None)

    def clear_federated_credentials(self, client_id: str) -> AppRegistration | None:
        """Remove the app's federated credentials; returns the app as it was (``put_app`` it to restore)."""
        with self._lock:
            before = self._apps.get(client_id.strip().lower())
            if before is not None:
                self._apps[before.client_id.lower()] = replace(before, federated_credentials=())
            return before

    def set_authority(self, authority_host: str, ca_file: str) -> None:
        """Where the HTTPS listener is and the CA it is trusted by; known only once it has started."""
        with self._lock:
            self._authority = (authority_host, ca_file)

    @property
    def authority(self) -> tuple[str, str] | None:
        with self._lock:
            return self._authority

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


# Token responses must not be cached (RFC 6749 §5.1: "Cache-Control: no-store", "Pragma: no-cache"); errors too.
_NO_STORE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}


def _entra_error(request: web.Request, exc: entra.EntraError, headers: dict[str, str] | None = None) -> web.Response:
    body = exc.body(correlation_id=request.headers.get("client-request-id"))
    return web.json_response(body, status=exc.status, headers=_NO_STORE | (headers or {}))


def _app_service_fault(request: web.Request, status: int, headers: dict[str, str] | None) -> web.Response:
    return _error(status, "Injected fault (local identity endpoint).", headers)


def _entra_fault(request: web.Request, status: int, headers: dict[str, str] | None) -> web.Response:
    return _entra_error(request, entra.injected(status), headers)


FaultRenderer = Callable[[web.Request, int, dict[str, str] | None], web.Response]


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


async def _apply_fault(request: web.Request, fault: Fault, render: FaultRenderer) -> web.StreamResponse | None:
    """Play the fault (``render`` shapes a body-less one as the route's errors); ``None``: latency only."""
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
        return render(request, fault.status, headers)
    if isinstance(fault.body, str):
        return web.Response(status=fault.status, text=fault.body, headers=headers)
    return web.json_response(fault.body, status=fault.status, headers=headers)


async def _serve_token(
    request: web.Request,
    entry: dict[str, Any],
    issue: Callable[[], Awaitable[web.StreamResponse]],
    render_fault: FaultRenderer = _app_service_fault,
) -> web.StreamResponse:
    """Shared pipeline of the token routes: fault, then ``issue()``, then the log entry."""
    state = request.app[STATE_KEY]
    fault = state.next_fault()
    response: web.StreamResponse | None = None
    try:
        if fault is not None:
            entry["fault"] = fault.public()
            response = await _apply_fault(request, fault, render_fault)
        if response is None:
            try:
                response = await issue()
            except TokenEndpointError as exc:
                entry["error"] = exc.message
                response = _error(exc.status, exc.message)
            except entra.EntraError as exc:
                entry["error"] = exc.message  # names issuer/subject/app ids at most, never a credential
                response = _entra_error(request, exc)
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
        # A token for the exchange audience is a client assertion, not an API token: Entra issues it
        # with its v2.0 issuer (the issuer an app's federated credential for a managed identity must
        # name) and it carries no app roles, which are permissions on Graph.
        exchange = resource == tokens.TOKEN_EXCHANGE_AUDIENCE
        req = tokens.TokenRequest(
            audience=resource,
            tenant_id=config.tenant_id,
            client_id=identity.client_id,
            object_id=identity.object_id,
            roles=() if exchange else identity.roles,
            lifetime_seconds=config.lifetime_seconds,
            version="2.0" if exchange else "1.0",
        )
        return web.json_response(_token_body(config, req, resource))

    return await _serve_token(request, entry, issue)


def _string_list(body: dict[str, Any], key: str) -> tuple[str, ...]:
    value = body[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TokenEndpointError(400, f"'{key}' must be a list of non-empty strings.")
    return tuple(v.strip() for v in value)


def _delegated_scopes(raw: tuple[str, ...], resource: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Accept bare scopes or ``<resource>/<scope>``; ``.default`` means ``default`` (what was consented)."""
    scopes: list[str] = []
    for scope in raw:
        prefix, _, name = scope.rpartition("/") if "://" in scope else ("", "", scope)
        if prefix and prefix.rstrip("/") != resource.rstrip("/"):
            raise TokenEndpointError(400, f"Scope '{scope}' is not for resource '{resource}'.")
        for item in default if name == ".default" else (name,):
            if item not in scopes:
                scopes.append(item)
    if not scopes:
        raise TokenEndpointError(400, "'scopes' must name at least one scope.")
    return tuple(scopes)


def _dev_client(body: dict[str, Any], state: IdentityState, config: IdentityConfig) -> AppRegistration | None:
    """The app a delegated dev token is for (``clientId``), refused the way Entra refuses the sign-in."""
    client_id = body.get("clientId")
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not client_id.strip():
        raise TokenEndpointError(400, "'clientId' must be a non-empty string.")
    app = state.get_app(client_id)
    if app is None:
        raise TokenEndpointError(400, entra.unknown_client(client_id, config.tenant_id).message)
    if "roles" in body:
        raise TokenEndpointError(
            400,
            "'clientId' is for delegated tokens ('scopes') only; an app's app tokens come from the token "
            f"exchange at {ENTRA_TOKEN_ROUTE}.",
        )
    if not app.public_client:
        # What Entra answers a public-client flow (device code, interactive) of a confidential app.
        raise TokenEndpointError(
            400,
            "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or "
            f"'client_secret'. (App '{app.client_id}' does not allow public client flows.)",
        )
    return app


async def dev_token(request: web.Request) -> web.StreamResponse:
    """Tokens for operator tooling: delegated for the local admin user (``scopes``) or app-only (``roles``).

    A delegated token may name a configured public-client app (``clientId``): it must have consented
    the scopes, and becomes the token's ``appid`` (the Graph emulator remembers which app registered
    a provider). Without it the client is ``DEV_CLIENT_ID``.
    """
    config = request.app[CONFIG_KEY]
    state = request.app[STATE_KEY]
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
        entry["body"] = {k: body[k] for k in ("resource", "scopes", "roles", "clientId") if k in body}
        if ("scopes" in body) == ("roles" in body):
            raise TokenEndpointError(400, "Give either 'scopes' (delegated token) or 'roles' (app token).")
        app = _dev_client(body, state, config)
        client_id = DEV_CLIENT_ID if app is None else app.client_id
        if "scopes" in body:
            consented = config.dev_scopes if app is None else app.scopes
            scopes = _delegated_scopes(_string_list(body, "scopes"), resource, consented)
            missing = [s for s in scopes if s not in consented]
            if app is not None and missing:
                raise TokenEndpointError(
                    400,
                    f"AADSTS65001: The user or administrator has not consented to use the application with ID "
                    f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization request for "
                    f"this user and resource. (Not consented: {', '.join(missing)}.)",
                )
            req = tokens.TokenRequest(
                audience=resource,
                tenant_id=config.tenant_id,
                client_id=client_id,
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
        entry["identity"] = client_id
        return web.json_response(_token_body(config, req, resource))

    return await _serve_token(request, entry, issue)


async def entra_token(request: web.Request) -> web.StreamResponse:
    """Entra's token endpoint, client-credentials grant with a federated assertion (checks in ``entra.py``)."""
    config = request.app[CONFIG_KEY]
    state = request.app[STATE_KEY]
    entry = _entry(request)

    async def issue() -> web.StreamResponse:
        if not request.secure:
            # azure-identity only ever calls an https authority; answering on http would hide a misconfiguration.
            raise TokenEndpointError(
                404, "The Entra token endpoint is served only on the HTTPS listener (authorityHost)."
            )
        entra.check_tenant(request.match_info["tenant"], config)
        posted = await request.post()
        form = {k: v for k, v in posted.items() if isinstance(v, str)}
        entry["body"] = {k: form[k] for k in entra.LOGGED_FIELDS if k in form}
        entry["body"]["credential"] = [k for k in ("client_assertion", "client_secret") if form.get(k)]
        entra.check_grant_type(form)
        client_id = entra.required(form, "client_id")
        scope = entra.required(form, "scope")
        app = state.get_app(client_id)
        if app is None:
            raise entra.unknown_client(client_id, config.tenant_id)
        entry["identity"] = app.client_id
        entra.client_credentials_resource(scope, config.tenant_id)
        assertion = entra.client_assertion(form, app)
        claims = entra.verify_assertion(assertion, key=config.signing_key)
        fic = entra.match_federated_credential(app, claims)
        entry["federatedCredential"] = fic.name
        return web.json_response(entra.app_token_body(app, config), headers=_NO_STORE)

    return await _serve_token(request, entry, issue, _entra_fault)


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
    state = request.app[STATE_KEY]
    authority_host, ca_file = state.authority or (None, None)
    return web.json_response(
        {
            "status": "ok",
            "apiVersion": API_VERSION,
            "lifetimeSeconds": config.lifetime_seconds,
            "tenantId": config.tenant_id,
            "systemAssigned": config.system.public() if config.system else None,
            "userAssigned": [i.public() for i in config.user_assigned],
            "apps": [a.client_id for a in state.apps()],
            "authorityHost": authority_host,
            "caFile": ca_file,
            "pendingFaults": state.pending_faults,
        }
    )


async def list_apps(request: web.Request) -> web.Response:
    return web.json_response({"apps": [a.public() for a in request.app[STATE_KEY].apps()]})


async def put_app(request: web.Request) -> web.Response:
    """Create or replace an app registration (body: ``AppRegistration.parse``'s camelCase JSON)."""
    try:
        raw = await request.json()
        app = AppRegistration.parse(raw, client_id=request.match_info["clientId"])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"The body must be JSON: {exc}.")
    except ValueError as exc:
        return _error(400, str(exc))
    created = request.app[STATE_KEY].put_app(app)
    logger.info("app %s %s", app.client_id, "created" if created else "replaced")
    return web.json_response(app.public(), status=201 if created else 200)


async def delete_app(request: web.Request) -> web.Response:
    client_id = request.match_info["clientId"]
    if request.app[STATE_KEY].delete_app(client_id) is None:
        return _error(404, f"No app with client id {client_id}.")
    logger.info("app %s deleted", client_id)
    return web.Response(status=204)


async def delete_federated_credentials(request: web.Request) -> web.Response:
    """Remove all the app's federated credentials (``PUT`` the app again to restore them); answers the app."""
    state = request.app[STATE_KEY]
    client_id = request.match_info["clientId"]
    if state.clear_federated_credentials(client_id) is None:
        return _error(404, f"No app with client id {client_id}.")
    logger.info("app %s: federated credentials removed", client_id)
    app = state.get_app(client_id)
    return web.json_response(None if app is None else app.public())


def build_app(config: IdentityConfig, state: IdentityState | None = None) -> web.Application:
    """The app for ``config``; pass ``state`` to drive faults and read the log from another thread.

    A ``state`` passed in keeps its own apps (build it as ``IdentityState(config.apps)``).
    """
    app = web.Application()
    app[CONFIG_KEY] = config
    app[STATE_KEY] = state or IdentityState(config.apps)
    app.router.add_get(TOKEN_PATH, msi_token)
    app.router.add_post(DEV_TOKEN_PATH, dev_token)
    app.router.add_post(ENTRA_TOKEN_ROUTE, entra_token)
    app.router.add_get("/_identity/apps", list_apps)
    app.router.add_put("/_identity/apps/{clientId}", put_app)
    app.router.add_delete("/_identity/apps/{clientId}", delete_app)
    app.router.add_delete("/_identity/apps/{clientId}/federatedCredentials", delete_federated_credentials)
    app.router.add_post("/_identity/faults/next", add_faults)
    app.router.add_delete("/_identity/faults", clear_faults)
    app.router.add_get("/_identity/requests", list_requests)
    app.router.add_delete("/_identity/requests", clear_requests)
    app.router.add_get("/_identity/health", health)
    return app
