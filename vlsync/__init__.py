"""``vlsync``: the operator CLI for Viva Learning content sync (learning providers and content,
against Microsoft Graph or the local emulator). See docs/cli.md."""

from __future__ import annotations

from vlsync import catalog, content, doctor, providers, replay, status  # noqa: F401 - registers the command groups
from vlsync.app import cli


def main() -> None:
    cli(prog_name="vlsync")


__all__ = ["cli", "main"]
