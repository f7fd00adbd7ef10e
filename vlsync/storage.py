"""The app's storage as ``vlsync`` reaches it: the ledger table and the command queues.

A connection string (``--storage-connection-string``, ``LearningSyncStorage``; the local stack
writes Azurite's into ``stack.env``) or an account name for an identity-based connection
(``--storage-account``: ``DefaultAzureCredential`` on ``https://NAME.queue|table.core.windows.net``;
the signed-in identity needs Storage Queue Data Contributor and Storage Table Data Contributor).
The options become the app's own storage settings, so the CLI connects exactly as the app does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from shared.ledger import Ledger, table_service
from shared.queue import StorageCommandQueue
from shared.settings import Settings
from shared.storage import StorageNotConfigured
from vlsync.config import CliConfig, ConfigError

T = TypeVar("T")


class StorageFailure(Exception):
    """The storage the settings name cannot be used (a malformed connection string, no connection):
    a configuration failure (exit 1, "storage: …"), not a usage error."""


_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")

NOT_CONFIGURED = "no storage: give --storage-connection-string (or LearningSyncStorage) or --storage-account NAME"


def settings(config: CliConfig) -> Settings:
    """The storage part of the app's settings, from the CLI's options (validated the app's way)."""
    if not config.storage_configured:
        raise ConfigError(NOT_CONFIGURED)
    account = config.storage_account
    if account and not _ACCOUNT_NAME.match(account):
        raise ConfigError(f"storage account name {account!r} is not valid (3-24 lower-case letters/digits)")
    # By the app's setting names, as the environment gives them (Settings reads the environment too).
    budget: dict[str, Any] = dict(config.env_file_budget)
    try:
        return Settings(
            storage_connection_string=None if account else config.storage_connection_string,
            storage_queue_service_uri=f"https://{account}.queue.core.windows.net" if account else None,
            storage_table_service_uri=f"https://{account}.table.core.windows.net" if account else None,
            content_queue_name=config.queue,
            ledger_table_name=config.ledger_table,
            **budget,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid storage options: {problems}") from None


def opened(config: CliConfig, build: Callable[[Settings], T]) -> T:
    """``build`` over the app's settings. Missing or invalid options are usage errors (``ConfigError``,
    from ``settings``); what the storage SDK cannot make of a connection string is a storage failure."""
    app_settings = settings(config)
    try:
        return build(app_settings)
    except StorageNotConfigured as exc:
        raise StorageFailure(str(exc)) from None
    except ValueError as exc:  # the SDKs' "Connection string is either blank or malformed."
        raise StorageFailure(f"{config_source(config)}: {exc}") from None


def config_source(config: CliConfig) -> str:
    return f"--storage-account {config.storage_account}" if config.storage_account else "the storage connection string"


def ledger(config: CliConfig) -> Ledger:
    """The ledger; registration state is read fresh (no cache) because an operator is asking."""
    tenant = config.require_tenant()
    return opened(
        config,
        lambda s: Ledger(
            table_service(s).get_table_client(s.ledger_table_name), tenant_id=tenant, state_cache_seconds=0
        ),
    )


def command_queue(config: CliConfig) -> StorageCommandQueue:
    return opened(config, StorageCommandQueue.from_settings)
