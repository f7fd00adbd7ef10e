"""``make dev``: the whole local stack, ready to receive webhooks.

Starts Azurite (data under ``.dev/azurite``), the Graph emulator, the managed-identity endpoint and
the function host (``func start`` when Core Tools are installed, else the dev host), registers a
demo learning provider, writes ``.dev/stack.env`` and prints one ready line and a command that sends
a signed sample event. The LMS emulator (``local/lms_emulator``) always runs beside them, so any
source can point its fetch-back at it. ``--sources-file PATH`` (``make dev SOURCES_FILE=path``)
replaces the demo source with the sources of that document (``local/sources_file.py``), checked by
the app's own validation before anything starts; ``.dev/stack.env`` then names each source's
intake URL (``INTAKE_URL_<NAME>``). Ctrl-C stops everything it started; running it again reuses the secrets and
the emulator's snapshot, so the demo registration survives restarts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from local import demo, sources_file
from local.azurite import REPO_ROOT, running_azurite
from local.lms_emulator.config import DEFAULT_OPENEDX_CLIENT_ID, DEFAULT_THINKIFIC_SUBDOMAIN
from local.write_budget import local_app_settings, local_write_budget
from shared.settings import STORAGE_CONNECTION
from vlsync import envfile

logger = logging.getLogger("stack")

# Where the stack keeps its data, logs, secrets and stack.env; tests point it elsewhere.
DEV = Path(os.environ.get("VLS_DEV_DIR", REPO_ROOT / ".dev")).resolve()


# The stack's identities, as azd provision makes them in Azure (infra/app/viva-app.bicep): the function
# app runs as a user-assigned managed identity, which is the federated credential of the product's Entra
# app; the worker signs in as that app, and the demo provider is registered through it.
STACK_IDENTITY_CLIENT_ID = "5a5a5a5a-0000-4000-8000-00000000570c"
STACK_APP_CLIENT_ID = "a99c0000-0000-4000-8000-0000000057ac"


@dataclass(frozen=True)
class Ports:
    host: int = 7071
    graph: int = 7072
    identity: int = 7073
    identity_tls: int = 7074  # the identity endpoint's Entra sign-in route (azure-identity insists on https)
    lms: int = 7075
    blob: int = 10000
    queue: int = 10001
    table: int = 10002


def stack_secrets() -> dict[str, str]:
    """Local-only secrets, generated once and kept so that re-runs keep signing the same way."""
    path = DEV / "secrets.json"
    kept: dict[str, str] = dict(json.loads(path.read_text())) if path.exists() else {}
    fresh = {
        "IDENTITY_HEADER": secrets.token_hex(16),
        "DEMO_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "LMS_EMULATOR_SECRET": secrets.token_urlsafe(24),
    }
    values = {**fresh, **kept}  # a secret added by a newer stack joins the ones kept from before
    if values != kept:
        path.write_text(json.dumps(values, indent=2))
        path.chmod(0o600)
    return values


LMS_SECRET_SETTING = "LMS_EMULATOR_SECRET"  # noqa: S105 - the name of a setting, not a secret


def stack_values(ports: Ports, registration: str) -> sources_file.StackValues:
    return sources_file.StackValues(
        registration_id=registration,
        intake_url=f"http://127.0.0.1:{ports.host}",
        lms_url=f"http://127.0.0.1:{ports.lms}",
        lms_secret_setting=LMS_SECRET_SETTING,
        openedx_client_id=DEFAULT_OPENEDX_CLIENT_ID,
        thinkific_subdomain=DEFAULT_THINKIFIC_SUBDOMAIN,
    )


def checked_sources(path: Path, ports: Ports, registration: str) -> sources_file.LocalSources:
    """The sources file made into the app's SOURCES; exits with the app's own message if it is invalid."""
    try:
        local = sources_file.resolve(sources_file.load(path), stack_values(ports, registration))
        sources_file.validate(local)
    except sources_file.SourcesFileError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    return local


class Child:
    """A stack process: its output goes to ``.dev/logs/<name>.log`` (and the console if asked)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready: str, echo: bool = False) -> None:
        self.name = name
        self.ready_pattern = re.compile(ready)
        self.ready = threading.Event()
        self.match: re.Match[str] | None = None
        (DEV / "logs").mkdir(parents=True, exist_ok=True)
        self.log = open(DEV / "logs" / f"{name}.log", "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.echo = echo
        threading.Thread(target=self._pump, name=f"{name}-output", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            if not self.ready.is_set():
                match = self.ready_pattern.search(line)
                if match:
                    self.match = match
                    self.ready.set()
            elif self.echo:
                sys.stdout.write(f"[{self.name}] {line}")

    def wait_ready(self, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see .dev/logs/{self.name}.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see .dev/logs/{self.name}.log")
        assert self.match is not None
        return self.match

    def stop(self) -> None:
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                break
        self.log.close()


def check_ports_free(ports: Ports) -> None:
    import socket

    busy = []
    for name, port in vars(ports).items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{name}={port}")
    if busy:
        raise SystemExit(f"ports in use: {', '.join(busy)} (is another `make dev` running?)")


def admin_token(identity_endpoint: str, identity_header: str) -> str:
    """A delegated token of a learning-provider admin signed in through the product's app, from the
    identity endpoint's ``/dev/token``: the registration is then bound to the app the worker pushes as."""
    answer = httpx.post(
        identity_endpoint.replace("/msi/token", "/dev/token"),
        json={
            "resource": "https://graph.microsoft.com",
            "scopes": ["LearningProvider.ReadWrite"],
            "clientId": STACK_APP_CLIENT_ID,
        },
        headers={"X-IDENTITY-HEADER": identity_header},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def sign_in_settings(identity_endpoint: str) -> dict[str, str]:
    """The worker's one-app sign-in settings, read from the running identity endpoint (its Entra route and
    CA), and a CA bundle (certifi's roots + the local CA) for SSL_CERT_FILE."""
    from local.identity.tls import ca_bundle

    health = httpx.get(identity_endpoint.replace("/msi/token", "/_identity/health"), timeout=10).json()
    bundle = ca_bundle(DEV / "ca-bundle.pem", health["caFile"])
    return {
        "GRAPH_AUTH_MODE": "app",
        "AZURE_CLIENT_ID": STACK_IDENTITY_CLIENT_ID,
        "VIVA_APP_CLIENT_ID": STACK_APP_CLIENT_ID,
        "VIVA_APP_TENANT_ID": str(health["tenantId"]),
        "AZURE_AUTHORITY_HOST": str(health["authorityHost"]),
        "SSL_CERT_FILE": str(bundle),
    }


def bound_registration(graph_url: str, known: str | None) -> str | None:
    """``known`` if it was registered through the stack's app; a registration from before the one-app
    setup (bound to another app id) would refuse every push, so it is registered anew instead."""
    if not known:
        return None
    providers = httpx.get(f"{graph_url}/_emulator/providers", timeout=10).json()["value"]
    found = next((p for p in providers if p["id"] == known), None)
    if found and str(found.get("registeredByAppId") or "").lower() != STACK_APP_CLIENT_ID:
        logger.info("registration %s was made through another app; registering the demo provider anew", known)
        return None
    return known


def record_registration(connection_string: str, tenant_id: str, registration: str) -> None:
    """Record in the ledger that the demo provider was registered through the stack's app, as
    ``vlsync provider register`` does, so ``vlsync doctor`` can compare it."""
    from azure.data.tables import TableServiceClient

    from shared.ledger import Ledger
    from shared.settings import Settings

    table = TableServiceClient.from_connection_string(connection_string).get_table_client(
        Settings.model_fields["ledger_table_name"].default
    )
    display_name = str(demo.DEMO_PROVIDER["displayName"])
    Ledger(table, tenant_id=tenant_id).record_registration(
        registration, app_id=STACK_APP_CLIENT_ID, display_name=display_name, by="make dev"
    )


def previous_registration() -> str | None:
    path = DEV / "stack.env"
    return envfile.read(path).get("REGISTRATION_ID") if path.is_file() else None


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def run(ports: Ports, *, use_func: bool | None = None, sources_path: Path | None = None) -> None:
    (DEV / "logs").mkdir(parents=True, exist_ok=True)
    if sources_path is not None:
        # Checked before anything starts (the registration is not known yet, so a stand-in fills it).
        checked_sources(sources_path, ports, registration="pending-registration")
    check_ports_free(ports)
    local_secrets = stack_secrets()
    sample = REPO_ROOT / "local.settings.sample.json"
    if not (REPO_ROOT / "local.settings.json").exists():
        shutil.copy(sample, REPO_ROOT / "local.settings.json")
    py = sys.executable
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        running_azurite(
            DEV / "azurite", ports=(ports.blob, ports.queue, ports.table), log_file=DEV / "logs" / "azurite.log"
        ) as azurite,
        children() as procs,
    ):
        graph = Child(
            "graph-emulator",
            [py, "-m", "local.graph_emulator", "--port", str(ports.graph), "--snapshot", str(DEV / "graph.json")],
            base_env,
            r"listening on (http://\S+)",
        )
        procs.append(graph)
        identity_args = [
            *("--port", str(ports.identity), "--tls-port", str(ports.identity_tls), "--tls-dir", str(DEV / "tls")),
            *("--header", local_secrets["IDENTITY_HEADER"], "--client-id", STACK_IDENTITY_CLIENT_ID),
            *("--app", f"{STACK_APP_CLIENT_ID}={STACK_IDENTITY_CLIENT_ID}"),
        ]
        identity = Child(
            "identity", [py, "-m", "local.identity", *identity_args], base_env, r"listening on (http://\S+)"
        )
        procs.append(identity)
        lms = Child(
            "lms-emulator",
            [py, "-m", "local.lms_emulator", "--port", str(ports.lms)],
            {**base_env, LMS_SECRET_SETTING: local_secrets[LMS_SECRET_SETTING]},  # not on the command line
            r"listening on (http://\S+)",
        )
        procs.append(lms)
        graph_url = graph.wait_ready(30).group(1).rstrip("/")
        identity_endpoint = identity.wait_ready(30).group(1)
        sign_in = sign_in_settings(identity_endpoint)
        registration = demo.register_provider(
            graph_url,
            admin_token(identity_endpoint, local_secrets["IDENTITY_HEADER"]),
            known=bound_registration(graph_url, previous_registration()),
        )
        lms_url = lms.wait_ready(30).group(1).rstrip("/")
        if sources_path is not None:
            local = checked_sources(sources_path, ports, registration)
            sources, source_settings, intake_urls = local.sources_json, local.settings, local.intake_urls
            demo_values: dict[str, str] = {}
        else:
            sources = json.dumps({demo.DEMO_SOURCE: demo.source_entry(registration, "DEMO_WEBHOOK_SECRET")})
            source_settings, intake_urls = {}, {}
            demo_values = {
                "DEMO_SOURCE": demo.DEMO_SOURCE,
                "DEMO_WEBHOOK_SECRET": local_secrets["DEMO_WEBHOOK_SECRET"],
            }
        record_registration(azurite.connection_string, sign_in["VIVA_APP_TENANT_ID"], registration)
        app_env = {
            **base_env,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsStorage": azurite.connection_string,
            STORAGE_CONNECTION: azurite.connection_string,
            "CONTENT_QUEUE_NAME": "content-commands",
            "SOURCES": sources,
            "DEMO_WEBHOOK_SECRET": local_secrets["DEMO_WEBHOOK_SECRET"],
            LMS_SECRET_SETTING: local_secrets[LMS_SECRET_SETTING],
            **source_settings,
            "GRAPH_BASE_URL": graph_url,
            "IDENTITY_ENDPOINT": identity_endpoint,
            "IDENTITY_HEADER": local_secrets["IDENTITY_HEADER"],
            **sign_in,
            # The write budget (never the emulator's bottleneck) and the timers' settings: local/write_budget.py.
            **local_app_settings(base_env),
        }
        func = shutil.which("func") if use_func is not False else None
        if func:
            args = [func, "start", "--port", str(ports.host)]
            ready = r"(http://\S+?):\d+/api/|Host lock lease acquired|Worker process started"
        else:
            args = [py, "-m", "local.devhost", "--app", "function_app:app", "--port", str(ports.host)]
            ready = r"listening on (http://\S+)"
        host = Child("function-host", args, app_env, ready, echo=True)
        procs.append(host)
        host.wait_ready(90)
        intake_url = f"http://127.0.0.1:{ports.host}"
        env_file = envfile.write(
            DEV / "stack.env",
            {
                "INTAKE_URL": intake_url,
                "GRAPH_BASE_URL": graph_url,
                "IDENTITY_ENDPOINT": identity_endpoint,
                "IDENTITY_HEADER": local_secrets["IDENTITY_HEADER"],
                "REGISTRATION_ID": registration,
                **demo_values,
                "LMS_EMULATOR_URL": lms_url,
                LMS_SECRET_SETTING: local_secrets[LMS_SECRET_SETTING],
                STORAGE_CONNECTION: azurite.connection_string,
                # The app's sources (names of secret settings, no secrets), so that vlsync status and
                # replay archive know them as the function app does.
                "SOURCES": sources,
                # Locally only: each source's generated secret settings (to sign test deliveries) and URL.
                **source_settings,
                **intake_urls,
                **sign_in,
                # The host's write budget, so that vlsync (backfill, reconcile) spends from the same one.
                **local_write_budget(base_env),
            },
        )
        env_shown = env_file.relative_to(REPO_ROOT) if env_file.is_relative_to(REPO_ROOT) else env_file
        names = list(json.loads(sources))
        shown = names[0] if len(names) == 1 else "{" + ",".join(names) + "}"
        print(
            f"ready: webhooks at {intake_url}/api/webhooks/{shown} -> Graph emulator {graph_url} "
            f"(registration {registration}), LMS emulator {lms_url}; settings in {env_shown}",
            flush=True,
        )
        env_arg = "" if DEV == REPO_ROOT / ".dev" else f" --env-file {env_file}"
        if sources_path is None:
            print(
                f"send a signed sample event:\n  {py} -m local.send{env_arg} local/samples/course-upserted.json",
                flush=True,
            )
        else:
            print(f"intake URLs: {', '.join(f'{k}={v}' for k, v in intake_urls.items())}", flush=True)
        print("stop with Ctrl-C", flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            dead = [c.name for c in procs if c.proc.poll() is not None]
            if dead:
                print(f"stopping: {', '.join(dead)} exited (see .dev/logs/)", flush=True)
                break
    print("stack stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local Viva Learning Sync stack.")
    parser.add_argument("--no-func", action="store_true", help="use the dev host even when Core Tools are installed")
    parser.add_argument(
        "--sources-file",
        type=Path,
        help="a SOURCES document (docs/sources.md) to run instead of the demo source; locally an entry may give "
        'its secrets inline, leave out registrationId and say "apiBaseUrl": "emulator" (local/sources_file.py)',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    defaults = Ports()
    ports = Ports(
        **{name: int(os.environ.get(f"VLS_{name.upper()}_PORT", port)) for name, port in vars(defaults).items()}
    )
    run(ports, use_func=False if args.no_func else None, sources_path=args.sources_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
