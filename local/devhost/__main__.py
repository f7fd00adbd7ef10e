"""``python -m local.devhost``: run a Functions app's own functions without Core Tools.

Prints ``dev host listening on http://HOST:PORT/api`` once ready (the stack launcher waits for
that line), then one line per function. SIGINT/SIGTERM stop polling, let in-flight work finish and
exit; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from local.serving import serve_until_signalled

from .host_config import load_host_config
from .indexing import describe, index_app, load_app
from .settings import load_local_settings
from .triggers import HostRuntime

logger = logging.getLogger("local.devhost")


# A profile of the whole run, written when the host stops: DEVHOST_PROFILE=path.pstats (the bench's
# webhook-path scenario sets it with --profile). yappi when installed (every thread, and coroutines
# charged to their own functions; DEVHOST_PROFILE_CLOCK=cpu|wall), else cProfile (the event loop's thread).
PROFILE_SETTING = "DEVHOST_PROFILE"
PROFILE_CLOCK_SETTING = "DEVHOST_PROFILE_CLOCK"


@contextlib.contextmanager
def profiled(path: str) -> Iterator[None]:
    if not path:
        yield
        return
    try:
        import yappi  # type: ignore[import-not-found, unused-ignore]  # a dev tool, not a requirement
    except ImportError:
        profile = cProfile.Profile()
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            profile.dump_stats(path)
        return
    yappi.set_clock_type(os.environ.get(PROFILE_CLOCK_SETTING, "cpu"))
    yappi.start(builtins=False, profile_threads=True)
    try:
        yield
    finally:
        yappi.stop()
        yappi.get_func_stats().save(path, type="pstat")
        logger.info("profile written to %s (%s clock)", path, yappi.get_clock_type())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.devhost", description=__doc__.splitlines()[0])
    parser.add_argument("--app", default="function_app:app", help="import spec module:attribute")
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json path")
    parser.add_argument("--host-json", default="host.json", help="host.json path")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071, help="0 picks a free port")
    parser.add_argument("--cwd", type=Path, help="app directory: paths and imports are relative to it")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to let work finish on stop")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)  # SDK request logs drown the invocations
    if args.cwd:
        os.chdir(args.cwd)
    sys.path.insert(0, os.getcwd())
    try:
        # Settings first: apps read them at import time.
        applied = load_local_settings(Path(args.settings))
        logger.info("applied %d setting(s) from %s", len(applied), args.settings)
        app = load_app(args.app)
        config = load_host_config(Path(args.host_json))
        functions = index_app(app, os.environ)
        runtime = HostRuntime(
            functions, config, os.environ, host=args.host, port=args.port, drain_timeout=args.drain_timeout
        )
        listed = "".join(f"\n{describe(f, config.route_prefix)}" for f in functions)
        with profiled(os.environ.get(PROFILE_SETTING, "")):
            asyncio.run(
                serve_until_signalled(runtime.start(), lambda rt: f"dev host listening on {rt.base_url}{listed}")
            )
    except (ValueError, OSError, ImportError) as exc:
        logger.error("dev host failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
