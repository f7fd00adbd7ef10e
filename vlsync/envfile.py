"""The env file that ``make dev`` writes (``.dev/stack.env``) and ``vlsync`` and ``local.send`` read.

Values are single-quoted, so the README's ``set -a; . .dev/stack.env; set +a`` gives a shell exactly
the values Python reads (a storage connection string holds ``;``, which a shell would cut at).
python-dotenv reads the same syntax (``export``, quotes, comments) without a hand-written parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read(path: Path) -> dict[str, str]:
    """The file's ``KEY=value`` pairs; keys without a value are left out."""
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def write(path: Path, values: Mapping[str, str]) -> Path:
    """Write ``values`` readable by both a POSIX shell and ``read``; only the owner may read it."""
    lines = []
    for key, value in values.items():
        if not _KEY.match(key) or "'" in value or "\n" in value:
            raise ValueError(f"{key!r} cannot be written to an env file that a shell sources")
        lines.append(f"{key}='{value}'\n")
    path.write_text("".join(lines), encoding="utf-8")
    path.chmod(0o600)
    return path
