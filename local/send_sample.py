"""Send one authentic sample delivery to a source of the local stack, authenticated as its platform
does: ``python -m local.send_sample SOURCE`` (after ``make dev SOURCES_FILE=...``).

Canvas is signed by the LMS emulator's dev key (the source's ``jwksUrl`` must be ``emulator``, or
``acceptUnsigned`` true), Moodle carries its token, Thinkific its HMAC, Open edX, Docebo and Event
Grid their key where the source's ``auth`` says, CloudEvents and mapped sources Standard Webhooks.
Before sending, the LMS emulator is seeded with the API answers of the sample courses, so a source
with ``"apiBaseUrl": "emulator"`` has something to fetch back. The samples are the files under
``local/samples/`` (the tests deliver the same ones); a ``mapped`` sample fits the Acme mapping of
``local/samples/sources.all-kinds.json`` only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from local.send import deliver
from shared.settings import CanvasSource, KeyAuth, MappedSource, SourceConfig, parse_sources
from shared.signatures import sign
from shared.sources.thinkific import sign as thinkific_sign
from vlsync import envfile

SAMPLES = Path(__file__).resolve().parent / "samples"
LMS = SAMPLES / "lms"
CLOUDEVENT = "application/cloudevents+json"

# kind -> the sample delivery under local/samples/
SAMPLE_FILES = {
    "cloudevents": SAMPLES / "course-upserted.json",
    "canvas": LMS / "canvas" / "course_created.json",
    "moodle": LMS / "moodle" / "course_updated.json",
    "openedx": LMS / "openedx" / "plugin_catalog_info_changed.json",
    "thinkific": LMS / "thinkific" / "product_updated.json",
    "docebo": LMS / "docebo" / "course_updated_grouped.json",
    "eventgrid": LMS / "eventgrid" / "course_events.json",
    "mapped": LMS / "mapped" / "acme_course_published.json",
}
# The LMS's own view of the sample courses (its API answers), by LMS emulator admin path.
SEEDS = {
    "canvas/courses/21070000000000056": LMS / "canvas" / "api_course.json",
    "moodle/courses/7": LMS / "moodle" / "api_course.json",
    "openedx/courses/course-v1:edX+DemoX+Demo_Course": LMS / "openedx" / "api_course.json",
    "thinkific/courses/123": LMS / "thinkific" / "api_course.json",
    "thinkific/products/990": LMS / "thinkific" / "api_product.json",
}


class SampleError(ValueError):
    """The source cannot be sent a sample as configured; the message says what to change."""


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _raw(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _secret(name: str, source: SourceConfig, env: dict[str, str]) -> str:
    setting = source.secret_setting
    value = env.get(setting or "", "")
    if not value:
        raise SampleError(f"source {name!r}: its secret setting {setting!r} has no value in the stack's settings")
    return value.split()[0]  # while rotating, the first one


def _standard_webhooks(body: bytes, secret: str) -> dict[str, str]:
    return sign(body, secret, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=int(time.time()))


def _keyed(auth: KeyAuth, key: str, body: bytes, content_type: str, **headers: str) -> Delivery:
    if auth.scheme == "query-key":
        return Delivery(body, {"content-type": content_type, **headers}, {auth.name: key})
    return Delivery(body, {"content-type": content_type, auth.name: key, **headers})


def delivery(name: str, source: SourceConfig, env: dict[str, str], lms_url: str | None) -> Delivery:
    """The sample delivery of ``source``'s kind, authenticated as that platform does."""
    kind = source.kind
    sample = _json(SAMPLE_FILES[kind])
    if kind in ("cloudevents", "mapped"):
        body = _raw(sample)
        envelope = source.envelope if isinstance(source, MappedSource) else "cloudevents"
        content_type = CLOUDEVENT if envelope == "cloudevents" else "application/json"
        return Delivery(body, {**_standard_webhooks(body, _secret(name, source, env)), "content-type": content_type})
    if kind == "canvas":
        assert isinstance(source, CanvasSource)
        if source.accept_unsigned:
            return Delivery(_raw(sample), {"content-type": "application/json"})
        if not lms_url or not source.jwks_url.startswith(lms_url):
            raise SampleError(
                f"source {name!r}: Canvas events are signed with Canvas's key, which only Canvas holds; "
                'set "jwksUrl": "emulator" (the LMS emulator signs) or "acceptUnsigned": true in the sources file'
            )
        signed = httpx.post(f"{lms_url}/_lms/canvas/sign", json=sample, timeout=10)
        signed.raise_for_status()
        return Delivery(str(signed.json()["jwt"]).encode(), {"content-type": "application/jwt"})
    if kind == "moodle":
        return Delivery(_raw({**sample, "token": _secret(name, source, env)}), {"content-type": "application/json"})
    if kind == "thinkific":
        body = _raw(sample)
        signature = thinkific_sign(body, _secret(name, source, env))
        return Delivery(body, {"content-type": "application/json", "X-Thinkific-Hmac-Sha256": signature})
    body = _raw(sample)
    auth = getattr(source, "auth", None)
    if isinstance(auth, KeyAuth):
        extra = {"aeg-event-type": "Notification"} if kind == "eventgrid" else {}
        return _keyed(auth, _secret(name, source, env), body, "application/json", **extra)
    # Open edX signed with Standard Webhooks
    return Delivery(body, {**_standard_webhooks(body, _secret(name, source, env)), "content-type": "application/json"})


def seed(lms_url: str) -> None:
    """Give the LMS emulator the sample courses' API answers (what fetch-back reads)."""
    for path, answer in SEEDS.items():
        httpx.put(f"{lms_url}/_lms/{path}", json=_json(answer), timeout=10).raise_for_status()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", help="the source's name in SOURCES (e.g. moodle)")
    parser.add_argument("--env-file", default=".dev/stack.env", type=Path)
    parser.add_argument("--no-seed", action="store_true", help="leave the LMS emulator's courses as they are")
    args = parser.parse_args(argv)
    if not args.env_file.is_file():
        parser.error(f"{args.env_file} not found: start the stack first (make dev SOURCES_FILE=...)")
    env = envfile.read(args.env_file)
    sources = parse_sources(env.get("SOURCES", "{}"))
    if args.source not in sources:
        parser.error(f"no source {args.source!r} in the stack's SOURCES; it has: {', '.join(sorted(sources))}")
    lms_url = env.get("LMS_EMULATOR_URL")
    if lms_url and not args.no_seed:
        seed(lms_url)
    try:
        sample = delivery(args.source, sources[args.source], env, lms_url)
    except SampleError as exc:
        print(exc, file=sys.stderr)
        return 2
    url = f"{env.get('INTAKE_URL', 'http://127.0.0.1:7071').rstrip('/')}/api/webhooks/{args.source}"
    return deliver(url, sample.body, sample.headers, sample.query)


if __name__ == "__main__":
    sys.exit(main())
