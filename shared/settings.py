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
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared import storage
from shared.models import TenantId, identifier
from shared.sources.mapping import MappingSpec
from shared.sources.normalize import absolute_url, check_url_template, language_tag

logger = logging.getLogger(__name__)

# Named connection prefix used by the queue bindings and the queue port (``connection=`` in the
# decorators). Its value is a connection string locally and ``__queueServiceUri`` etc. in Azure.
STORAGE_CONNECTION = "LearningSyncStorage"


_SETTING_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Canvas Data Services' published key set (the previous, current and next key; rotated monthly).
CANVAS_JWKS_URL = "https://8axpcl50e4.execute-api.us-east-1.amazonaws.com/main/jwks"


class SourceConfig(BaseModel):
    """One webhook source: what kind of platform it is, where its content goes, how it authenticates.

    This base holds what every kind has; each kind below adds its own fields (docs/sources.md).
    Secrets are never inline: ``secretSetting`` names the app setting (a Key Vault reference in
    Azure) that holds them.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    kind: str = "cloudevents"
    registration_id: str = Field(alias="registrationId", min_length=1)
    tenant_id: TenantId | None = Field(
        default=None,
        alias="tenantId",
        description="Entra tenant of the registration; default VIVA_APP_TENANT_ID. The payload never chooses it.",
    )
    secret_setting: str | None = Field(default=None, alias="secretSetting", min_length=1, pattern=_SETTING_NAME)


class CloudEventsSource(SourceConfig):
    """The canonical format: CloudEvents whose data are Graph properties, signed with Standard Webhooks."""

    kind: Literal["cloudevents"] = "cloudevents"
    secret_setting: str = Field(alias="secretSetting", min_length=1, pattern=_SETTING_NAME)


class KeyAuth(BaseModel):
    """A shared key the platform sends in a query parameter of the URL or in a header."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["query-key", "header-key"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class SignedAuth(BaseModel):
    """Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["standard-webhooks"]


SourceAuth = Annotated[KeyAuth | SignedAuth, Field(discriminator="scheme")]
QUERY_KEY = KeyAuth(scheme="query-key", name="key")


class LmsSource(SourceConfig):
    """What every platform kind adds: how its events become Graph content."""

    external_id_prefix: str = Field(default="", alias="externalIdPrefix", max_length=64)
    default_language_tag: str | None = Field(default=None, alias="defaultLanguageTag")
    content_web_url_template: str | None = Field(default=None, alias="contentWebUrlTemplate", max_length=2048)
    hidden_as: Literal["inactive", "delete"] = Field(default="inactive", alias="hiddenAs")

    @field_validator("external_id_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return identifier(value)

    @field_validator("default_language_tag")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else language_tag(value)

    @field_validator("content_web_url_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else check_url_template(value)


class ApiFetch(BaseModel):
    """Fetch-back (docs/sources.md, "Thin events and fetch-back"): with ``apiBaseUrl`` set, the worker
    completes every upsert and hidden event of the source from the LMS's REST API; deletes stay deletes.
    The API secret is never inline: ``apiSecretSetting`` names the app setting (a Key Vault reference
    in Azure) that holds it."""

    api_base_url: str | None = Field(default=None, alias="apiBaseUrl", max_length=2048)
    api_secret_setting: str | None = Field(default=None, alias="apiSecretSetting", min_length=1, pattern=_SETTING_NAME)

    @field_validator("api_base_url")
    @classmethod
    def _api_root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = absolute_url(value)
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ValueError("must be the API's root URL, without a query or fragment")
        return url.rstrip("/")

    def _companions(self, required: dict[str, object], optional: dict[str, object] | None = None) -> None:
        """The fetch-back fields go with ``apiBaseUrl``: ``required`` (alias -> value, with why after a
        ':' in the alias) must be set with it, and neither they nor ``optional`` without it."""
        if self.api_base_url is not None:
            for alias, value in required.items():
                if value is None:
                    name, _, why = alias.partition(":")
                    raise ValueError(f"apiBaseUrl needs {name}:{why}")
            return
        given = [alias.partition(":")[0] for alias, v in {**required, **(optional or {})}.items() if v is not None]
        if given:
            raise ValueError(
                f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} only used with apiBaseUrl (fetch-back)"
            )

    @model_validator(mode="after")
    def _secret_with_url(self) -> ApiFetch:
        self._companions({"apiSecretSetting: the app setting that holds the LMS's API secret": self.api_secret_setting})
        return self


class KeyedSource(LmsSource):
    """A kind verified with a secret the operator stores: a key, a token, an HMAC key or a whsec_."""

    secret_setting: str = Field(alias="secretSetting", min_length=1, pattern=_SETTING_NAME)


class CanvasSource(LmsSource, ApiFetch):
    """Canvas Live Events (Canvas Data Services, HTTPS delivery), ideally as RS256-signed JWTs."""

    kind: Literal["canvas"]
    jwks_url: str = Field(default=CANVAS_JWKS_URL, alias="jwksUrl")
    accept_unsigned: bool = Field(default=False, alias="acceptUnsigned")
    max_token_age_seconds: int | None = Field(default=None, alias="maxTokenAgeSeconds", ge=60, le=30 * 86400)
    # Canvas signs every customer's Live Events with one published key set, so a valid signature says
    # "from Canvas", not "from your Canvas": the event's root account must be this one.
    root_account_uuid: str | None = Field(default=None, alias="rootAccountUuid", min_length=1)
    root_account_id: str | None = Field(default=None, alias="rootAccountId", min_length=1, pattern=r"^[0-9]+$")

    @field_validator("jwks_url")
    @classmethod
    def _https(cls, value: str) -> str:
        url = absolute_url(value)
        host = urlsplit(url).hostname or ""
        if not url.lower().startswith("https://") and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("must be an https URL (plain http only on this machine, for tests)")
        return url

    @model_validator(mode="after")
    def _no_secret(self) -> CanvasSource:
        if self.secret_setting is not None:
            raise ValueError("a canvas source is verified with Canvas's public keys (jwksUrl); remove secretSetting")
        if self.root_account_uuid is None and self.root_account_id is None:
            raise ValueError(
                "give rootAccountUuid (or rootAccountId) of your Canvas: Canvas's key set signs every "
                "Canvas customer's events, so the account is what makes an event yours"
            )
        return self


class MoodleSource(KeyedSource, ApiFetch):
    """Moodle with the local_webhooks plugin: the service's token travels in the body."""

    kind: Literal["moodle"]


