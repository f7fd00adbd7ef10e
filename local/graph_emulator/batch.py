"""``POST /{v1.0,beta}/$batch``: Graph's JSON batching (https://learn.microsoft.com/graph/json-batching).

From the doc: up to 20 requests in ``{"requests": [...]}``, each with ``id`` (unique in the batch,
case-insensitive, else the batch fails with 400), ``method``, a ``url`` relative to the version
(``/employeeExperience/...``; the doc's own example also writes one without the leading ``/``),
``headers`` (``Content-Type`` required with a ``body``) and ``body``; the answer is
``{"responses": [{"id", "status", "headers", "body"}]}`` and "responses might appear in a different
order" than the requests; ``dependsOn`` sequences requests, and a request whose dependency failed
answers 424 Failed Dependency. Graph throttles every request of a batch on its own
(https://learn.microsoft.com/graph/throttling), so an inner request can answer 429 with its own
``Retry-After`` while the others succeed.

Emulator choices where the doc is silent (the safe side for a client):

- Requests run one by one in dependency order (a topological order of the list); the responses come
  back in **reverse** order of the requests, so a client that pairs answers by position fails here.
- Every request is authorised with the batch's token, faulted and throttled on its own (the token
  bucket takes one token per inner request), and recorded in the request log with its batch's
  request-id; the ``$batch`` POST itself takes no token.
- A batch refused as a whole answers 400 with code ``BadRequest`` (the front door's spelling, as for a
  body without Content-Type); the messages "Invalid batch payload format." and "Request Id … has to be
  unique in a batch." are the wording recorded by third-party clients, the one for more than 20 requests
  is the emulator's (**unverified**). An empty batch is refused too (OfficeDev
  microsoft-teams-apps-company-communicator PR 337 saw Graph answer 400).
- Mixing requests with and without ``dependsOn`` (other than the first) is refused as "Batch should be
  either fully sequential or fully parallel.", the error users report from Graph (Microsoft Q&A
  1532547); **unverified** beyond those reports.
- A failed dependency's 424 body uses code ``failedDependency`` (**unverified**).
- A dropped connection among the inner faults aborts the whole batch's connection after every request
  ran: the writes happened, the answer is lost.
- ``batch: "off"`` (``--batch off``) refuses every ``$batch`` with 400 ``RequestBroker--ParseUri``
  "Resource not found for the segment '$batch'", the front door's answer to a segment it does not
  route (microsoft-graph-docs issue 10167), so a client's fallback to single requests can be tested.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import auth
from .context import CALLER, REQUEST_ID, EmulatorRuntime
from .errors import GraphError, error_body, method_not_allowed, segment_not_found
from .exchange import Ids, exchange, record
from .inbound import InnerRequest
from .payloads import json_response, read_json

log = logging.getLogger("graph_emulator.batch")

MAX_REQUESTS = 20  # json-batching: "combining multiple requests (up to 20)"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
FAILED_DEPENDENCY = 424


def batch_refused(message: str) -> GraphError:
    return GraphError(400, "BadRequest", message)


@dataclass(frozen=True)
class Entry:
    id: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    depends_on: tuple[str, ...]


def _entry(raw: Any, index: int) -> Entry:
    if not isinstance(raw, dict):
        raise batch_refused("Invalid batch payload format.")
    unknown = sorted(set(raw) - {"id", "method", "url", "headers", "body", "dependsOn", "atomicityGroup"})
    if unknown:
        raise batch_refused(f"Invalid batch payload format: request {index} has unknown properties {unknown}.")
    request_id, method, url = raw.get("id"), raw.get("method"), raw.get("url")
    if not isinstance(request_id, str) or not request_id:
        raise batch_refused(f"Invalid batch payload format: request {index} needs a non-empty string 'id'.")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise batch_refused(
            f"Invalid batch payload format: request '{request_id}' needs a 'method' of {sorted(METHODS)}."
        )
    if not isinstance(url, str) or not url or "://" in url:
        raise batch_refused(
            f"Invalid batch payload format: request '{request_id}' needs a 'url' relative to the version, "
            "e.g. '/employeeExperience/learningProviders'."
        )
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise batch_refused(
            f"Invalid batch payload format: the 'headers' of request '{request_id}' must map names to strings."
        )
    depends = raw.get("dependsOn") or []
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise batch_refused(f"Invalid batch payload format: the 'dependsOn' of request '{request_id}' must list ids.")
    body = raw.get("body")
    data = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
    return Entry(request_id, method.upper(), url if url.startswith("/") else "/" + url, headers, data, tuple(depends))


def parse_batch(body: Any) -> list[Entry]:
    """The batch's requests in execution order (dependencies first), or a 400 for the whole batch."""
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or (isinstance(body, dict) and set(body) - {"requests"}):
        raise batch_refused("Invalid batch payload format.")
    if not requests:
        raise batch_refused("Invalid batch payload format: the batch holds no requests.")
    if len(requests) > MAX_REQUESTS:
        raise batch_refused(f"The batch holds {len(requests)} requests; a JSON batch may hold at most {MAX_REQUESTS}.")
    entries = [_entry(raw, index) for index, raw in enumerate(requests)]
    seen: dict[str, Entry] = {}
    for entry in entries:
        if entry.id.lower() in seen:
            raise batch_refused(f"Request Id {entry.id} has to be unique in a batch.")
        seen[entry.id.lower()] = entry
    if any(e.depends_on for e in entries) and (entries[0].depends_on or not all(e.depends_on for e in entries[1:])):
        raise batch_refused("Batch should be either fully sequential or fully parallel.")
    return _ordered(entries, seen)


