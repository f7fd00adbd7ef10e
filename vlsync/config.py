"""Where every ``vlsync`` setting comes from, decided in one pure function.

Order, first wins: an explicit option, then the process environment, then the env file (the local
stack's ``.dev/stack.env``), then the built-in default. The env file is found at ``--env-file`` /
``VLSYNC_ENV_FILE``, else ``$VLS_DEV_DIR/stack.env``, else ``./.dev/stack.env`` (a missing default
file is simply not used).

The default file holds the local stack's settings (Azurite's storage, the demo registration, the
local identity endpoint). It is used only when Graph is on this machine: a command aimed at another
Graph (an option or the environment names it) ignores the whole file, so no local value is ever
mixed into a call to real Graph. A file named explicitly is always used.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices

from shared.models import TENANT_ID_PATTERN
from shared.settings import Settings
from vlsync import envfile

CredentialChoice = Literal["local", "device-code", "browser", "azure-cli", "default", "environment", "managed-identity"]
CREDENTIAL_CHOICES: tuple[str, ...] = (
    "local",
    "device-code",
    "browser",
    "azure-cli",
    "default",
    "environment",
    "managed-identity",
)
CallKind = Literal["provider", "content"]


def _app_name(field: str) -> str:
    """The app-setting name of a ``Settings`` field, so the CLI reads the variables the app reads."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    assert isinstance(alias, str), field
    return alias


def _app_default(field: str) -> Any:
    """The app's own default for a setting (``shared.settings.Settings``), never a copy of it."""
    return Settings.model_fields[field].default


DEFAULT_GRAPH_BASE_URL: str = _app_default("graph_base_url")
DEFAULT_QUEUE: str = _app_default("content_queue_name")
DEFAULT_LEDGER_TABLE: str = _app_default("ledger_table_name")
DEFAULT_STATE_CACHE_SECONDS: float = _app_default("registration_state_cache_seconds")
# The CLI's own: an operator waits longer for Graph than a queue invocation may.
DEFAULT_MAX_RETRY_SECONDS = 120.0
# The environment variables that choose vlsync's credential, sign-in, storage and target: a harness
# that runs vlsync against a stack of its own (tests, the bench) clears them first.
TARGET_ENVIRONMENT = (
    "AZURE_CLIENT_ID",
    "AZURE_AUTHORITY_HOST",
    "GRAPH_AUTH_MODE",
    "VIVA_APP_CLIENT_ID",
    "VIVA_APP_TENANT_ID",
    "SSL_CERT_FILE",
    "VLSYNC_CREDENTIAL",
    "VLSYNC_CLIENT_ID",
    "VLSYNC_TENANT_ID",
    "VLSYNC_ENV_FILE",
    "VLSYNC_STORAGE_ACCOUNT",
    "GRAPH_API_VERSION",
    "LearningSyncStorage",
    "REGISTRATION_ID",
)
DEFAULT_TIMEOUT_SECONDS: float = _app_default("graph_timeout_seconds")

# The write budget's settings, by the app's names (shared.ratebudget reads them through Settings).
WRITE_BUDGET_SETTINGS = tuple(
    _app_name(name)
    for name in (
        "graph_write_rate_per_second",
        "graph_write_burst",
        "graph_write_block_limit",
        "graph_write_block_seconds",
    )
)
# option name -> environment variable (and env-file key) that supplies it when the option is absent;
# the app's settings by the app's own names.
ENV_NAMES: dict[str, str] = {
    "graph_base_url": _app_name("graph_base_url"),
    "graph_version": _app_name("graph_api_version"),
    "credential": "VLSYNC_CREDENTIAL",
    "tenant_id": "VLSYNC_TENANT_ID",
    "client_id": "VLSYNC_CLIENT_ID",
    "registration_id": "REGISTRATION_ID",
    "storage_connection_string": _app_name("storage_connection_string"),
    "storage_account": "VLSYNC_STORAGE_ACCOUNT",
    "queue": _app_name("content_queue_name"),
    "ledger_table": _app_name("ledger_table_name"),
    "identity_endpoint": "IDENTITY_ENDPOINT",
    "identity_header": "IDENTITY_HEADER",
    "managed_identity_client_id": _app_name("azure_client_id"),
    "state_cache_seconds": _app_name("registration_state_cache_seconds"),
    "max_retry_seconds": "VLSYNC_MAX_RETRY_SECONDS",
    "app_client_id": _app_name("viva_app_client_id"),
    "graph_auth_mode": _app_name("graph_auth_mode_setting"),
    "authority_host": _app_name("authority_host"),
    # The CA bundle that trusts the local stack's sign-in host (its own CA; stack.env names it).
    "ca_file": "SSL_CERT_FILE",
}
# Read when the option's own variable is unset: one app registers the provider and pushes content,
# so an admin signs in through the app the deployment made (azd output VIVA_APP_CLIENT_ID) in its tenant.
FALLBACK_ENV_NAMES: dict[str, str] = {
    "tenant_id": _app_name("tenant_id"),
    "client_id": _app_name("viva_app_client_id"),
}


