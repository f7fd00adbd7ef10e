"""``vlsync`` run in-process (click's runner) with exactly the environment a test gives it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from vlsync import cli
from vlsync.config import TARGET_ENVIRONMENT

Vlsync = Callable[..., Result]

# Environment variables that would change which credential, sign-in or storage vlsync picks.
CLEARED = TARGET_ENVIRONMENT


def make_runner(env: dict[str, str]) -> Vlsync:
    runner = CliRunner()
    full_env: dict[str, str | None] = {key: None for key in CLEARED}
    full_env.update(env)

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), env=full_env, input=input, catch_exceptions=False)

    return invoke


def content_line(external_id: str, **extra: Any) -> str:
    return json.dumps(
        {
            "externalId": external_id,
            "title": f"Course {external_id}",
            "contentWebUrl": "https://lms.example/courses/1",
            "languageTag": "en-us",
            **extra,
        },
        ensure_ascii=False,
    )
