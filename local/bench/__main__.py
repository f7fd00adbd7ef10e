"""``python -m local.bench [--size full|small] [--out docs/benchmarks.md] [--only NAME,...]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .report import Machine, Table, render
from .scenario import Context, Sizes
from .scenarios import ALL

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.bench", description="Run the benchmarks (issue 11).")
    parser.add_argument(
        "--size", choices=["full", "small"], default="full", help="full: 100,000 items; small: a few thousand"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the markdown report to write")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios ({', '.join(s.name for s in ALL)})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - {s.name for s in ALL}
    if unknown:
        print(f"unknown scenarios: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    machine = Machine.current()
    print(f"machine: {machine.line()}", flush=True)
    started = time.monotonic()
    sections: dict[str, list[Table]] = {}
    with tempfile.TemporaryDirectory(prefix="vls-bench-") as workdir:
        ctx = Context(args.size, Sizes.of(args.size), Path(workdir), log=lambda line: print(line, flush=True))
        for scenario in ALL:
            if wanted and scenario.name not in wanted:
                continue
            began = time.monotonic()
            tables = scenario.run(ctx)
            print(f"{scenario.name}: {time.monotonic() - began:.1f} s", flush=True)
            for table in tables:
                print(table.markdown(), flush=True)
            sections.setdefault(scenario.section, []).extend(tables)
    report = render(machine, args.size, list(sections.items()), time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n", encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