class ConfigError(ValueError):
    """A setting is missing or malformed: a usage error (exit code 2)."""


def is_loopback(url: str) -> bool:
    """Whether a URL names this machine (``localhost``, ``127.0.0.0/8``, ``::1``): the local stack."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The one id no caller may send: an empty segment, or one that a URL resolver turns into "this" or
# "the parent" (``learningContents/..`` would address the provider itself).
_DOT_SEGMENTS = frozenset({"", ".", ".."})


def id_problem(value: str | None) -> str | None:
    """Why ``value`` cannot be a registration, content or external id, or ``None`` when it can."""
    if value is None:
        return None
    if value in _DOT_SEGMENTS:
        return f"{value!r} is not an id (empty, '.' and '..' are refused)"
    return None


@dataclass(frozen=True)
class CliConfig:
    json: bool = False
    graph_base_url: str = DEFAULT_GRAPH_BASE_URL
    graph_version: Literal["v1.0", "beta"] = "v1.0"
    credential: CredentialChoice | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    registration_id: str | None = None
    storage_connection_string: str | None = None
    storage_account: str | None = None
    queue: str = DEFAULT_QUEUE
    ledger_table: str = DEFAULT_LEDGER_TABLE
    identity_endpoint: str | None = None
    identity_header: str | None = None
    managed_identity_client_id: str | None = None
    state_cache_seconds: float = DEFAULT_STATE_CACHE_SECONDS
    max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    app_client_id: str | None = None  # the app the worker pushes as (VIVA_APP_CLIENT_ID)
    graph_auth_mode: str | None = None  # the worker's GRAPH_AUTH_MODE, as the deployment set it
    authority_host: str | None = None
    ca_file: str | None = None  # SSL_CERT_FILE, from the environment or the env file
    # The write budget's app settings (GRAPH_WRITE_*) the env file holds and the environment does not
    # (the app's Settings reads the environment itself): make dev's budget is the stack's, not the
    # production default, so a backfill against it is not paced at 1 write/s.
    env_file_budget: tuple[tuple[str, str], ...] = ()
    env_file: Path | None = None
    ignored_env_file: Path | None = None  # the default stack.env, left out because Graph is not local

    @property
    def graph_root(self) -> str:
        return f"{self.graph_base_url}/{self.graph_version}"

    @property
    def graph_host(self) -> str:
        return urlsplit(self.graph_base_url).netloc

    def tls_options(self) -> dict[str, Any]:
        """The CA bundle for the sign-in's TLS, from the environment or the env file (where ``make dev``
        names the stack's): ``shared.credentials.tls_options`` reads only the process environment."""
        return {"connection_verify": self.ca_file} if self.ca_file else {}

    @property
    def local_stack(self) -> bool:
        """The local stack: its identity endpoint is known and Graph is the emulator on this machine."""
        return bool(self.identity_endpoint and self.identity_header) and is_loopback(self.graph_base_url)

    def credential_for(self, kind: CallKind) -> CredentialChoice:
        """The credential a call uses: the chosen one, else local on the stack, else the kind's default.

        Provider calls take a delegated token with ``LearningProvider.ReadWrite``. Azure CLI tokens carry
        only the scopes pre-authorised for the CLI's own app, so the default is a browser sign-in through
        the product's app registration (``VIVA_APP_CLIENT_ID``, or ``--client-id``): the provider is then
        bound to the app the worker pushes as. Browser first, because Conditional Access often blocks
        the device-code flow; ``--credential device-code`` where no browser is at hand."""
        if self.credential:
            return self.credential
        if self.local_stack:
            return "local"
        return "browser" if kind == "provider" else "default"

    def require_tenant(self) -> str:
        """The tenant the ledger rows belong to (ledger keys carry it): a tenant id (GUID), in the one
        spelling the worker uses, so a CLI write never lands in a partition the worker does not read."""
        if not self.tenant_id:
            raise ConfigError("no tenant id: give --tenant-id or set VIVA_APP_TENANT_ID (azd env / stack.env has it)")
        if not re.fullmatch(TENANT_ID_PATTERN, self.tenant_id):
            raise ConfigError(
                f"tenant id {self.tenant_id!r} is not a tenant id (directory id, a GUID); a domain name such as "
                "contoso.onmicrosoft.com names the tenant for sign-in but not its ledger rows"
            )
        return self.tenant_id.lower()

    @property
    def storage_configured(self) -> bool:
        return bool(self.storage_connection_string or self.storage_account)

    @property
    def held_queue(self) -> str:
        return f"{self.queue}-held"

    def require_registration(self) -> str:
        if not self.registration_id:
            raise ConfigError("no registration id: give --registration-id or set REGISTRATION_ID (stack.env has it)")
        problem = id_problem(self.registration_id)
        if problem:
            raise ConfigError(f"registration id {problem}")
        return self.registration_id


