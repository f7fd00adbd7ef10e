"""Canvas LMS Live Events (Canvas Data Services, HTTPS delivery): ``course_created``, ``course_updated``.

With "Sign Payload" on, the body is an RS256 JWT whose claims hold the Live Event; its ``kid`` names
a key of Canvas's published key set (``jwksUrl``; the previous, current and next key, rotated
monthly), so keys are cached and fetched again when a token names one not seen yet. Unsigned JSON
is accepted only from a source configured with ``acceptUnsigned``.

The event is thin: ``body`` has ``course_id`` (a string; global ids exceed 2^53), ``name``,
``created_at``, ``updated_at`` and ``workflow_state`` (``available`` published, ``created`` and
``claimed`` unpublished, ``completed`` concluded, ``deleted``; ``state_action`` is the rule, shared
with fetch-back). Deleting a course is a
``course_updated`` with ``workflow_state: "deleted"``. Times come as ISO-8601 or as
``2019-11-05 07:38:00 -0800``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from shared.models import ContentCommand
from shared.problems import (
    CREDENTIAL_INVALID,
    KEYS_UNAVAILABLE,
    SCHEMA_VIOLATION,
    SIGNATURE_EXPIRED,
    SIGNATURE_INVALID,
    SIGNATURE_MISSING,
    FieldError,
    Problem,
)
from shared.settings import CanvasSource, SourceConfig
from shared.sources import Delivery, VerifiedDocument, WebhookRequest
from shared.sources.cloudevents import load_json
from shared.sources.normalize import Action, CourseEvent, parse_datetime, utc_z
from shared.sources.pipeline import commands

logger = logging.getLogger(__name__)

COURSE_EVENTS = ("course_created", "course_updated")
# A course's ``workflow_state``: the one Canvas visibility rule, for Live Events and Courses API answers
# (``shared.lms.canvas``) alike. The Course object documents "unpublished", "available", "completed" and
# "deleted" (https://canvas.instructure.com/doc/api/courses.html#Course); Live Events carry the model's
# own states, where "created" and "claimed" are the unpublished ones (not confirmed in Instructure's
# stored docs; Canvas's Course model). Only a published course ("available") is open to learners;
# an unpublished one is not, and a completed (concluded) one is read-only for its past enrolments,
# so both are listed as hidden (isActive false, or a delete with ``hiddenAs: delete``).
VISIBLE_STATE = "available"
DELETED_STATE = "deleted"
HIDDEN_STATES = frozenset({"unpublished", "created", "claimed", "completed"})
STATES = HIDDEN_STATES | {VISIBLE_STATE, DELETED_STATE}
# The sender's clock and ours may differ a little when checking exp/nbf/iat.
LEEWAY_SECONDS = 60
# A token naming an unknown kid triggers a fetch; forged kids must not make us hammer the key server.
MIN_REFETCH_SECONDS = 60.0
JWKS_TIMEOUT_SECONDS = 10.0
JWKS_MAX_BYTES = 256 * 1024
KEYS_RETRY_AFTER_SECONDS = 60
_COMPACT_JWT = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")

JwksFetch = Callable[[str], Any]
"""The port that reads a JWKS document (``{"keys": [...]}``) from a URL; tests pass a local key set."""


class KeysUnavailable(Exception):
    """The key set could not be read: not the sender's fault, so the delivery is to be retried."""


def fetch_jwks(url: str) -> Any:
    """Read a key set over HTTPS (no redirects: the configured URL is the trusted one)."""
    try:
        response = httpx.get(url, timeout=JWKS_TIMEOUT_SECONDS, follow_redirects=False)
        response.raise_for_status()
        if len(response.content) > JWKS_MAX_BYTES:
            raise KeysUnavailable(f"the key set at {url} is over {JWKS_MAX_BYTES} bytes")
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise KeysUnavailable(f"could not read the key set at {url}: {exc}") from exc


