"""``python -m local.faults.devhost --message-lease-seconds N [dev host options]``: the dev host with a
shorter message lease, for the fault harness.

The queue extension (and the dev host after it) takes each message under a 10-minute lease; a host
killed mid-batch leaves its messages hidden that long. The harness shortens the lease so that a
SIGKILL costs seconds, not ten minutes, and says so in its output (time compression). Everything
else is ``python -m local.devhost``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from local.devhost import __main__ as devhost_cli
from local.devhost import queue_listener


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.faults.devhost", add_help=False)
    parser.add_argument("--message-lease-seconds", type=int, required=True)
    known, rest = parser.parse_known_args(argv)
    if not hasattr(queue_listener, "LEASE_SECONDS"):
        print("local.devhost.queue_listener has no LEASE_SECONDS any more; update local/faults/devhost.py")
        return 2
    if known.message_lease_seconds < 1:
        parser.error("--message-lease-seconds must be at least 1")
    queue_listener.LEASE_SECONDS = known.message_lease_seconds
    return devhost_cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
