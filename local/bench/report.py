"""The bench report: the machine, then one markdown table per scenario result."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil


@dataclass(frozen=True)
class Machine:
    cores: int
    ram_gib: float
    python: str
    platform: str
    cpu: str

    @classmethod
    def current(cls) -> Machine:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpu = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), cpu)
        except OSError:
            pass
        return cls(
            cores=os.cpu_count() or 1,
            ram_gib=round(psutil.virtual_memory().total / 2**30, 1),
            python=sys.version.split()[0],
            platform=platform.platform(terse=True),
            cpu=cpu,
        )

    def line(self) -> str:
        return f"{self.cores} cores ({self.cpu}), {self.ram_gib} GiB RAM, Python {self.python}, {self.platform}"


@dataclass
class Table:
    """One result table. ``rows`` hold already formatted cells; ``notes`` follow the table."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("| " + " | ".join("---" for _ in self.columns) + " |")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def number(value: float, digits: int = 1) -> str:
    """A readable figure: thousands separated, ``digits`` decimals below 100."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}×" if baseline > 0 else "n/a"


def render(machine: Machine, size: str, sections: list[tuple[str, list[Table]]], elapsed_s: float) -> str:
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    head = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m local.bench`); every figure below comes from one run, and every",
        "ratio compares numbers measured in that same run. Targets are reported, never asserted by tests",
        "(issue 11). Do not edit by hand: run `make bench` (or `make bench BENCH_SIZE=small`) again.",
        "",
        f"- **Run:** {started}, size `{size}`, {elapsed_s:.0f} s in all; load average at the end {load} "
        "(other work on the machine skews rates: compare within a run)",
        f"- **Machine:** {machine.line()}",
        "",
    ]
    body: list[str] = []
    for title, tables in sections:
        body += [f"## {title}", ""]
        for table in tables:
            body += [table.markdown(), ""]
    return "\n".join(head + body)
