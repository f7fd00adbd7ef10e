"""``python -m local.identity``: the identity endpoint as its own process, for the launcher.

The launcher waits for the single "identity endpoint listening on …" line on stdout, so nothing
else is printed there; logs go to stderr and never contain the header secret or tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from local.serving import serve_until_signalled, start_site

from .app import TOKEN_PATH, build_app
from .config import DEFAULT_LIFETIME_SECONDS, DEFAULT_ROLES, Identity
from .runner import make_config

logger = logging.getLogger("local.identity")

READY_PREFIX = "identity endpoint listening on "


def _roles(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """``--roles A,B --roles C`` → (A, B, C); ``--roles ""`` → no roles; absent → ``default``."""
    if values is None:
        return default
    return tuple(r.strip() for v in values for r in v.split(",") if r.strip())


def _user_assigned(values: list[str], roles: tuple[str, ...]) -> list[Identity]:
    """``CLIENT_ID`` gets ``--roles``; ``CLIENT_ID=R1,R2`` (or ``CLIENT_ID=`` for none) sets its own."""
    identities = []
    for value in values:
        client_id, sep, own = value.partition("=")
        identities.append(Identity.user(client_id.strip(), roles=_roles([own], ()) if sep else roles))
    return identities


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.identity", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7073, help="0 picks a free port (printed when ready)")
    parser.add_argument(
        "--header",
        default=os.environ.get("IDENTITY_HEADER"),
        help="the X-IDENTITY-HEADER secret (default: $IDENTITY_HEADER, which keeps it out of `ps`)",
    )
    parser.add_argument(
        "--client-id",
        action="append",
        default=[],
        metavar="CLIENT_ID[=ROLES]",
        help="a user-assigned identity; repeatable; '=R1,R2' gives it its own roles, '=' none",
    )
    parser.add_argument(
        "--roles",
        action="append",
        help=f"roles of every identity, comma-separated/repeatable; '' for none (default {','.join(DEFAULT_ROLES)})",
    )
    parser.add_argument("--system-roles", action="append", help="app roles of the system-assigned identity only")
    parser.add_argument("--no-system", action="store_true", help="the app has no system-assigned identity")
    parser.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME_SECONDS, help="token lifetime in seconds")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.header:
        parser.error("--header (or IDENTITY_HEADER) is required")
    return args


async def _main(args: argparse.Namespace) -> None:
    roles = _roles(args.roles, DEFAULT_ROLES)
    config = make_config(
        header=args.header,
        user_assigned=_user_assigned(args.client_id, roles),
        roles=roles,
        system_roles=_roles(args.system_roles, roles),
        system=not args.no_system,
        lifetime=args.lifetime,
    )
    logger.info(
        "identities: system=%s user-assigned=%s lifetime=%ss",
        config.system.client_id if config.system else None,
        [i.client_id for i in config.user_assigned],
        config.lifetime_seconds,
    )
    await serve_until_signalled(
        start_site(build_app(config), args.host, args.port), lambda s: READY_PREFIX + s.url + TOKEN_PATH
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_main(args))
    except ValueError as exc:
        logger.error("invalid configuration: %s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
