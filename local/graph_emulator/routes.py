"""The Graph API surface: path resolution, permission checks and the learning handlers.

One catch-all handler resolves the raw request target itself (decoded once, as Graph's front door
does, then split; see ``odata.py``), then dispatches on the resolved resource.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

from aiohttp import web

from . import auth
from .context import CALLER, RUNTIME, DeleteForms, EmulatorRuntime
from .errors import GraphError, access_denied, bad_request, method_not_allowed, not_found, segment_not_found
from .inbound import Inbound
from .odata import (
    ENTITY_OPTIONS,
    LIST_OPTIONS,
    KeyPredicate,
    QueryOptions,
    Segment,
    decode_key,
    next_link,
    parse_query,
    parse_segment,
    quote_literal,
    split_target,
)
from .payloads import json_response, read_json
from .schema import EntitySchema, Metadata, select_properties

log = logging.getLogger("graph_emulator.routes")

VERSIONS = ("v1.0", "beta")
SINGLETON = "employeeExperience"
PROVIDERS_NAV = "learningProviders"
CONTENTS_NAV = "learningContents"


class Kind(Enum):
    PROVIDERS = "providers"
    PROVIDER = "provider"
    CONTENTS = "contents"
    CONTENT = "content"


ALLOWED_METHODS: dict[Kind, tuple[str, ...]] = {
    Kind.PROVIDERS: ("GET", "POST"),
    Kind.PROVIDER: ("GET", "PATCH", "DELETE"),
    Kind.CONTENTS: ("GET",),
    Kind.CONTENT: ("GET", "PATCH", "DELETE"),
}


@dataclass(frozen=True)
class Route:
    kind: Kind
    provider_id: str | None = None
    content_id: str | None = None
    external_id: str | None = None
    ref: bool = False

    def allowed(self, delete_forms: DeleteForms) -> tuple[str, ...]:
        """The methods this resource takes. Content DELETE is on ``…/$ref`` (the documented form) and/or
        on the item itself (the SDK's form), as ``--delete-forms`` says."""
        if self.ref:
            return ("DELETE",)
        if self.kind is Kind.CONTENT and delete_forms == "documented":
            return ("GET", "PATCH")
        return ALLOWED_METHODS[self.kind]


def not_implemented(what: str) -> GraphError:
    return GraphError(501, "NotImplemented", f"The Graph emulator does not implement '{what}'.")


def _navigation(schema: EntitySchema, name: str) -> str | None:
    """Graph resolves segment names case-insensitively; return the canonical name."""
    return next((nav for nav in schema.navigation if nav.lower() == name.lower()), None)


def _key_value(key: KeyPredicate, schema: EntitySchema) -> tuple[str, str]:
    """Return ``(property, value)`` for a key predicate; only ``id`` and declared alternate keys."""
    if key.name is None or key.name == "id":
        return "id", key.value
    if key.name in schema.alternate_keys:
        return key.name, key.value
    accepted = ", ".join(["id", *schema.alternate_keys])
    raise bad_request(
        f"'{key.name}' is not a key or alternate key of '{schema.qualified_name}' "
        f"(accepted, case-sensitive: {accepted})."
    )


def _parse(segment: str, following: list[str]) -> Segment:
    try:
        return parse_segment(segment)
    except GraphError:
        if following and segment.count("'") % 2 == 1:
            # A '/' inside a key literal (one the front door decoded from %2F) cut it in two: Graph's
            # front door reports the piece after the cut (microsoft-graph-docs issue 10167).
            raise segment_not_found(following[0]) from None
        raise


def resolve(raw_segments: list[str], metadata: Metadata) -> Route:
    """Resolve the (front-door-decoded) segments after the version to a supported resource."""
    if not raw_segments:
        raise bad_request("The request URL does not name a resource.")
    first = _parse(raw_segments[0], raw_segments[1:])
    if first.name.lower() != SINGLETON.lower() or first.key:
        if first.name == "$batch":
            # Only reached from inside a batch (handle_graph serves a top-level one): none nests.
            raise bad_request("A request inside a $batch cannot itself be a $batch.")
        raise segment_not_found(first.name)
    if len(raw_segments) == 1:
        raise not_implemented(SINGLETON)

    second = _parse(raw_segments[1], raw_segments[2:])
    nav = _navigation(metadata.entity(SINGLETON), second.name)
    if nav is None:
        raise segment_not_found(second.name)
    if nav != PROVIDERS_NAV:
        raise not_implemented(f"{SINGLETON}/{nav}")
    provider_schema = metadata.entity("learningProvider")
    rest = raw_segments[2:]
    if second.key:
        provider_id = _key_value(second.key, provider_schema)[1]
    elif rest and not rest[0].startswith("$"):
        provider_id = decode_key(rest.pop(0))
        if not provider_id:
            raise bad_request("The learning provider id is empty.")
    elif rest:
        raise segment_not_found(rest[0])
    else:
        return Route(Kind.PROVIDERS)
    if not rest:
        return Route(Kind.PROVIDER, provider_id)

    segment = rest.pop(0)
    third = _parse(segment, rest)
    nav = _navigation(provider_schema, third.name)
    if nav is None:
        raise segment_not_found(third.name)
    if nav != CONTENTS_NAV:
        raise not_implemented(f"{PROVIDERS_NAV}/{nav}")
    content_schema = metadata.entity("learningContent")
    content_id: str | None = None
    external_id: str | None = None
    if third.key:
        prop, value = _key_value(third.key, content_schema)
        if prop == "id":
            content_id = value
        else:
            external_id = value
    elif rest and not rest[0].startswith("$"):
        content_id = decode_key(rest.pop(0))
    elif rest:
        raise segment_not_found(rest[0])
    else:
        return Route(Kind.CONTENTS, provider_id)

    ref = False
    if rest and rest[0] == "$ref":
        rest.pop(0)
        ref = True
    if rest:
        raise segment_not_found(rest[0])
    return Route(Kind.CONTENT, provider_id, content_id, external_id, ref)


@dataclass(frozen=True)
class Call:
    """One resolved Graph request and what the handlers need to answer it."""

    request: Inbound
    runtime: EmulatorRuntime
    caller: auth.Caller
    route: Route
    version: str
    raw_path: str
    raw_query: str

    @property
    def service_root(self) -> str:
        return f"{self.request.scheme}://{self.request.host}/{self.version}"

    @property
    def base_url(self) -> str:
        return f"{self.request.scheme}://{self.request.host}"

    def context(self, fragment: str) -> str:
        return f"{self.service_root}/$metadata#{fragment}"

    def options(self, allowed: frozenset[str]) -> QueryOptions:
        return parse_query(self.raw_query, allowed)


def _select_suffix(select: list[str] | None) -> str:
    return f"({','.join(select)})" if select else ""


def _render(entity: dict[str, Any], schema: EntitySchema, select: list[str] | None) -> dict[str, Any]:
    names = [n for n in schema.properties if select is None or n in select]
    return {name: entity.get(name) for name in names}


def _collection(call: Call, items: list[dict[str, Any]], schema: EntitySchema, context: str) -> web.Response:
    """Render one page of a collection with @odata.context and, when more remain, @odata.nextLink."""
    options = call.options(LIST_OPTIONS)
    select = select_properties(schema, options.select)
    page_size = call.runtime.settings.page_size
    size = page_size if options.top is None else min(options.top, page_size)
    page = items[options.skip : options.skip + size]
    payload: dict[str, Any] = {"@odata.context": call.context(context + _select_suffix(select))}
    end = options.skip + len(page)
    if size > 0 and end < len(items):
        payload["@odata.nextLink"] = next_link(call.base_url, call.raw_path, options, end)
    payload["value"] = [_render(item, schema, select) for item in page]
    return json_response(payload)


def _entity(call: Call, entity: dict[str, Any], schema: EntitySchema, context: str, status: int = 200) -> web.Response:
    select = select_properties(schema, call.options(ENTITY_OPTIONS).select) if status == 200 else None
    payload = {"@odata.context": call.context(f"{context}{_select_suffix(select)}/$entity")}
    payload.update(_render(entity, schema, select))
    return json_response(payload, status)


# -- providers ---------------------------------------------------------------------------------
async def _providers(call: Call) -> web.StreamResponse:
    rt, tid = call.runtime, call.caller.tenant_id
    schema = rt.metadata.entity("learningProvider")
    context = f"{SINGLETON}/{PROVIDERS_NAV}"
    if call.request.method == "GET":
        auth.require_provider(call.caller, write=False)
        return _collection(call, rt.state.providers(tid), schema, context)
    auth.require_provider(call.caller, write=True)
    call.options(frozenset())
    values = rt.validator.validate_body(schema, await read_json(call.request), complete=True, version=call.version)
    # The registration takes its app id from the token, not from the body (see _require_bound_app).
    app_id = call.caller.app_id
    created = rt.state.create_provider(tid, {**schema.blank(), **values}, registered_by_app_id=app_id)
    log.info("provider created tenant=%s provider=%s registeredByAppId=%s", tid, created["id"], app_id)
    location = f"{call.service_root}/{context}({quote_literal(created['id'])})"
    response = _entity(call, created, schema, context, status=201)
    response.headers["Location"] = location
    return response


async def _provider(call: Call) -> web.StreamResponse:
    rt, tid, method = call.runtime, call.caller.tenant_id, call.request.method
    schema = rt.metadata.entity("learningProvider")
    provider_id = str(call.route.provider_id)
    auth.require_provider(call.caller, write=method != "GET")
    options_allowed = ENTITY_OPTIONS if method == "GET" else frozenset()
    call.options(options_allowed)
    found = rt.state.provider(tid, provider_id)
    if found is None:
        raise not_found(f"The learningProvider with id '{provider_id}' was not found.")
    if method == "GET":
        return _entity(call, found, schema, f"{SINGLETON}/{PROVIDERS_NAV}")
    if method == "PATCH":
        changes = rt.validator.validate_body(
            schema, await read_json(call.request), complete=False, version=call.version
        )
        rt.state.update_provider(tid, provider_id, changes)
        log.info("provider updated tenant=%s provider=%s properties=%s", tid, provider_id, sorted(changes))
        return web.Response(status=204)
    rt.state.delete_provider(tid, provider_id)
    log.info("provider deleted tenant=%s provider=%s (with its content)", tid, provider_id)
    return web.Response(status=204)


# -- content -----------------------------------------------------------------------------------
def _require_registered(call: Call) -> str:
    provider_id = str(call.route.provider_id)
    if call.runtime.state.provider(call.caller.tenant_id, provider_id) is None:
        raise bad_request(
            f"Invalid registrationId '{provider_id}': no learning provider with this id is registered for this tenant."
        )
    return provider_id


def _same_app(a: str, b: str | None) -> bool:
    return b is not None and a.strip().lower() == b.strip().lower()  # app ids are GUIDs: case-insensitive


def _require_bound_app(call: Call, provider_id: str) -> None:
    """Refuse a content write from another app than the one that registered the provider (``strict-app``).

    Inferred, unconfirmed: Microsoft's unpublished draft ISV guide (microsoftgraph/microsoft-graph-docs
    PR 17789) says the registration takes its app id "from the token (not a request parameter)", and
    the ISV app then pushes content with application permissions as the same app. So Graph may refuse
    content pushed by a different app; ``lenient`` accepts it. A provider without a recorded app id
    (registered before the emulator kept it, from an older snapshot) is unbound: every app may write.
    """
    registered = call.runtime.state.registered_by_app_id(call.caller.tenant_id, provider_id)
    caller = call.caller.app_id
    if registered is None or _same_app(registered, caller):
        return
    if call.runtime.modes.current.app_binding == "lenient":
        log.info(
            "content write by another app accepted (appBinding lenient) provider=%s registeredByAppId=%s appid=%s",
            provider_id,
            registered,
            caller,
        )
        return
    log.warning(
        "content write refused (appBinding strict-app) provider=%s registeredByAppId=%s appid=%s",
        provider_id,
        registered,
        caller,
    )
    raise access_denied(
        f"The app '{caller or '(none)'}' may not write the content of learning provider '{provider_id}': "
        f"the registration is bound to the app that registered it, '{registered}'. "
        "Push content with an application token of that app."
    )


async def _contents(call: Call) -> web.StreamResponse:
    auth.require_content_read(call.caller)
    provider_id = _require_registered(call)
    rt = call.runtime
    items = rt.state.contents(call.caller.tenant_id, provider_id, _lag_seconds(rt))
    context = f"{SINGLETON}/{PROVIDERS_NAV}({quote_literal(provider_id)})/{CONTENTS_NAV}"
    return _collection(call, items, rt.metadata.entity("learningContent"), context)


def _lag_seconds(rt: EmulatorRuntime) -> float:
    return rt.modes.current.visibility_lag_ms / 1000


async def _content(call: Call) -> web.StreamResponse:
    method, route, rt, tid = call.request.method, call.route, call.runtime, call.caller.tenant_id
    modes = rt.modes.current
    # Reads see accepted writes only after the visibility lag; writes work on the newest write.
    lag = _lag_seconds(rt) if method == "GET" else 0.0
    if method == "GET":
        auth.require_content_read(call.caller)
    else:
        auth.require_content_write(call.caller)
    call.options(ENTITY_OPTIONS if method == "GET" else frozenset())
    provider_id = _require_registered(call)
    if method != "GET":
        _require_bound_app(call, provider_id)  # before the item lookup and the body: who, before what
    schema = rt.metadata.entity("learningContent")
    context = f"{SINGLETON}/{PROVIDERS_NAV}({quote_literal(provider_id)})/{CONTENTS_NAV}"
    if route.external_id is not None:
        found = rt.state.content_by_external_id(tid, provider_id, route.external_id, lag)
        described = f"externalId '{route.external_id}'"
    else:
        found = rt.state.content_by_id(tid, provider_id, str(route.content_id), lag)
        described = f"id '{route.content_id}'"
    missing = not_found(f"The learningContent with {described} was not found for provider '{provider_id}'.")

    if method == "PATCH":
        by_id = route.external_id is None
        if found is None and by_id:
            raise missing
        key = str(found["externalId"]) if by_id and found else str(route.external_id)
        merge = modes.patch_semantics == "merge"
        # The upsert may create, so it needs the required properties; a PATCH by id updates an item that
        # has them, so under merge (properties left out keep their values) a subset is enough.
        values = rt.validator.validate_body(
            schema,
            await read_json(call.request),
            complete=not (by_id and merge),
            key_external_id=key,
            version=call.version,
        )
        base = found if merge and found is not None else schema.blank()
        stored, created = rt.state.put_content(tid, provider_id, {**base, **values}, _lag_seconds(rt))
        log.info(
            "content %s tenant=%s provider=%s id=%s externalId=%s",
            "created" if created else ("merged" if merge else "replaced"),
            tid,
            provider_id,
            stored["id"],
            stored["externalId"],
        )
        return _entity(call, stored, schema, context, status=202)
    if found is None:
        raise missing
    if method == "GET":
        return _entity(call, found, schema, context)
    rt.state.delete_content(tid, provider_id, str(found["id"]))
    log.info("content deleted tenant=%s provider=%s id=%s", tid, provider_id, found["id"])
    return web.Response(status=204)


HANDLERS = {Kind.PROVIDERS: _providers, Kind.PROVIDER: _provider, Kind.CONTENTS: _contents, Kind.CONTENT: _content}


async def handle_graph(request: web.Request) -> web.StreamResponse:
    """Entry point for every non-admin request (registered as a catch-all route)."""
    runtime = request.app[RUNTIME]
    segments, _ = split_target(request.raw_path)
    if len(segments) == 2 and segments[1] == "$batch" and segments[0] in VERSIONS:
        from .batch import handle_batch  # batch serves its requests through serve_graph below

        return await handle_batch(request, runtime, segments[0])
    return await serve_graph(runtime, request)


async def serve_graph(runtime: EmulatorRuntime, request: Inbound) -> web.StreamResponse:
    """Authenticate, resolve and answer one Graph request (on the wire or inside a ``$batch``)."""
    raw_path = request.raw_path.partition("?")[0]
    segments, raw_query = split_target(request.raw_path)
    version = segments[0] if segments else ""
    if version not in VERSIONS:
        raise bad_request(f"Invalid version: '{version}'. Use 'v1.0' or 'beta'.")
    caller = auth.authenticate(request.headers.get("Authorization"), signing_key=runtime.settings.signing_key)
    request[CALLER] = caller
    route = resolve(segments[1:], runtime.metadata)
    delete_forms = runtime.modes.current.delete_forms
    if route.ref and delete_forms == "sdk":
        # A service that routes no $ref here answers as its front door does for any unknown segment.
        raise segment_not_found("$ref")
    allowed = route.allowed(delete_forms)
    if request.method not in allowed:
        raise method_not_allowed(request.method, allowed)
    call = Call(request, runtime, caller, route, version, raw_path, raw_query)
    return await HANDLERS[route.kind](call)
