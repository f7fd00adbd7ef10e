"""CLI: ``python -m local.lms_emulator --host 127.0.0.1 --port 0 --secret S [--openedx-client-id ID]``
``[--thinkific-subdomain SUB]``; prints ``lms emulator listening on http://HOST:PORT``.

The secret can come from the environment (``LMS_EMULATOR_SECRET``) instead of the command line, so
it does not show in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys

from local.serving import serve_until_signalled, start_site

from .app import create_app
from .config import DEFAULT_OPENEDX_CLIENT_ID, DEFAULT_THINKIFIC_SUBDOMAIN, LmsConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.lms_emulator",
        description="Emulator of the Canvas, Moodle, Open edX and Thinkific course APIs used by fetch-back.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7075, help="0 picks a free port (printed on start)")
    parser.add_argument(
        "--secret",
        default=os.environ.get("LMS_EMULATOR_SECRET"),
        help="every platform's API secret (Canvas token, Moodle wstoken, Open edX client secret, Thinkific key); "
        "default $LMS_EMULATOR_SECRET",
    )
    parser.add_argument("--openedx-client-id", default=DEFAULT_OPENEDX_CLIENT_ID)
    parser.add_argument("--thinkific-subdomain", default=DEFAULT_THINKIFIC_SUBDOMAIN)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("give --secret or set LMS_EMULATOR_SECRET")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = LmsConfig(
        secret=args.secret, openedx_client_id=args.openedx_client_id, thinkific_subdomain=args.thinkific_subdomain
    )
    starting = start_site(create_app(config), args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_signalled(starting, lambda site: f"lms emulator listening on {site.url}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