def _ordered(entries: list[Entry], by_id: dict[str, Entry]) -> list[Entry]:
    order: list[Entry] = []
    state: dict[str, str] = {}  # id -> "visiting" | "done"

    def visit(entry: Entry, chain: tuple[str, ...]) -> None:
        key = entry.id.lower()
        if state.get(key) == "done":
            return
        if state.get(key) == "visiting":
            raise batch_refused(f"Invalid batch payload format: dependsOn forms a cycle ({' -> '.join(chain)}).")
        state[key] = "visiting"
        for dep in entry.depends_on:
            target = by_id.get(dep.lower())
            if target is None:
                raise batch_refused(
                    f"Invalid batch payload format: request '{entry.id}' depends on '{dep}', which is not in the batch."
                )
            visit(target, (*chain, dep))
        state[key] = "done"
        order.append(entry)

    for entry in entries:
        visit(entry, (entry.id,))
    return order


def _answer(entry_id: str, response: web.StreamResponse) -> dict[str, Any]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "odata-version")}
    item: dict[str, Any] = {"id": entry_id, "status": response.status, "headers": headers}
    raw = response.body if isinstance(response, web.Response) else None
    if isinstance(raw, bytes) and raw:
        item["body"] = json.loads(raw)
    return item


async def handle_batch(request: web.Request, runtime: EmulatorRuntime, version: str) -> web.StreamResponse:
    from .routes import serve_graph  # routes imports this module when it meets a $batch

    if runtime.modes.current.batch == "off":
        raise segment_not_found("$batch")
    if request.method != "POST":
        raise method_not_allowed(request.method, ("POST",))
    authorization = request.headers.get("Authorization")
    # A refused token refuses the whole batch (401), before any request in it runs.
    request[CALLER] = auth.authenticate(authorization, signing_key=runtime.settings.signing_key)
    entries = parse_batch(await read_json(request))
    batch_id = request.get(REQUEST_ID) or str(uuid.uuid4())  # the batch's own request-id (middleware)
    statuses: dict[str, int] = {}
    answers: list[dict[str, Any]] = []
    dropped = False
    for entry in entries:
        started = time.perf_counter()
        headers = {**entry.headers, "Authorization": authorization or ""}
        inner = InnerRequest(
            entry.method, f"/{version}{entry.url}", headers, entry.body, scheme=request.scheme, host=request.host
        )
        ids = Ids.of(inner)
        failed = [d for d in entry.depends_on if not 200 <= statuses.get(d.lower(), 0) < 300]
        if failed:
            body = error_body(
                "failedDependency",
                f"The request depends on request '{failed[0]}', which failed.",
                ids.request_id,
                ids.client_request_id,
            )
            statuses[entry.id.lower()] = FAILED_DEPENDENCY
            answers.append({"id": entry.id, "status": FAILED_DEPENDENCY, "headers": {}, "body": body})
            record(runtime, inner, FAILED_DEPENDENCY, None, ids, started, batch_request_id=batch_id)
            continue
        decision = runtime.faults.decide(inner.method, inner.raw_path.partition("?")[0])
        outcome = await exchange(inner, ids, decision, functools.partial(serve_graph, runtime, inner))
        dropped = dropped or outcome.dropped
        status = outcome.response.status if outcome.response is not None else None
        record(runtime, inner, status, decision, ids, started, batch_request_id=batch_id)
        statuses[entry.id.lower()] = status or 0
        if outcome.response is not None:
            answers.append(_answer(entry.id, outcome.response))
    if dropped and request.transport is not None:
        request.transport.abort()
    log.info("batch served batch=%s requests=%s statuses=%s", batch_id, len(entries), sorted(statuses.values()))
    return json_response({"responses": answers[::-1]})