def default_env_file(environ: Mapping[str, str], cwd: Path) -> Path:
    dev_dir = environ.get("VLS_DEV_DIR")
    return Path(dev_dir) / "stack.env" if dev_dir else cwd / ".dev" / "stack.env"


def locate_env_file(option: str | None, environ: Mapping[str, str], cwd: Path) -> tuple[Path | None, bool]:
    """The env file to read and whether it was named; a named file must exist, the default may be absent."""
    named = option or environ.get("VLSYNC_ENV_FILE")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"env file {named} does not exist")
        return path, True
    path = default_env_file(environ, cwd)
    return (path if path.is_file() else None), False


def default_file_applies(
    options: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, str]
) -> bool:
    """Whether the default (unnamed) env file may be used: only when the Graph it leads to is on this
    machine. An option or the environment naming another Graph rules the whole file out."""
    name = ENV_NAMES["graph_base_url"]
    root = options.get("graph_base_url") or environ.get(name) or file_values.get(name) or DEFAULT_GRAPH_BASE_URL
    return is_loopback(str(root))


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must not be negative")
    return number


def resolve(options: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, str]) -> CliConfig:
    """Merge explicit options, the environment and the env file into one ``CliConfig`` (pure)."""

    def pick(name: str) -> Any:
        value = options.get(name)
        if value is not None:
            return value
        for env_name in (ENV_NAMES.get(name), FALLBACK_ENV_NAMES.get(name)):
            if env_name:
                for source in (environ, file_values):
                    found = source.get(env_name)
                    if found not in (None, ""):
                        return found
        return None

    raw_version = pick("graph_version") or "v1.0"
    if raw_version not in ("v1.0", "beta"):
        raise ConfigError(f"graph version must be v1.0 or beta, not {raw_version!r}")
    version: Literal["v1.0", "beta"] = "beta" if raw_version == "beta" else "v1.0"
    credential = pick("credential")
    if credential is not None and credential not in CREDENTIAL_CHOICES:
        raise ConfigError(f"credential must be one of {', '.join(CREDENTIAL_CHOICES)}, not {credential!r}")
    base = str(pick("graph_base_url") or DEFAULT_GRAPH_BASE_URL).rstrip("/")
    scheme = urlsplit(base).scheme
    if scheme not in ("http", "https") or not urlsplit(base).hostname:
        raise ConfigError(f"graph base URL must be an http(s) URL, not {base!r}")
    if scheme == "http" and not is_loopback(base):
        raise ConfigError(f"graph base URL {base} is plain http: only a Graph on this machine may be (use https)")
    cache = pick("state_cache_seconds")
    retry = pick("max_retry_seconds")
    timeout = options.get("timeout_seconds")
    return CliConfig(
        json=bool(options.get("json")),
        graph_base_url=base,
        graph_version=version,
        credential=credential,
        tenant_id=pick("tenant_id"),
        client_id=pick("client_id"),
        registration_id=pick("registration_id"),
        storage_connection_string=pick("storage_connection_string"),
        storage_account=pick("storage_account"),
        queue=pick("queue") or DEFAULT_QUEUE,
        ledger_table=pick("ledger_table") or DEFAULT_LEDGER_TABLE,
        identity_endpoint=pick("identity_endpoint"),
        identity_header=pick("identity_header"),
        managed_identity_client_id=pick("managed_identity_client_id"),
        state_cache_seconds=DEFAULT_STATE_CACHE_SECONDS if cache is None else _number("settle seconds", cache),
        max_retry_seconds=DEFAULT_MAX_RETRY_SECONDS if retry is None else _number("max retry seconds", retry),
        timeout_seconds=DEFAULT_TIMEOUT_SECONDS if timeout is None else _number("timeout", timeout),
        app_client_id=pick("app_client_id"),
        graph_auth_mode=pick("graph_auth_mode"),
        authority_host=pick("authority_host"),
        # The env file's bundle first: make dev wrote it (certifi + the stack's own CA) for the very sign-in
        # host the file points at, while a machine-wide SSL_CERT_FILE (Nix, corporate images) lacks that CA.
        ca_file=file_values.get("SSL_CERT_FILE") or pick("ca_file"),
        env_file_budget=tuple(
            (name, file_values[name]) for name in WRITE_BUDGET_SETTINGS if name in file_values and name not in environ
        ),
        env_file=options.get("env_file_path"),
        ignored_env_file=options.get("ignored_env_file_path"),
    )


def load(options: Mapping[str, Any], environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliConfig:
    """``resolve`` with the real environment and env file (the default file only for a local Graph)."""
    env = dict(os.environ if environ is None else environ)
    path, named = locate_env_file(options.get("env_file"), env, cwd or Path.cwd())
    file_values = envfile.read(path) if path else {}
    ignored = None
    if path is not None and not named and not default_file_applies(options, env, file_values):
        path, ignored, file_values = None, path, {}
    return resolve({**options, "env_file_path": path, "ignored_env_file_path": ignored}, env, file_values)