class OpenEdxSource(KeyedSource, ApiFetch):
    """Open edX COURSE_CATALOG_INFO_CHANGED, from the openedx-webhooks plugin or as a CloudEvent."""

    kind: Literal["openedx"]
    auth: SourceAuth = QUERY_KEY
    # The OAuth2 application's client id (not a secret); its secret is in apiSecretSetting.
    api_client_id: str | None = Field(default=None, alias="apiClientId", min_length=1, max_length=255)
    api_token_url: str | None = Field(default=None, alias="apiTokenUrl", max_length=2048)

    @field_validator("api_token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return None if value is None else absolute_url(value)

    @model_validator(mode="after")
    def _client_with_url(self) -> OpenEdxSource:
        self._companions(
            {"apiClientId: the OAuth2 application's client id (client credentials)": self.api_client_id},
            {"apiTokenUrl": self.api_token_url},
        )
        return self

    @property
    def token_url(self) -> str | None:
        """Where the client-credentials token comes from (default: Open edX's own ``/oauth2/access_token``)."""
        if self.api_base_url is None:
            return None
        return self.api_token_url or f"{self.api_base_url}/oauth2/access_token"


class ThinkificSource(KeyedSource, ApiFetch):
    """Thinkific product/course webhooks, signed with X-Thinkific-Hmac-Sha256 (the API key)."""

    kind: Literal["thinkific"]
    # The site's subdomain (``acme`` of acme.thinkific.com), sent as X-Auth-Subdomain with the API key.
    api_subdomain: str | None = Field(
        default=None,
        alias="apiSubdomain",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$",
    )

    @model_validator(mode="after")
    def _subdomain_with_url(self) -> ThinkificSource:
        self._companions({"apiSubdomain: the site's Thinkific subdomain (X-Auth-Subdomain)": self.api_subdomain})
        return self


class DoceboSource(KeyedSource):
    """Docebo course webhooks (payload shape unconfirmed: override ``mapping`` if it differs)."""

    kind: Literal["docebo"]
    auth: KeyAuth = QUERY_KEY
    mapping: MappingSpec | None = None


class EventGridSource(KeyedSource):
    """Azure Event Grid push delivery, Event Grid or CloudEvents schema, with an optional mapping."""

    kind: Literal["eventgrid"]
    schema_: Literal["eventgrid", "cloudevents"] = Field(default="eventgrid", alias="schema")
    auth: KeyAuth = QUERY_KEY
    allowed_origins: tuple[str, ...] = Field(default=("eventgrid.azure.net",), alias="allowedOrigins", min_length=1)
    mapping: MappingSpec | None = None

    @model_validator(mode="after")
    def _options_need_mapping(self) -> EventGridSource:
        used = [
            alias
            for name, alias in (
                ("external_id_prefix", "externalIdPrefix"),
                ("default_language_tag", "defaultLanguageTag"),
                ("content_web_url_template", "contentWebUrlTemplate"),
                ("hidden_as", "hiddenAs"),
            )
            if name in self.model_fields_set
        ]
        if self.mapping is None and used:
            raise ValueError(
                f"{', '.join(used)}: only for mapped data; without a mapping the events carry Graph properties as is"
            )
        return self


class MappedSource(KeyedSource):
    """Any LMS that signs with Standard Webhooks, its data read by a declarative mapping."""

    kind: Literal["mapped"]
    envelope: Literal["cloudevents", "standard-webhooks"] = "cloudevents"
    mapping: MappingSpec


def _kind_of(value: Any) -> str:
    kind = value.get("kind", "cloudevents") if isinstance(value, dict) else getattr(value, "kind", "cloudevents")
    return str(kind)


AnySource = Annotated[
    Annotated[CloudEventsSource, Tag("cloudevents")]
    | Annotated[CanvasSource, Tag("canvas")]
    | Annotated[MoodleSource, Tag("moodle")]
    | Annotated[OpenEdxSource, Tag("openedx")]
    | Annotated[ThinkificSource, Tag("thinkific")]
    | Annotated[DoceboSource, Tag("docebo")]
    | Annotated[EventGridSource, Tag("eventgrid")]
    | Annotated[MappedSource, Tag("mapped")],
    Discriminator(_kind_of),
]
_SOURCE: TypeAdapter[SourceConfig] = TypeAdapter(AnySource)
SOURCE_KINDS = ("cloudevents", "canvas", "moodle", "openedx", "thinkific", "docebo", "eventgrid", "mapped")


class CatalogBlob(BaseModel):
    """One source's catalog for the reconcile timer (``RECONCILE_CATALOGS``): an NDJSON blob in the app's
    storage, and what to do with Graph items it lacks."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    blob: str = Field(min_length=3, max_length=1024, pattern=r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])/.+$")
    removal: Literal["deactivate", "delete"] = "deactivate"

    @property
    def container(self) -> str:
        return self.blob.partition("/")[0]

    @property
    def name(self) -> str:
        return self.blob.partition("/")[2]


def parse_catalogs(raw: str, sources: dict[str, SourceConfig]) -> dict[str, CatalogBlob]:
    """``RECONCILE_CATALOGS`` (empty: none); every name must be a configured source."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"RECONCILE_CATALOGS is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SettingsError('RECONCILE_CATALOGS must be a JSON object: {"<source>": "<container>/<blob>.ndjson"}')
    catalogs: dict[str, CatalogBlob] = {}
    for name, value in data.items():
        if name not in sources:
            raise SettingsError(f"RECONCILE_CATALOGS names {name!r}, which is not a source in SOURCES")
        try:
            catalogs[name] = CatalogBlob.model_validate({"blob": value} if isinstance(value, str) else value)
        except ValidationError as exc:
            raise SettingsError(f"RECONCILE_CATALOGS[{name!r}]: {_describe(exc)}") from None
    return catalogs


class SettingsError(ValueError):
    """A setting the running code needs is missing or unusable; the message names it."""


class SourcesError(ValueError):
    """The SOURCES setting is not valid JSON of the documented shape."""


def parse_sources(raw: str) -> dict[str, SourceConfig]:
    """Parse the ``SOURCES`` setting: ``{"<name>": {"kind", "registrationId", ...}}`` (docs/sources.md)."""
    return dict(_parse_sources(raw))


@lru_cache(maxsize=8)  # read on every request; the validated models are frozen
def _parse_sources(raw: str) -> tuple[tuple[str, SourceConfig], ...]:
    if not raw.strip():
        return ()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SourcesError(f"SOURCES is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SourcesError("SOURCES must be a JSON object of source name -> source settings")
    sources: list[tuple[str, SourceConfig]] = []
    for name, value in data.items():
        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise SourcesError(f"source name {name!r} must be letters, digits, '-' or '_'")
        try:
            sources.append((name, _SOURCE.validate_python(value)))
        except ValidationError as exc:
            raise SourcesError(f"source {name!r}: {_describe(exc)}") from exc
    return tuple(sources)


def _describe(exc: ValidationError) -> str:
    """``mapping.fields.titel: ...; secretSetting: Field required``: where, then what."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in SOURCE_KINDS:  # the union's tag, not a field
            loc = loc[1:]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid" and not loc:
            message = f"kind {_kind_of(err['input'])!r} is not one of {', '.join(SOURCE_KINDS)}"
        parts.append(f"{'.'.join(loc) or 'entry'}: {message}")
    return "; ".join(parts)


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
    storage_blob_service_uri: str | None = Field(
        default=None,
        validation_alias=f"{STORAGE_CONNECTION}__blobServiceUri",
        description="Blob endpoint for the identity-based connection (the event archive), e.g. "
        "https://<account>.blob.core.windows.net.",
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
    dedupe_table_name: str = Field(
        default="deliveries",
        validation_alias="DEDUPE_TABLE_NAME",
        pattern=r"^[A-Za-z][A-Za-z0-9]{2,62}$",
        description="Table of the delivery ids the intake has accepted (per source), to answer a sender's "
        "redelivery with 202 and 'duplicate': true instead of queueing it again.",
    )
    # Senders retry an unacknowledged delivery for a day or more: Svix (Standard Webhooks) for about
    # 27.5 hours, Event Grid for 24 hours by default, and the Standard Webhooks specification's example
    # schedule for 75.5 hours. The horizon counts from the last time the id was seen, so only the gap
    # between two attempts has to fit in it.
    dedupe_horizon_hours: int = Field(
        default=72,
        ge=0,
        le=30 * 24,
        validation_alias="DEDUPE_HORIZON_HOURS",
        description="How long an accepted delivery id is remembered (counted from the last time it was seen); "
        "0 turns dedupe off.",
    )
    event_archive_container: str = Field(
        default="event-archive",
        validation_alias="EVENT_ARCHIVE_CONTAINER",
        pattern=r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
        description="Blob container of the raw event archive: every accepted delivery, secrets removed.",
    )
    event_archive_retention_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        validation_alias="EVENT_ARCHIVE_RETENTION_DAYS",
        description="Days an archived delivery is kept (a lifecycle rule in Azure deletes older blobs); "
        "0 turns the archive off.",
    )
    # The sender no longer waits for a blob write per delivery: records are written in the background as
    # one blob per source and hour. A crash loses at most this much of the archive (never a command,
    # queued before), so a minute is the most it may be.
    event_archive_flush_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        validation_alias="EVENT_ARCHIVE_FLUSH_SECONDS",
        description="Seconds the raw event archive buffers records before writing them as one segment blob per "
        "source and hour; 0: one blob per delivery, written while the sender waits.",
    )
    sources_json: str = Field(
        default="{}",
        validation_alias="SOURCES",
        description='Webhook sources: {"<name>": {"kind": "cloudevents", "registrationId": "...", '
        '"secretSetting": "<SETTING_NAME>"}}; kinds canvas, moodle, openedx, thinkific, docebo, eventgrid and '
        "mapped add their own fields (docs/sources.md).",
    )
    reconcile_schedule: str = Field(
        default="0 30 3 * * *",
        validation_alias="RECONCILE_SCHEDULE",
        description="NCRONTAB schedule of the reconcile timer (%RECONCILE_SCHEDULE%), in UTC; it does nothing "
        "unless RECONCILE_CATALOGS names a catalog.",
    )
    reconcile_catalogs_json: str = Field(
        default="",
        validation_alias="RECONCILE_CATALOGS",
        description='The reconcile timer\'s catalogs, per source: {"<source>": "<container>/<blob>.ndjson"} or '
        '{"<source>": {"blob": "<container>/<blob>.ndjson", "removal": "deactivate"|"delete"}}; '
        "empty: the timer is off.",
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
    graph_circuit_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        validation_alias="GRAPH_CIRCUIT_FAILURES",
        description="Graph failures (5xx, no answer, no token) in a row, across instances, that open the circuit: "
        "commands then wait in the queue without spending attempts. 5 is the queue's own attempt budget.",
    )
    graph_circuit_cooldown_seconds: float = Field(
        default=30.0,
        ge=1,
        le=900,
        validation_alias="GRAPH_CIRCUIT_COOLDOWN_SECONDS",
        description="First cool-down of an open circuit (the queue's 30 s visibility timeout); it doubles per "
        "failed probe, to at most 15 minutes.",
    )
    # The write budget (shared.ratebudget). Defaults: the only figure found, an unpublished draft of the
    # ISV guide (microsoftgraph/microsoft-graph-docs PR 17789, closed): unverified, scope not stated.
    graph_write_rate_per_second: float = Field(
        default=1.0,
        ge=0,
        le=10000,
        validation_alias="GRAPH_WRITE_RATE_PER_SECOND",
        description="Most Graph writes per second per tenant and registration, shared by every instance (a "
        "$batch of n costs n); the adaptive rate stays at or under it. 0 turns the budget off. Default 1: the "
        'unverified figure of an unpublished draft ("1 request per second").',
    )
    graph_write_burst: int = Field(
        default=20,
        ge=1,
        le=10000,
        validation_alias="GRAPH_WRITE_BURST",
        description="Writes that may go at once after an idle spell (the bucket's capacity); 20 is one full "
        "$batch. 1 is the strictest reading of the draft's per-second figure.",
    )
    graph_write_block_limit: int = Field(
        default=500,
        ge=0,
        le=10_000_000,
        validation_alias="GRAPH_WRITE_BLOCK_LIMIT",
        description="Most writes in any GRAPH_WRITE_BLOCK_SECONDS, per tenant and registration; the rate is "
        "lowered to (limit - burst) / seconds when that is below it. 0: no block limit. Default 500 per 600 s: "
        'the same unverified draft ("Block limit: 500 requests in 10 mins").',
    )
    graph_write_block_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        validation_alias="GRAPH_WRITE_BLOCK_SECONDS",
        description="The window of GRAPH_WRITE_BLOCK_LIMIT, in seconds.",
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
    graph_auth_mode_setting: Literal["app", "managed-identity"] | None = Field(
        default=None,
        validation_alias="GRAPH_AUTH_MODE",
        description="How the worker signs in to Graph. 'app': as the Entra app VIVA_APP_CLIENT_ID, with the managed "
        "identity as its federated credential (no secret; the app that registers the provider). "
        "'managed-identity': as the managed identity itself (fallback; Viva Learning may refuse content "
        "from an app id other than the registering one). Unset: 'app' when VIVA_APP_CLIENT_ID is set, else "
        "'managed-identity' (an app deployed before the app existed keeps working until it is re-provisioned).",
    )
    viva_app_client_id: str | None = Field(
        default=None,
        validation_alias="VIVA_APP_CLIENT_ID",
        description="Client id of the Entra app that registers the provider and pushes content (GRAPH_AUTH_MODE=app).",
    )
    tenant_id: TenantId | None = Field(
        default=None,
        validation_alias="VIVA_APP_TENANT_ID",
        description="The deployment's Entra tenant: the default tenant of every source, and part of each ledger key.",
    )
    authority_host: str | None = Field(
        default=None,
        validation_alias="AZURE_AUTHORITY_HOST",
        description="Entra sign-in host for the app-token exchange (azure-identity's own setting); "
        "unset means the public cloud, login.microsoftonline.com.",
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

    @field_validator("event_archive_container")
    @classmethod
    def _container_name(cls, value: str) -> str:
        if "--" in value:
            raise ValueError("container names may not contain '--'")
        return value

    @model_validator(mode="after")
    def _write_budget(self) -> Settings:
        limit, burst = self.graph_write_block_limit, self.graph_write_burst
        if self.graph_write_rate_per_second > 0 and limit and limit <= burst:
            raise ValueError(
                f"GRAPH_WRITE_BLOCK_LIMIT ({limit}) must exceed GRAPH_WRITE_BURST ({burst}), or be 0 (no block limit)"
            )
        return self

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
        """The configured sources; one that names no tenant belongs to the deployment's (VIVA_APP_TENANT_ID)."""
        parsed = parse_sources(self.sources_json)
        if self.tenant_id is None:
            return parsed
        return {
            name: source if source.tenant_id else source.model_copy(update={"tenant_id": self.tenant_id})
            for name, source in parsed.items()
        }

    @property
    def reconcile_catalogs(self) -> dict[str, CatalogBlob]:
        """The reconcile timer's catalogs by source (``RECONCILE_CATALOGS``); empty: the timer is off."""
        return parse_catalogs(self.reconcile_catalogs_json, self.sources())

    @property
    def graph_auth_mode(self) -> Literal["app", "managed-identity"]:
        """GRAPH_AUTH_MODE, or what the other settings imply when it is unset."""
        if self.graph_auth_mode_setting is not None:
            return self.graph_auth_mode_setting
        return "app" if self.viva_app_client_id else "managed-identity"

    def home_tenant(self) -> str:
        """The deployment's tenant, which ledger keys need; a configuration error without it."""
        if self.tenant_id is None:
            raise SettingsError("VIVA_APP_TENANT_ID is not set: the Entra tenant id (directory id) of this deployment")
        return self.tenant_id

    def storage(self, service: storage.Service) -> storage.StorageConnection:
        """The ``LearningSyncStorage`` connection for one storage service, by ``shared.storage``'s rule."""
        values = {
            STORAGE_CONNECTION: self.storage_connection_string,
            f"{STORAGE_CONNECTION}__queueServiceUri": self.storage_queue_service_uri,
            f"{STORAGE_CONNECTION}__tableServiceUri": self.storage_table_service_uri,
            f"{STORAGE_CONNECTION}__blobServiceUri": self.storage_blob_service_uri,
            f"{STORAGE_CONNECTION}__credential": self.storage_credential,
            f"{STORAGE_CONNECTION}__clientId": self.storage_client_id,
        }
        return storage.resolve(STORAGE_CONNECTION, service, values)


def _secret_value(setting: str | None) -> str | None:
    """The secret an app setting holds, read at call time, so a rotated Key Vault reference applies at once.

    An unresolved Key Vault reference (the platform leaves the ``@Microsoft.KeyVault(...)`` text in
    place when the secret is missing or unreadable) counts as no secret: a misconfiguration to
    report, not a wrong signature or a refused call to blame on the other side.
    """
    if setting is None:
        return None
    value = (os.environ.get(setting) or "").strip()
    if value.startswith("@Microsoft.KeyVault("):
        logger.error("setting %s is an unresolved Key Vault reference", setting)
        return None
    return value or None


def source_secret(source: SourceConfig) -> str | None:
    """A source's webhook secret (``secretSetting``), by ``_secret_value``'s rule. ``None`` also for a
    kind verified without a shared secret (Canvas: public keys)."""
    return _secret_value(source.secret_setting)


FETCH_KINDS = ("canvas", "moodle", "openedx", "thinkific")


def fetch_back(source: SourceConfig) -> bool:
    """Whether the source's upserts are completed from its LMS's API by the worker (``apiBaseUrl`` set)."""
    return isinstance(source, ApiFetch) and source.api_base_url is not None


def api_secret(source: SourceConfig) -> str | None:
    """A fetch-back source's API secret (``apiSecretSetting``), by ``_secret_value``'s rule."""
    return _secret_value(source.api_secret_setting if isinstance(source, ApiFetch) else None)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (the Functions host sets the environment before importing the app)."""
    return Settings()
