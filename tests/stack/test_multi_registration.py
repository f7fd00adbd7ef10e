"""One function app serves several registrations at once (several sources each), and
``vlsync provider disable|enable`` holds and releases exactly one registration's commands.

The app's own functions run in the dev host over Azurite, the identity endpoint and the emulator;
both registrations are created and inspected with ``vlsync`` itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import demo
from local.devhost import DevHost
from local.write_budget import LOCAL_APP_SETTINGS
from shared import bootstrap
from tests.conftest import REPO, SECRET, app_sign_in_env
from tests.queues import peek_json
from tests.vlsync_runner import Vlsync, make_runner
from tests.webhooks import content, event, signed

LOGOS = [
    "--square-logo-light", "https://lms.example/a.png", "--long-logo-light", "https://lms.example/b.png",
    "--square-logo-dark", "https://lms.example/c.png", "--long-logo-dark", "https://lms.example/d.png",
]  # fmt: skip


@dataclass
class App:
    host: DevHost
    vlsync: Vlsync
    reg_a: str
    reg_b: str
    queue: str
    connection_string: str

    def post(self, source: str, body: Any) -> httpx.Response:
        raw, headers = signed(body, SECRET)
        return httpx.post(f"{self.host.base_url}/webhooks/{source}", content=raw, headers=headers, timeout=30)

    def exists(self, registration: str, external_id: str) -> bool:
        result = self.vlsync("content", "get", external_id, "--registration-id", registration)
        assert result.exit_code in (0, 1), result.stderr
        return result.exit_code == 0

    def held(self) -> list[dict[str, Any]]:
        return peek_json(self.connection_string, f"{self.queue}-held")


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def app(
    azurite: Any, emulator: Any, identity_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    queue = f"multi-{uuid.uuid4().hex[:10]}"
    ledger_table = f"multi{uuid.uuid4().hex[:10]}"
    cli_env = {
        "GRAPH_BASE_URL": emulator.url,
        **identity_server.env,
        "LearningSyncStorage": azurite.connection_string,
        "CONTENT_QUEUE_NAME": queue,
        "LEDGER_TABLE_NAME": ledger_table,
        "REGISTRATION_STATE_CACHE_SECONDS": "0",
        "VLS_DEV_DIR": str(tmp_path / "none"),
        **app_sign_in_env(identity_server),  # register through the product's app, as the worker pushes
    }
    vlsync = make_runner(cli_env)
    regs = []
    for name in ("LMS A", "LMS B"):
        result = vlsync("provider", "register", "--display-name", name, *LOGOS, "--quiet")
        assert result.exit_code == 0, result.stderr
        regs.append(result.stdout.strip())
    reg_a, reg_b = regs

    sources = {"lms-a": reg_a, "lms-a-archive": reg_a, "lms-b": reg_b}
    app_env = {
        "LearningSyncStorage": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "CONTENT_QUEUE_NAME": queue,
        "LEDGER_TABLE_NAME": ledger_table,
        "REGISTRATION_STATE_CACHE_SECONDS": "0",
        "SOURCES": json.dumps({name: demo.source_entry(reg, "MULTI_SECRET") for name, reg in sources.items()}),
        "MULTI_SECRET": SECRET,
        "GRAPH_BASE_URL": emulator.url,
        "GRAPH_MAX_INLINE_RETRY_SECONDS": "3",
        **LOCAL_APP_SETTINGS,  # the budget on but never the bottleneck; %RECONCILE_SCHEDULE% resolves
        **identity_server.env,
        **app_sign_in_env(identity_server),
    }
    for key, value in app_env.items():
        monkeypatch.setenv(key, value)
    host_json = json.loads((REPO / "host.json").read_text())
    host_json["extensions"]["queues"].update({"visibilityTimeout": "00:00:01", "maxPollingInterval": "00:00:00.500"})
    bootstrap.reset()
    import function_app

    try:
        with DevHost.start(function_app.app, host_json=host_json, port=0) as host:
            yield App(host, vlsync, reg_a, reg_b, queue, azurite.connection_string)
            host.run(bootstrap.aclose())  # the app's clients, closed on their own loop before it ends
    finally:
        bootstrap.reset()
        # get_functions() may run once per app object; leave it unindexed for later tests (contract tests).
        function_app.app.functions_bindings = {}


def test_two_registrations_each_get_their_own_sources_events(app: App) -> None:
    assert app.post("lms-a", event("com.lms.course.created", content("multi-a"))).status_code == 202
    assert app.post("lms-a-archive", event("com.lms.course.created", content("multi-a-archive"))).status_code == 202
    assert app.post("lms-b", event("com.lms.course.created", content("multi-b"))).status_code == 202
    app.host.wait_until_idle(20)

    assert app.exists(app.reg_a, "multi-a")
    assert app.exists(app.reg_a, "multi-a-archive")
    assert not app.exists(app.reg_a, "multi-b")
    assert app.exists(app.reg_b, "multi-b")
    assert not app.exists(app.reg_b, "multi-a")
    assert not app.exists(app.reg_b, "multi-a-archive")
    listed_b = json.loads(app.vlsync("--json", "content", "list", "--registration-id", app.reg_b).stdout)
    assert [i["externalId"] for i in listed_b] == ["multi-b"]

    status = json.loads(app.vlsync("--json", "content", "status", "multi-a", "--registration-id", app.reg_a).stdout)
    assert status["lastPush"]["pushedBy"] == "worker"
    assert status["lastPush"]["source"] == "lms-a"


def test_disable_holds_one_registration_and_enable_releases_it(app: App) -> None:
    disabled = app.vlsync("provider", "disable", app.reg_b)
    assert disabled.exit_code == 0, disabled.stderr

    assert app.post("lms-b", event("com.lms.course.created", content("while-disabled"))).status_code == 202
    assert app.post("lms-a", event("com.lms.course.created", content("other-still-flows"))).status_code == 202
    wait_for(lambda: [m["externalId"] for m in app.held()] == ["while-disabled"])
    app.host.wait_until_idle(20)
    assert app.exists(app.reg_a, "other-still-flows")  # the other registration is not affected
    assert not app.exists(app.reg_b, "while-disabled")

    enabled = app.vlsync("--json", "provider", "enable", app.reg_b)
    assert enabled.exit_code == 0, enabled.stderr
    assert json.loads(enabled.stdout)["released"] == 1
    wait_for(lambda: app.exists(app.reg_b, "while-disabled"))
    assert app.held() == []
