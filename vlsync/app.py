"""The ``vlsync`` command group, its shared options, and the one place errors become exit codes.

Shared options may be given before the command (``vlsync --json content list``) or after it
(``vlsync content list --json``); the later one wins. Exit codes: 0 done, 1 failed (Graph, storage,
credential or invalid content; the message says which), 2 usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vlsync import config as cfg
from vlsync.output import Printer

if TYPE_CHECKING:  # the SDKs load only when a command runs, so `--help` and usage errors are instant
    from shared.graph import GraphClient, GraphError, GraphTransientError
    from vlsync.io import InvalidInput
    from vlsync.operations import Target

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
META_KEY = "vlsync.options"


def example(*lines: str, more: str = "") -> str:
    """A click epilog with an ``Example:`` block that click prints as written (``\\b``: no rewrap)."""
    body = "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)
    return body + ("\n\n" + textwrap.dedent(more).strip() if more else "")


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value is not False and param.name:
        ctx.find_root().meta.setdefault(META_KEY, {})[param.name] = value
    return value


def shared_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(*decls, callback=_remember, expose_value=False, **kwargs)


OUTPUT_OPTIONS = [
    shared_option(
        "--json", "json", is_flag=True, default=None, help="Print one JSON document on stdout (for scripts)."
    ),
    shared_option(
        "--env-file",
        "env_file",
        type=click.Path(dir_okay=False),
        help="Env file with defaults (default: $VLS_DEV_DIR/stack.env or ./.dev/stack.env, written by make dev, "
        "used only while Graph is on this machine; a named file is always used).",
    ),
]
GRAPH_OPTIONS = [
    shared_option(
        "--graph-version", "graph_version", type=click.Choice(["v1.0", "beta"]), help="Graph API version [v1.0]."
    ),
    shared_option(
        "--graph-base-url",
        "graph_base_url",
        help="Graph root; env GRAPH_BASE_URL (the emulator's URL locally) [https://graph.microsoft.com].",
    ),
    shared_option(
        "--credential",
        "credential",
        type=click.Choice(cfg.CREDENTIAL_CHOICES),
        help="How to get the token. Default: local on the local stack; else browser sign-in through the "
        "product's app (VIVA_APP_CLIENT_ID or --client-id) for provider commands (delegated; device-code where "
        "no browser is at hand) and default (DefaultAzureCredential) for content commands (app-only).",
    ),
    shared_option(
        "--tenant-id",
        "tenant_id",
        help="Entra tenant for sign-in and ledger rows; env VLSYNC_TENANT_ID, VIVA_APP_TENANT_ID.",
    ),
    shared_option(
        "--client-id",
        "client_id",
        help="Client id of the Entra app to sign in through for browser/device-code sign-in (public client, "
        "delegated LearningProvider.ReadWrite); env VLSYNC_CLIENT_ID, else VIVA_APP_CLIENT_ID (the app azd made, "
        "which the worker pushes as: register through it).",
    ),
    shared_option(
        "--max-retry-seconds",
        "max_retry_seconds",
        type=click.FloatRange(min=0),
        help="Longest total wait spent retrying a throttled or failing Graph call [120].",
    ),
]
STORAGE_OPTIONS = [
    shared_option(
        "--storage-connection-string",
        "storage_connection_string",
        help="The app's storage (ledger, queues); env LearningSyncStorage (in stack.env).",
    ),
    shared_option(
        "--storage-account",
        "storage_account",
        help="Storage account name for an identity-based connection (DefaultAzureCredential).",
    ),
    shared_option("--queue", "queue", help=f"Content command queue; env CONTENT_QUEUE_NAME [{cfg.DEFAULT_QUEUE}]."),
    shared_option(
        "--ledger-table", "ledger_table", help=f"Ledger table; env LEDGER_TABLE_NAME [{cfg.DEFAULT_LEDGER_TABLE}]."
    ),
]
REGISTRATION_OPTIONS = [
    shared_option(
        "--registration-id",
        "registration_id",
        help="The learningProvider id the content belongs to; env REGISTRATION_ID (in stack.env).",
    ),
]


def options(*groups: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for group in reversed(groups):
            for option in reversed(group):
                func = option(func)
        return func

    return apply


ALL_OPTIONS = (OUTPUT_OPTIONS, GRAPH_OPTIONS, STORAGE_OPTIONS, REGISTRATION_OPTIONS)


class Failure(click.ClickException):
    """A failed operation (exit 1), printed as a short message, never a traceback."""

    exit_code = 1

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}
        ctx = click.get_current_context(silent=True)  # show() runs after the command's context is gone
        self.as_json = bool(ctx and ctx.find_root().meta.get(META_KEY, {}).get("json"))

    def show(self, file: Any = None) -> None:
        printer = Printer(self.as_json)
        if self.as_json:
            shown = {k: v for k, v in self.details.items() if k != "lines"}
            sys.stderr.write(json.dumps({"error": {"message": self.message, **shown}}, ensure_ascii=False) + "\n")
        else:
            printer.note(f"Error: {self.message}")
            for line in self.details.get("lines", []):
                printer.note(f"  {line}")
            if self.details.get("hint"):
                printer.note(f"  hint: {self.details['hint']}")


def config() -> cfg.CliConfig:
    ctx = click.get_current_context()
    try:
        conf = cfg.load(ctx.find_root().meta.get(META_KEY, {}))
    except cfg.ConfigError as exc:
        raise click.UsageError(str(exc), ctx) from None
    if conf.ignored_env_file is not None:
        Printer(conf.json).note(
            f"note: ignored {conf.ignored_env_file} (local stack settings): Graph is {conf.graph_host}, not this "
            "machine; name the file with --env-file to use it anyway"
        )
    return conf


def checked(factory: Callable[[], T]) -> T:
    """Build something from the settings. A missing or malformed setting (an option's value) is a usage
    error (exit 2); storage that the settings name but that cannot be used is a failure (exit 1)."""
    from vlsync.storage import StorageFailure

    try:
        return factory()
    except cfg.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except StorageFailure as exc:
        raise Failure(f"storage: {exc}") from None


def valid_id(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A click callback for ids that become URL path segments: empty, ``.`` and ``..`` are usage errors."""
    problem = cfg.id_problem(value)
    if problem:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def comma_list(value: str | None) -> list[str] | None:
    """``--select a, b`` as ``["a", "b"]``; ``None`` when the option is absent or empty."""
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def printer() -> Printer:
    return Printer(bool(click.get_current_context().find_root().meta.get(META_KEY, {}).get("json")))


def invalid(error: InvalidInput) -> Failure:
    """Invalid input: every problem listed, nothing sent (exit 1)."""
    return Failure(
        str(error),
        {"lines": [str(p) for p in error.problems], "problems": [vars(p) for p in error.problems]},
    )


def graph_error_details(error: GraphError) -> dict[str, Any]:
    return {"status": error.status, "code": error.code, "graphMessage": error.message, "requestId": error.request_id}


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; turn every expected failure into a message and exit code."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError
    from pydantic import ValidationError

    from shared.graph import GraphError, GraphTransientError
    from shared.ledger import LedgerConflict
    from shared.queue import QueueUnavailable
    from vlsync.io import InvalidInput
    from vlsync.operations import ClockSkew, ProviderMissing, RegistrationUncertain
    from vlsync.storage import StorageFailure

    try:
        return asyncio.run(_stopped_by_sigterm(coro))
    except GraphError as error:
        where = f" (request-id {error.request_id})" if error.request_id else ""
        gave_up = " - gave up retrying" if isinstance(error, GraphTransientError) else ""
        hints = getattr(error, "__notes__", [])
        raise Failure(
            f"Graph answered {error.status or 'nothing'} {error.code}: {error.message}{where}{gave_up}",
            {**graph_error_details(error), **({"hint": " ".join(hints)} if hints else {})},
        ) from None
    except RegistrationUncertain as error:
        raise Failure(str(error), {"lines": error.lines, **error.details}) from None
    except (ProviderMissing, ClockSkew) as error:
        raise Failure(str(error)) from None
    except StorageFailure as error:
        raise Failure(f"storage: {error}") from None
    except InvalidInput as error:
        raise invalid(error) from None
    except LedgerConflict as error:
        raise Failure(f"ledger: {error}", {"code": error.code}) from None
    except cfg.ConfigError as error:
        raise click.UsageError(str(error)) from None
    except ClientAuthenticationError as error:
        raise Failure(f"could not get a token: {_first_line(error)}") from None
    except QueueUnavailable as error:
        raise Failure(f"storage: {error}") from None
    except AzureError as error:  # token failures are reported by graph(); what is left is storage
        raise Failure(f"storage: {_first_line(error)}") from None
    except ValidationError as error:
        raise Failure(f"invalid values: {error.errors(include_url=False)}") from None


async def _stopped_by_sigterm(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, ended on SIGTERM as Ctrl-C ends it: the command's task is cancelled, so a backfill saves
    its checkpoint and gives back the leases it can, and the CLI says "Aborted!" and exits 1. SIGTERM is
    what ``kill``, ``timeout``, CI runners and container stops send; without this the interpreter died on
    the spot and every item in flight stayed leased (busy) until its lease expired."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def stop() -> None:
        nonlocal terminated
        if terminated:  # a second SIGTERM while the first one's cleanup runs: exit at once, as asked
            os._exit(128 + signal.SIGTERM)
        terminated = True
        if task is not None:
            task.cancel()

    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (NotImplementedError, RuntimeError, ValueError):  # no signal support here (Windows, a thread)
        return await coro
    try:
        result = await coro
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # which leaves SIG_DFL: put back what was there
        if previous is not None:  # None: a handler not installed from Python, which SIG_DFL stands for
            signal.signal(signal.SIGTERM, previous)
    if terminated:  # the command took the cancellation and returned: still a stop, not a success
        raise KeyboardInterrupt
    return result


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


TOKEN_HINTS = {
    "local": "is the local stack running (make dev) and .dev/stack.env current?",
    "azure-cli": "sign in with `az login --tenant <tenant>`",
    "device-code": "sign in within the time the code is valid, in the tenant of your app registration",
    "browser": "finish the sign-in in the browser that opened (the app needs the redirect URI http://localhost); "
    "where no browser can open, use --credential device-code",
    "default": "DefaultAzureCredential found no identity: set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, "
    "run on a managed identity, or `az login`",
    "environment": "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH)",
    "managed-identity": "works only on an Azure resource with a managed identity "
    "(AZURE_CLIENT_ID names a user-assigned one)",
}


def retry_reporter(out: Printer) -> Callable[[GraphTransientError, int, float], None]:
    def report(error: GraphTransientError, attempt: int, delay: float) -> None:
        if error.status == 429:
            out.note(f"throttled by Graph: waiting {delay:g}s (retry {attempt})")
        else:
            out.note(f"Graph {error.status or 'unreachable'} {error.code}: waiting {delay:g}s (retry {attempt})")

    return report


def announce(out: Printer, target: Target) -> None:
    """Say what a write command is about to touch, once, before it touches anything."""
    if not target.announced:
        out.note(target.line())
        target.announced = True


def write_target(conf: cfg.CliConfig, registration: str, *, storage: bool) -> Target:
    """The target of a write command; ``storage``: whether it writes the app's storage (ledger, queues)."""
    from vlsync.operations import Target, storage_account

    account = storage_account(conf.storage_connection_string, conf.storage_account) if storage else None
    return Target(f"{conf.graph_host} ({conf.graph_version})", registration, account, tenant=conf.tenant_id)


@contextlib.asynccontextmanager
async def graph(
    kind: cfg.CallKind, conf: cfg.CliConfig, out: Printer, *, target: Target | None = None
) -> AsyncIterator[GraphClient]:
    """A Graph client with the credential that fits ``kind``, a generous retry budget and visible waits.

    A write command passes its ``target``: it is printed once the token names the tenant, before any
    call. A 401/403 is shown with what the credential would need (a hint)."""
    import httpx
    from azure.core.exceptions import AzureError

    from shared.graph import GraphClient, GraphError
    from vlsync import credentials
    from vlsync.operations import token_app, token_tenant

    choice = conf.credential_for(kind)
    if choice in ("device-code", "browser"):
        credentials.require_client_id(kind, conf)
    scope = credentials.scope_for(kind, choice)
    credential = credentials.build(kind, conf)
    try:
        try:  # first token now: a missing sign-in is reported at once, not retried as a Graph failure
            token = await credential.get_token(scope)
        except AzureError as exc:
            raise Failure(
                f"could not get a token with --credential {choice}: {_first_line(exc)}",
                {"credential": choice, "hint": TOKEN_HINTS.get(choice, "")},
            ) from None
        if target is not None:
            target.tenant = token_tenant(token.token) or target.tenant  # the token's tenant is the one written
            target.app_id = token_app(token.token)
            announce(out, target)
        async with httpx.AsyncClient(timeout=conf.timeout_seconds) as http:
            client = GraphClient(
                http,
                credential,
                root=conf.graph_root,
                scope=scope,
                max_inline_retry_seconds=conf.max_retry_seconds,
                sleep=asyncio.sleep,
                on_retry=retry_reporter(out),
            )
            try:
                yield client
            except GraphError as error:
                hint = credentials.refused_hint(kind, choice, conf.client_id, error.status)
                if hint:
                    error.add_note(hint)
                raise
    finally:
        await credential.close()


@click.group(
    name="vlsync",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=example(
        "set -a; . .dev/stack.env; set +a      # the local stack (make dev)",
        "vlsync provider list",
        "vlsync content upsert courses.ndjson --concurrency 8",
        "vlsync --json content list > catalog.json",
        more="Every command has --help with an example. Docs: docs/cli.md.",
    ),
)
@options(*ALL_OPTIONS)
def cli() -> None:
    """Operate Viva Learning content sync: learning providers (registrations) and their content,
    against Microsoft Graph or the local emulator."""
