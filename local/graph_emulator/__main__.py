"""CLI: ``python -m local.graph_emulator --host 127.0.0.1 --port 7072 [--page-size 100] [--snapshot FILE]``
``[--delete-forms documented|sdk|both] [--patch-semantics merge|replace] [--visibility-lag-ms N]``
``[--app-binding strict-app|lenient] [--batch on|off] [--latency-ms N] [--fsync interval|always]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from local.serving import serve_until_signalled, start_site

from .app import create_app
from .context import DEFAULT_PAGE_SIZE, Modes
from .faults import FaultConfig
from .persistence import COMPACT_MIN_ENTRIES, FSYNC_POLICIES
from .state import EmulatorState


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local.graph_emulator",
        description="Strict Microsoft Graph emulator for the Viva Learning APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7072, help="0 picks a free port (printed on start)")
    parser.add_argument("--page-size", type=_positive, default=DEFAULT_PAGE_SIZE, help="server page size and $top cap")
    parser.add_argument(
        "--snapshot",
        type=Path,
        help="state file loaded at start; every change is appended to FILE.journal.<seq> before it is answered "
        "and folded into FILE now and then and at exit (crash-safe, O(1) per write)",
    )
    parser.add_argument(
        "--fsync",
        default="interval",
        choices=list(FSYNC_POLICIES),
        help="when the journal reaches the disk: interval (each second; a killed emulator loses nothing, a power "
        "cut at most the last second) or always (every write; slower)",
    )
    parser.add_argument(
        "--compact-after",
        type=_positive,
        default=COMPACT_MIN_ENTRIES,
        help="journal entries before a compaction is considered (it waits at least as many entries as the "
        "snapshot holds items, so its cost stays O(1) per write)",
    )
    parser.add_argument(
        "--batch",
        default="on",
        choices=["on", "off"],
        help="POST /$batch: on (JSON batching, up to 20 requests) or off (refused, 400, to test a client's fallback)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0,
        help="fixed delay per HTTP request, like a network round trip (a $batch pays it once)",
    )
    parser.add_argument(
        "--faults", type=Path, help="JSON fault configuration applied at start (same as PUT /_emulator/faults)"
    )
    parser.add_argument(
        "--delete-forms",
        default="documented",
        choices=["documented", "sdk", "both"],
        help="DELETE forms accepted: documented (only …/$ref, as the docs show), sdk (only without /$ref, as "
        "the official SDK sends), both",
    )
    parser.add_argument(
        "--patch-semantics",
        default="merge",
        choices=["merge", "replace"],
        help="what a PATCH does to properties it leaves out: merge (keep them) or replace (reset them)",
    )
    parser.add_argument(
        "--visibility-lag-ms",
        type=_non_negative,
        default=0,
        help="an accepted write is readable (GET, lists) only this long after it (Graph answers writes 202)",
    )
    parser.add_argument(
        "--app-binding",
        default="strict-app",
        choices=["strict-app", "lenient"],
        help="a content write (PATCH, DELETE) by an app other than the one that registered the provider: "
        "strict-app (refuse it, 403 accessDenied) or lenient (accept it)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    faults = None
    if args.faults:
        try:
            faults = FaultConfig.model_validate(json.loads(args.faults.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            print(f"invalid --faults file: {exc}", file=sys.stderr)
            return 2
    modes = Modes(
        deleteForms=args.delete_forms,
        patchSemantics=args.patch_semantics,
        visibilityLagMs=args.visibility_lag_ms,
        appBinding=args.app_binding,
        batch=args.batch,
        latencyMs=args.latency_ms,
    )
    try:
        state = EmulatorState(args.snapshot, fsync=args.fsync, compact_min_entries=args.compact_after)
    except (OSError, ValueError) as exc:
        print(f"cannot load --snapshot {args.snapshot}: {exc}", file=sys.stderr)
        return 2
    # The loaded catalog is long-lived: moved out of the collector's generations, a full collection no longer
    # walks every stored item (with 100,000 items those walks cost more than the requests themselves).
    gc.freeze()
    app = create_app(state, page_size=args.page_size, faults=faults, modes=modes)
    logging.getLogger("graph_emulator").info(
        "serving page_size=%s snapshot=%s settings=%s", args.page_size, args.snapshot, modes.to_json()
    )
    starting = start_site(app, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_signalled(starting, lambda site: f"graph emulator listening on {site.url}"))
    state.close()  # fold the journal into the snapshot: the next start reads one file
    return 0


if __name__ == "__main__":
    sys.exit(main())
