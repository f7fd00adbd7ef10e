"""The app's storage as ``vlsync`` reaches it: the ledger table and the command queues.

A connection string (``--storage-connection-string``, ``STORAGE_CONNECTION_STRING``; the local stack
writes Azurite's into ``stack.env``) or an account name for an identity-based connection
(``--storage-account``: ``DefaultAzureCredential`` on ``https://NAME.queue|table.core.windows.net``;
the signed-in identity needs Storage Queue Data Contributor and Storage Table Data Contributor).
"""

from __future__ import annotations

import re

from azure.core.credentials import TokenCredential
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from shared.cli.config import CliConfig, ConfigError
from shared.ledger import Ledger
from shared.queue import StorageCommandQueue
from shared.storage import DEV_STORAGE

_QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,49}[a-z0-9]$")  # as Settings.content_queue_name
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")  # as Settings.ledger_table_name
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")

NOT_CONFIGURED = "no storage: give --storage-connection-string (or STORAGE_CONNECTION_STRING) or --storage-account NAME"


def _check(config: CliConfig) -> None:
    if not config.storage_configured:
        raise ConfigError(NOT_CONFIGURED)
    if config.storage_account and not _ACCOUNT_NAME.match(config.storage_account):
        raise ConfigError(
            f"storage account name {config.storage_account!r} is not valid (3-24 lower-case letters/digits)"
        )
    if not _QUEUE_NAME.match(config.queue) or "--" in config.queue:
        raise ConfigError(f"queue name {config.queue!r} is not a valid Storage queue name")
    if not _TABLE_NAME.match(config.ledger_table):
        raise ConfigError(f"ledger table name {config.ledger_table!r} is not a valid table name")


def _credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def connection_string(value: str) -> str:
    """``UseDevelopmentStorage=true`` spelled out for the SDKs (Azurite's well-known account)."""
    return DEV_STORAGE if value.strip().rstrip(";").lower() == "usedevelopmentstorage=true" else value


def ledger(config: CliConfig) -> Ledger:
    """The ledger; registration state is read fresh (no cache) because an operator is asking."""
    _check(config)
    if config.storage_account:
        service = TableServiceClient(
            f"https://{config.storage_account}.table.core.windows.net", credential=_credential()
        )
    else:
        assert config.storage_connection_string is not None
        service = TableServiceClient.from_connection_string(connection_string(config.storage_connection_string))
    return Ledger(service.get_table_client(config.ledger_table), state_cache_seconds=0)


def command_queue(config: CliConfig) -> StorageCommandQueue:
    _check(config)
    if config.storage_account:
        service = QueueServiceClient(
            f"https://{config.storage_account}.queue.core.windows.net", credential=_credential()
        )
    else:
        assert config.storage_connection_string is not None
        service = QueueServiceClient.from_connection_string(connection_string(config.storage_connection_string))
    return StorageCommandQueue(service, config.queue, f"{config.queue}-poison", config.held_queue)
