"""``python -m local.identity``: the identity endpoint as its own process, for the launcher.

The launcher waits for the single "identity endpoint listening on …" line on stdout, so nothing
else is printed there; logs go to stderr and never contain the header secret or tokens.

The Entra token endpoint (``POST /{tenant}/oauth2/v2.0/token``) listens on a second, HTTPS port
(``--tls-port``, default a free one) with a certificate from a CA made at start-up. Where it is comes
from ``GET /_identity/health``: ``authorityHost`` (``https://127.0.0.1:PORT``, the ``authority`` for
``ClientAssertionCredential``), ``caFile`` (the CA's PEM, written to ``--tls-dir``; by default a
temporary directory removed at exit) and ``tenantId``.

App registrations, for the managed identity → app exchange and for ``/dev/token``'s ``clientId``:

* ``--app APP_CLIENT_ID=UAMI_CLIENT_ID[,UAMI_CLIENT_ID…]`` (repeatable): an app with the default
  roles and scopes whose federated credentials trust those user-assigned identities (each must also
  be given with ``--client-id``), exactly as Azure configures them. ``--app APP_CLIENT_ID`` alone
  registers it with no federated credential.
* ``--apps-file PATH``: a JSON list of apps in the ``PUT /_identity/apps/{clientId}`` shape
  (``clientId``, ``displayName``, ``roles``, ``scopes``, ``publicClient``,
  ``federatedCredentials: [{name, issuer, subject, audiences}]``), for anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from local.serving import Site, serve_until_signalled, start_site

from . import tls
from .app import TOKEN_PATH, IdentityState, build_app
from .config import DEFAULT_LIFETIME_SECONDS, DEFAULT_ROLES, AppRegistration, Identity
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


def _apps(values: list[str], apps_file: str | None, identities: Sequence[Identity]) -> list[AppRegistration]:
    """``--apps-file`` entries, then ``--app CLIENT_ID=UAMI,…`` ones trusting configured user-assigned identities."""
    apps: list[AppRegistration] = []
    if apps_file:
        try:
            raw = json.loads(Path(apps_file).read_text())
        except OSError as exc:
            raise ValueError(f"cannot read --apps-file: {exc}") from exc
        if not isinstance(raw, list):
            raise ValueError(f"{apps_file}: expected a JSON list of apps")
        apps.extend(AppRegistration.parse(item) for item in raw)
    by_client_id = {i.client_id.lower(): i for i in identities}
    for value in values:
        client_id, _, trusted = value.partition("=")
        uamis = []
        for uami in (t.strip() for t in trusted.split(",") if t.strip()):
            if uami.lower() not in by_client_id:
                raise ValueError(f"--app {client_id}: {uami} is not a user-assigned identity (add --client-id {uami})")
            uamis.append(by_client_id[uami.lower()])
        apps.append(AppRegistration.trusting(client_id.strip(), uamis))
    return apps


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
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APP_CLIENT_ID[=UAMI_CLIENT_ID,...]",
        help="an app registration whose federated credentials trust these user-assigned identities; repeatable",
    )
    parser.add_argument(
        "--apps-file", metavar="PATH", help="JSON list of app registrations (PUT /_identity/apps shape)"
    )
    parser.add_argument(
        "--tls-port", type=int, default=0, help="HTTPS port of the Entra token endpoint (0: a free one)"
    )
    parser.add_argument("--tls-dir", metavar="DIR", help="where to write the CA file (default: a temporary directory)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if not args.header:
        parser.error("--header (or IDENTITY_HEADER) is required")
    return args


async def _main(args: argparse.Namespace, tls_dir: Path) -> None:
    roles = _roles(args.roles, DEFAULT_ROLES)
    identities = _user_assigned(args.client_id, roles)
    config = make_config(
        header=args.header,
        user_assigned=identities,
        roles=roles,
        system_roles=_roles(args.system_roles, roles),
        system=not args.no_system,
        lifetime=args.lifetime,
        apps=_apps(args.app, args.apps_file, identities),
    )
    logger.info(
        "identities: system=%s user-assigned=%s apps=%s lifetime=%ss",
        config.system.client_id if config.system else None,
        [i.client_id for i in config.user_assigned],
        [a.client_id for a in config.apps],
        config.lifetime_seconds,
    )
    state = IdentityState(config.apps)
    local_tls = tls.create(tls_dir, [args.host])

    async def start() -> Site:
        site = await start_site(
            build_app(config, state), args.host, args.port, tls=local_tls.context, tls_port=args.tls_port
        )
        assert site.tls_url is not None  # start_site was given tls
        state.set_authority(site.tls_url, str(local_tls.ca_file))
        logger.info("Entra token endpoint on %s, CA %s", site.tls_url, local_tls.ca_file)
        return site

    await serve_until_signalled(start(), lambda s: READY_PREFIX + s.url + TOKEN_PATH)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    tls_dir = Path(args.tls_dir) if args.tls_dir else Path(tempfile.mkdtemp(prefix="vlsync-identity-tls-"))
    try:
        asyncio.run(_main(args, tls_dir))
    except ValueError as exc:  # json.JSONDecodeError included
        logger.error("invalid configuration: %s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot start on %s:%s: %s", args.host, args.port, exc)
        return 1
    finally:
        if not args.tls_dir:
            shutil.rmtree(tls_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
