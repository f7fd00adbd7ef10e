"""``python -m local.faults`` (``make faults``): every fault of issue 9 point 12 against the running stack.

For each fault, ``--size`` mixed events (default 2000, or ``FAULTS_SIZE``) go through the intake
over HTTP, the queue, the worker and the Graph emulator while the fault plays; after it ends and
the queue has drained, the registration's content (listed through Graph) is compared with the
newest event of each course. One line per fault; exit 1 when anything was lost, resurrected or won
while stale, or a command was parked (every fault here is transient), or the queue did not drain.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from local.azurite import REPO_ROOT
from local.faults.runner import HEADER, Profile, catalogue, compression, line, run_all, with_overrides


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.faults", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=int,
        default=int(os.environ["FAULTS_SIZE"]) if os.environ.get("FAULTS_SIZE") else None,
        help="events per fault (default 2000, or $FAULTS_SIZE)",
    )
    parser.add_argument("--profile", choices=["full", "ci"], default="full", help="durations and clocks (ci: short)")
    parser.add_argument("--faults", help="comma-separated fault names to run (default: all); --list shows them")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    parser.add_argument("--long-outage-seconds", type=float, help="the long Graph outage (default 600)")
    parser.add_argument("--outage-seconds", type=float, help="the short Graph outage (default 30)")
    parser.add_argument("--token-down-seconds", type=float, help="token endpoint outage (default 60)")
    parser.add_argument("--drain-timeout", type=float, help="seconds to wait for the queue to drain (default 1800)")
    parser.add_argument("--seed", type=int, help="seed of the event plans")
    parser.add_argument(
        "--stacks", type=int, default=1, help="run the faults on this many stacks side by side (default 1)"
    )
    parser.add_argument("--run-dir", type=Path, help="data, logs and report (default .dev/faults/<time>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each mismatch of a failing fault")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = Profile.ci() if args.profile == "ci" else Profile.full()
    profile = with_overrides(
        base,
        size=args.size,
        long_outage_seconds=args.long_outage_seconds,
        outage_seconds=args.outage_seconds,
        token_down_seconds=args.token_down_seconds,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
    )
    faults = catalogue(profile)
    if args.list:
        for fault in faults:
            print(f"{fault.name:<16} {fault.description}")
        return 0
    if args.faults:
        wanted = [name.strip() for name in args.faults.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {f.name for f in faults})
        if unknown:
            print(f"unknown fault(s): {', '.join(unknown)}; --list shows them", file=sys.stderr)
            return 2
        faults = [f for f in faults if f.name in wanted]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    run_dir = args.run_dir or REPO_ROOT / ".dev" / "faults" / datetime.now().strftime("%Y%m%d-%H%M%S")
    print(
        f"fault harness: {profile.size} events per fault, intake (HTTP) -> queue -> worker -> Graph emulator; "
        f"logs and report in {run_dir}",
        flush=True,
    )
    print(f"time compression: {compression(profile)}", flush=True)
    started = time.monotonic()
    print(HEADER, flush=True)
    results = run_all(run_dir, profile, faults, stacks=args.stacks, on_result=lambda r: print(line(r), flush=True))
    if args.stacks > 1:
        print(f"\nin catalogue order:\n{HEADER}\n" + "\n".join(line(r) for r in results), flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(
        json.dumps({"profile": repr(profile), "results": [r.to_json() for r in results]}, indent=2, default=str)
    )
    for result in results:
        extra = [f"{result.fault}: {result.description}"]
        if result.note:
            extra.append(f"  note: {result.note}")
        if result.held:
            extra.append(f"  held: {result.held}")
        if not result.ok:
            shown = result.details if args.verbose else result.details[:5]
            extra += [f"  {json.dumps(d, default=str)}" for d in shown]
            if len(result.details) > len(shown):
                extra.append(f"  ... {len(result.details) - len(shown)} more in {run_dir / 'report.json'}")
        print("\n".join(extra))
    failed = [r.fault for r in results if not r.ok]
    minutes = (time.monotonic() - started) / 60
    print(
        f"{len(results) - len(failed)}/{len(results)} faults ok in {minutes:.1f} min"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
