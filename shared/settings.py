"""Every app setting the product reads: one name, one default, one meaning.

The names are the app-setting names (environment variables in Azure, ``Values`` in
``local.settings.json``). The README table, ``local.settings.sample.json`` and the Bicep mirror this
model; contract tests keep them in step.
"""

from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import storage

logger = logging.getLogger(__name__)

# Named connection prefix used by the queue bindings and the queue port (``connection=`` in the
# decorators). Its value is a connection string locally and ``__queueServiceUri`` etc. in Azure.
STORAGE_CONNECTION = "LearningSyncStorage"


class SourceConfig(BaseModel):
    """One webhook source: what kind of platform it is, where its content goes, how it signs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    kind: Literal["cloudevents"] = "cloudevents"
    registration_id: str = Field(alias="registrationId", min_length=1)
    secret_setting: str = Field(alias="secretSetting", min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourcesError(ValueError):
    """The SOURCES setting is not valid JSON of the documented shape."""


def parse_sources(raw: str) -> dict[str, SourceConfig]:
    """Parse the ``SOURCES`` setting: ``{"<name>": {"kind", "registrationId", "secretSetting"}}``."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SourcesError(f"SOURCES is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SourcesError("SOURCES must be a JSON object of source name -> source settings")
    sources: dict[str, SourceConfig] = {}
    for name, value in data.items():
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise SourcesError(f"source name {name!r} must be letters, digits, '-' or '_'")
        try:
            sources[name] = SourceConfig.model_validate(value)
        except ValidationError as exc:
            raise SourcesError(f"source {name!r}: {exc.errors(include_url=False)}") from exc
    return sources