class JwksCache:
    """Signing keys by ``kid``, per key-set URL: fetched on first use and again on an unknown kid."""

    def __init__(
        self,
        fetch: JwksFetch = fetch_jwks,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._min_refetch = min_refetch_seconds
        self._keys: dict[str, dict[str, jwt.PyJWK]] = {}
        self._fetched_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def key(self, url: str, kid: str) -> jwt.PyJWK | None:
        """The key ``kid`` of the set at ``url``; None if the set (fetched anew if allowed) lacks it."""
        with self._lock:
            known = self._keys.get(url)
            if known is not None and kid in known:
                return known[kid]
            last = self._fetched_at.get(url)
            if last is not None and self._clock() - last < self._min_refetch:
                # Not "invalid": a key rotated in since the last fetch is likely, so the sender is to
                # retry once the set may be read again (a forged kid gains nothing from a 503).
                if known is None:
                    raise KeysUnavailable(f"the key set at {url} could not be read recently")
                raise KeysUnavailable(f"key {kid!r} is not in the key set at {url}, read moments ago")
            self._fetched_at[url] = self._clock()
            self.fetches += 1
            try:
                self._keys[url] = _signing_keys(self._fetch(url))
            except KeysUnavailable:
                raise
            except (ValueError, TypeError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
                raise KeysUnavailable(f"the key set at {url} is not a usable JWKS: {exc}") from exc
            return self._keys[url].get(kid)


def _signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' array")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or not isinstance(entry.get("kid"), str):
            continue  # only RSA keys with an id can verify RS256 tokens
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        keys[entry["kid"]] = jwt.PyJWK(entry, algorithm="RS256")
    if not keys:
        raise ValueError("the key set holds no RS256 signing key")
    return keys


# One cache per process: every request builds a new adapter, the keys outlive it.
KEYS = JwksCache()


class CanvasAdapter:
    kind = "canvas"
    body_credentials: frozenset[str] = frozenset()

    def __init__(self, keys: JwksCache | None = None) -> None:
        self.keys = keys or KEYS

    def authenticate(self, request: WebhookRequest, source: SourceConfig, secret: str | None) -> Delivery:
        assert isinstance(source, CanvasSource)
        body = request.body.strip()
        if body.startswith(b"{"):
            return _unsigned(body, source)
        token = _token(body)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Problem(SIGNATURE_INVALID, "the JWT's header cannot be read") from None
        if header.get("alg") != "RS256":
            raise Problem(SIGNATURE_INVALID, f"the JWT is signed with {header.get('alg')!r}; Canvas signs with RS256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Problem(SIGNATURE_INVALID, "the JWT names no key (kid)")
        try:
            key = self.keys.key(source.jwks_url, kid)
        except KeysUnavailable as exc:
            logger.error("canvas key set unavailable source=%s: %s", request.source_name, exc)
            raise Problem(
                KEYS_UNAVAILABLE,
                "Canvas's signing keys could not be read; retry later",
                headers={"Retry-After": str(KEYS_RETRY_AFTER_SECONDS)},
            ) from None
        if key is None:
            raise Problem(SIGNATURE_INVALID, f"no key {kid!r} in the source's key set (jwksUrl)")
        try:
            claims = jwt.decode(
                token, key=key, algorithms=["RS256"], leeway=LEEWAY_SECONDS, options={"verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            raise Problem(SIGNATURE_EXPIRED, "the JWT has expired (exp): a replayed or long-delayed event") from None
        except jwt.InvalidTokenError as exc:
            raise Problem(SIGNATURE_INVALID, f"the JWT does not verify: {exc}") from None
        issued = claims.get("iat")
        if source.max_token_age_seconds is not None:
            if not isinstance(issued, int | float):
                raise Problem(SIGNATURE_INVALID, "the JWT carries no iat, so its age (maxTokenAgeSeconds) is unknown")
            if time.time() - issued > source.max_token_age_seconds + LEEWAY_SECONDS:
                raise Problem(SIGNATURE_EXPIRED, f"the JWT is older than {source.max_token_age_seconds} s (iat)")
        return _from_claims(body, claims, source)

    def trusted(self, request: WebhookRequest, source: SourceConfig) -> Delivery:
        """The JWT's claims read without verifying its signature, expiry or age (all checked when the
        delivery was accepted); the account check still applies."""
        assert isinstance(source, CanvasSource)
        body = request.body.strip()
        if body.startswith(b"{"):
            return _unsigned(body, source)
        try:
            claims = jwt.decode(_token(body), options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise Problem(SIGNATURE_INVALID, f"the JWT cannot be read: {exc}") from None
        return _from_claims(body, claims, source)

    def parse(self, request: WebhookRequest, source: SourceConfig, delivery: Delivery) -> list[ContentCommand]:
        assert isinstance(source, CanvasSource)
        assert isinstance(delivery, VerifiedDocument)
        event = course_event(delivery.document)
        if event is None:
            return []
        return commands([event], request, source, delivery)


def _unsigned(body: bytes, source: CanvasSource) -> VerifiedDocument:
    """An unsigned Live Event (JSON), from a source that still accepts them."""
    if not source.accept_unsigned:
        raise Problem(
            SIGNATURE_MISSING,
            "this source accepts only signed Live Events: turn on 'Sign Payload' for the subscription",
        )
    return VerifiedDocument(_digest(body), None, _own(load_json(body), source))


def _token(body: bytes) -> str:
    if not _COMPACT_JWT.match(body):
        raise Problem(SIGNATURE_INVALID, "the body is neither a signed Live Event (a JWT) nor JSON")
    return body.decode("ascii")


def _from_claims(body: bytes, claims: Any, source: CanvasSource) -> VerifiedDocument:
    """The delivery a signed Live Event's claims describe: its ``jti`` (else the body's digest), sent at ``iat``."""
    issued = claims.get("iat") if isinstance(claims, dict) else None
    sent_at = datetime.fromtimestamp(issued, tz=UTC) if isinstance(issued, int | float) else None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return VerifiedDocument(jti if isinstance(jti, str) and jti else _digest(body), sent_at, _own(claims, source))


def _own(document: Any, source: CanvasSource) -> Any:
    """The document, if its root account is the source's; else the delivery is not this tenant's."""
    metadata = document.get("metadata") if isinstance(document, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    for setting, claim in (
        (source.root_account_uuid, "root_account_uuid"),
        (source.root_account_id, "root_account_id"),
    ):
        if setting is not None and str(metadata.get(claim, "")) != setting:
            raise Problem(CREDENTIAL_INVALID, f"the event's metadata.{claim} is not this source's Canvas account")
    return document


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()[:32]


def _invalid(detail: str, pointer: str) -> Problem:
    return Problem(SCHEMA_VIOLATION, "invalid Live Event", [FieldError(detail, pointer)])


def state_action(state: str) -> Action:
    """What a course's ``workflow_state`` makes of the item; ``ValueError`` for a state Canvas does not
    document (not guessed either way)."""
    if state not in STATES:
        raise ValueError(f"workflow_state {state!r} is not one of {', '.join(sorted(STATES))}")
    return "delete" if state == DELETED_STATE else "upsert" if state == VISIBLE_STATE else "hidden"


def course_event(document: Any) -> CourseEvent | None:
    """The course event of a Live Event (the JWT's claims, or the unsigned JSON); None for other events."""
    if not isinstance(document, dict):
        raise _invalid("a Live Event is an object with 'metadata' and 'body'", "")
    metadata, body = document.get("metadata"), document.get("body")
    if not isinstance(metadata, dict):
        raise _invalid("must be an object", "/metadata")
    name = metadata.get("event_name")
    if name not in COURSE_EVENTS:
        logger.info("canvas event %r ignored (not a course catalog event)", name)
        return None
    if not isinstance(body, dict):
        raise _invalid("must be an object", "/body")
    course_id = body.get("course_id")
    if isinstance(course_id, bool) or not isinstance(course_id, str | int) or course_id == "":
        raise _invalid("course_id must be a string (or an integer)", "/body/course_id")
    course_id = str(course_id)
    state = body.get("workflow_state")
    if state is not None and not isinstance(state, str):
        raise _invalid("workflow_state must be a string", "/body/workflow_state")
    action: Action = "upsert"  # an event without a state says nothing about visibility
    if state is not None:
        try:
            action = state_action(state)
        except ValueError as exc:
            raise _invalid(str(exc), "/body/workflow_state") from None

    raw_time = metadata.get("event_time") or body.get("updated_at")
    event_time = None
    if raw_time is not None:
        try:
            event_time = parse_datetime(raw_time)
        except ValueError as exc:
            time_at = "/metadata/event_time" if metadata.get("event_time") else "/body/updated_at"
            raise _invalid(f"event_time {exc}", time_at) from None
    fields: dict[str, Any] = {}
    where = {"externalId": "/body/course_id", "time": "/metadata/event_time", "sourceEventId": "/metadata"}
    for graph, name_in_body in (
        ("title", "name"),
        ("createdDateTime", "created_at"),
        ("lastModifiedDateTime", "updated_at"),
    ):
        if body.get(name_in_body) not in (None, ""):
            fields[graph] = body[name_in_body]
            where[graph] = f"/body/{name_in_body}"
    # Canvas sends no event id: the event is named by what, which course and when.
    stamp = utc_z(event_time) if event_time else str(body.get("updated_at", ""))
    return CourseEvent(
        action=action,
        course_id=course_id,
        event_id=f"{name}:{course_id}:{stamp}",
        event_time=event_time,
        fields=fields,
        at="/body",
        where=where,
    )
