"""One LMS emulator per session (its state is cleared by seeding and the request log per test)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from local.lms_emulator import RunningLms, run_in_thread

SECRET = "lms-secret-1"


@pytest.fixture(scope="session")
def lms() -> Iterator[RunningLms]:
    with run_in_thread(secret=SECRET) as running:
        yield running


@pytest.fixture
def client(lms: RunningLms) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lms.url, timeout=10) as http:
        http.delete("/_lms/requests").raise_for_status()
        yield http