class Settings(BaseSettings):
    """App settings, read from the environment (which the Functions host fills from app settings)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    content_queue_name: str = Field(
        default="content-commands",
        validation_alias="CONTENT_QUEUE_NAME",
        pattern=r"^[a-z0-9][a-z0-9-]{1,49}[a-z0-9]$",
        description="Storage queue of content commands (the poison queue is '<name>-poison').",
    )
    storage_connection_string: str | None = Field(
        default=None,
        validation_alias=AliasChoices(STORAGE_CONNECTION),
        description="Connection string of the queue storage account (local only; Azure uses the __ settings).",
    )
    storage_queue_service_uri: str | None = Field(
        default=None,
        validation_alias=f"{STORAGE_CONNECTION}__queueServiceUri",
        description="Queue endpoint for an identity-based connection, e.g. https://<account>.queue.core.windows.net.",
    )
    storage_table_service_uri: str | None = Field(
        default=None,
        validation_alias=f"{STORAGE_CONNECTION}__tableServiceUri",
        description="Table endpoint for the identity-based connection (the ledger), e.g. "
        "https://<account>.table.core.windows.net.",
    )
    ledger_table_name: str = Field(
        default="ledger",
        validation_alias="LEDGER_TABLE_NAME",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="Table of the ledger: what was last pushed per content item, and each registration's state.",
    )
    registration_state_cache_seconds: float = Field(
        default=10.0,
        ge=0,
        le=300,
        validation_alias="REGISTRATION_STATE_CACHE_SECONDS",
        description="How long a worker trusts a registration's enabled/disabled state before reading it again.",
    )
    storage_credential: str | None = Field(
        default=None,
        validation_alias=f"{STORAGE_CONNECTION}__credential",
        description="'managedidentity' for the identity-based connection.",
    )
    storage_client_id: str | None = Field(
        default=None,
        validation_alias=f"{STORAGE_CONNECTION}__clientId",
        description="Client id of the user-assigned identity used for the storage connection.",
    )
    sources_json: str = Field(
        default="{}",
        validation_alias="SOURCES",
        description='Webhook sources: {"<name>": {"kind": "cloudevents", "registrationId": "...", '
        '"secretSetting": "<SETTING_NAME>"}}.',
    )
    webhook_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1,
        le=100 * 1024 * 1024,
        validation_alias="WEBHOOK_MAX_BODY_BYTES",
        description="Largest webhook body accepted; larger bodies get 413.",
    )
    graph_base_url: str = Field(
        default="https://graph.microsoft.com",
        validation_alias="GRAPH_BASE_URL",
        description="Microsoft Graph root (the Graph emulator's URL locally).",
    )
    graph_api_version: Literal["v1.0", "beta"] = Field(
        default="v1.0", validation_alias="GRAPH_API_VERSION", description="Graph API version: v1.0 or beta."
    )
    graph_token_scope: str = Field(
        default="https://graph.microsoft.com/.default",
        validation_alias="GRAPH_TOKEN_SCOPE",
        description="Scope requested from the managed identity for Graph calls.",
    )
    graph_timeout_seconds: float = Field(
        default=30.0, gt=0, le=300, validation_alias="GRAPH_TIMEOUT_SECONDS", description="Timeout of one Graph call."
    )
    graph_max_inline_retry_seconds: float = Field(
        default=10.0,
        ge=0,
        le=120,
        validation_alias="GRAPH_MAX_INLINE_RETRY_SECONDS",
        description="Longest total wait (honouring Retry-After) spent retrying one command inside an invocation "
        "before handing it back to the queue.",
    )
    graph_max_deferrals: int = Field(
        default=10,
        ge=0,
        le=100,
        validation_alias="GRAPH_MAX_DEFERRALS",
        description="How often one command may go back to the queue to wait out a Graph Retry-After longer than "
        "the inline budget, before ordinary retries (and the poison queue) take over.",
    )
    azure_client_id: str | None = Field(
        default=None,
        validation_alias="AZURE_CLIENT_ID",
        description="Client id of the user-assigned managed identity; unset means the system-assigned identity.",
    )

    applicationinsights_connection_string: str | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_CONNECTION_STRING",
        description="Application Insights connection string; when set, traces, logs and metrics are exported.",
    )
    applicationinsights_authentication_string: str | None = Field(
        default=None,
        validation_alias="APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        description="'ClientId=<identity client id>;Authorization=AAD' for Entra-authenticated export.",
    )

    @field_validator("content_queue_name")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if "--" in value:
            raise ValueError("queue names may not contain '--'")
        return value

    @field_validator("graph_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def poison_queue_name(self) -> str:
        return f"{self.content_queue_name}-poison"

    @property
    def held_queue_name(self) -> str:
        """Commands of disabled registrations wait here until the registration is enabled again."""
        return f"{self.content_queue_name}-held"

    @property
    def graph_root(self) -> str:
        """Versioned Graph root, e.g. ``https://graph.microsoft.com/v1.0``."""
        return f"{self.graph_base_url}/{self.graph_api_version}"

    def sources(self) -> dict[str, SourceConfig]:
        return parse_sources(self.sources_json)

    def storage(self, service: storage.Service) -> storage.StorageConnection:
        """The ``LearningSyncStorage`` connection for one storage service, by ``shared.storage``'s rule."""
        values = {
            STORAGE_CONNECTION: self.storage_connection_string,
            f"{STORAGE_CONNECTION}__queueServiceUri": self.storage_queue_service_uri,
            f"{STORAGE_CONNECTION}__tableServiceUri": self.storage_table_service_uri,
            f"{STORAGE_CONNECTION}__credential": self.storage_credential,
            f"{STORAGE_CONNECTION}__clientId": self.storage_client_id,
        }
        return storage.resolve(STORAGE_CONNECTION, service, values)


def source_secret(source: SourceConfig) -> str | None:
    """Read a source's webhook secret at request time, so a rotated Key Vault reference applies at once.

    An unresolved Key Vault reference (the platform leaves the ``@Microsoft.KeyVault(...)`` text in
    place when the secret is missing or unreadable) counts as no secret: a misconfiguration to
    report, not a wrong signature to blame on the sender.
    """
    value = (os.environ.get(source.secret_setting) or "").strip()
    if value.startswith("@Microsoft.KeyVault("):
        logger.error("setting %s is an unresolved Key Vault reference", source.secret_setting)
        return None
    return value or None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (the Functions host sets the environment before importing the app)."""
    return Settings()
