"""Send a signed CloudEvent to the local stack (or any intake): ``python -m local.send FILE``.

Signs the exact bytes with the source's Standard Webhooks secret, so what works here works from an
LMS. Reads INTAKE_URL, DEMO_SOURCE and DEMO_WEBHOOK_SECRET from ``.dev/stack.env`` unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import httpx

from shared.signatures import sign
from vlsync import envfile

BATCH = "application/cloudevents-batch+json"
STRUCTURED = "application/cloudevents+json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", help="CloudEvent JSON (object or array for a batch); - for stdin")
    parser.add_argument("--env-file", default=".dev/stack.env", type=Path)
    parser.add_argument("--url", help="intake base URL (default INTAKE_URL)")
    parser.add_argument("--source", help="source name (default DEMO_SOURCE)")
    parser.add_argument("--secret", help="whsec_ secret (default DEMO_WEBHOOK_SECRET)")
    parser.add_argument("--code", help="function key, sent as x-functions-key (Azure only)")
    args = parser.parse_args(argv)

    env = envfile.read(args.env_file) if args.env_file.is_file() else {}
    url = args.url or env.get("INTAKE_URL", "http://127.0.0.1:7071")
    source = args.source or env.get("DEMO_SOURCE", "demo")
    secret = args.secret or env.get("DEMO_WEBHOOK_SECRET")
    if not secret:
        parser.error("no secret: pass --secret or run `make dev` to write .dev/stack.env")
    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    content_type = BATCH if raw.lstrip().startswith(b"[") else STRUCTURED
    headers = sign(raw, secret, webhook_id=f"msg_{uuid.uuid4().hex}", timestamp=int(time.time()))
    headers["content-type"] = content_type
    if args.code:
        headers["x-functions-key"] = args.code
    return deliver(f"{url.rstrip('/')}/api/webhooks/{source}", raw, headers)


def deliver(url: str, body: bytes, headers: dict[str, str], query: dict[str, str] | None = None) -> int:
    """POST a delivery, print the status and the answer; the exit code: 0 when it was accepted."""
    response = httpx.post(url, content=body, headers=headers, params=query, timeout=30)
    print(response.status_code)
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.status_code < 400 else 1


if __name__ == "__main__":
    sys.exit(main())
