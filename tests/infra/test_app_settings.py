"""The app settings the code reads, the ones the Bicep sets and docs/deploy.md must agree."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import AliasChoices

from shared.settings import STORAGE_CONNECTION, Settings, parse_sources

from .bicep_tree import accessor, body, function, key, only_resource
from .conftest import REPO

Trees = dict[str, dict[str, Any]]
DOC = REPO / "docs/deploy.md"
HOST_STORAGE = "AzureWebJobsStorage"
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${s.secretName})"


def code_settings() -> set[str]:
    """Every app-setting name the Settings model reads (all alias choices)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        else:
            raise AssertionError(f"setting without an app-setting name: {field}")
    return names


def identity_settings(bicep: Trees) -> dict[str, Any]:
    return bicep["app/function.bicep"]["variables"]["identitySettings"]["value"]  # type: ignore[no-any-return]


def main_settings(bicep: Trees) -> dict[str, Any]:
    union = function(body(bicep["main.bicep"]["modules"]["api"])["params"]["appSettings"], "union")
    assert union is not None
    assert accessor(union["arg_1"]) == "webhookSources.outputs.secretSettings", "source secrets first: fixed names win"
    return {key(k): v for k, v in union["arg_2"].items()}


def azure_settings(bicep: Trees) -> set[str]:
    return set(identity_settings(bicep)) | set(main_settings(bicep))


def doc_section(title: str) -> list[str]:
    """First-column names (in backticks) of the table under a '### title' heading of docs/deploy.md."""
    text = DOC.read_text()
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/deploy.md has no '### {title}' section"
    return re.findall(r"^\| `([^`]+)`", match.group(1), re.MULTILINE)


def local_only() -> set[str]:
    return set(doc_section("Not set in Azure"))


def sample_values() -> dict[str, str]:
    return json.loads((REPO / "local.settings.sample.json").read_text())["Values"]  # type: ignore[no-any-return]


def test_the_site_applies_the_app_settings_under_the_identity_settings(bicep: Trees) -> None:
    site_settings = body(only_resource(bicep["app/function.bicep"], "Microsoft.Web/sites/config"))
    assert site_settings["name"] == "appsettings"
    assert function(site_settings["properties"], "union") == {"arg_1": "appSettings", "arg_2": "identitySettings"}


def test_every_setting_the_code_reads_is_set_in_azure_or_documented_local_only(bicep: Trees) -> None:
    missing = code_settings() - azure_settings(bicep) - local_only()
    assert not missing, f"set these in the Bicep or list them under 'Not set in Azure': {sorted(missing)}"


def test_local_only_settings_are_not_set_in_azure(bicep: Trees) -> None:
    assert not local_only() & azure_settings(bicep)
    assert {STORAGE_CONNECTION, HOST_STORAGE, "FUNCTIONS_WORKER_RUNTIME"} <= local_only()


def test_every_azure_setting_is_read_by_the_code_or_the_host(bicep: Trees) -> None:
    connection_prefixes = (f"{HOST_STORAGE}__", f"{STORAGE_CONNECTION}__")
    unread = {n for n in azure_settings(bicep) if n not in code_settings() and not n.startswith(connection_prefixes)}
    assert not unread


def test_every_sample_setting_is_set_in_azure_or_local_only(bicep: Trees) -> None:
    sample = sample_values()
    source_secrets = {s.secret_setting for s in parse_sources(sample.get("SOURCES", "{}")).values()}
    unexplained = set(sample) - azure_settings(bicep) - local_only() - source_secrets
    assert not unexplained, f"set these in the Bicep or list them under 'Not set in Azure': {sorted(unexplained)}"


def test_docs_list_exactly_the_settings_the_template_sets(bicep: Trees) -> None:
    documented = {name for name in doc_section("Set by the template") if not name.startswith("<")}
    assert documented == azure_settings(bicep)
    text = DOC.read_text()
    for name in code_settings() | set(sample_values()):
        assert f"`{name}`" in text, name


def test_identity_based_connections_only(bicep: Trees) -> None:
    settings = identity_settings(bicep)
    for prefix in (HOST_STORAGE, STORAGE_CONNECTION):
        assert settings[f"{prefix}__credential"] == "managedidentity"
        assert settings[f"{prefix}__clientId"] == "identityClientId"
        for service in ("queue", "table", "blob"):
            uri = accessor(settings[f"{prefix}__{service}ServiceUri"])
            assert uri == f"storage.properties.primaryEndpoints.{service}", (prefix, service)
        assert prefix not in settings, "a plain connection string setting"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert accessor(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == (
        "applicationInsights.properties.ConnectionString"
    )


def test_content_queue_name_is_the_queue_the_template_creates(bicep: Trees) -> None:
    assert accessor(main_settings(bicep)["CONTENT_QUEUE_NAME"]) == "storage.outputs.contentQueueName"


PARAMETER_OF = {
    "WEBHOOK_MAX_BODY_BYTES": ("webhookMaxBodyBytes", "webhook_max_body_bytes"),
    "GRAPH_BASE_URL": ("graphBaseUrl", "graph_base_url"),
    "GRAPH_API_VERSION": ("graphApiVersion", "graph_api_version"),
    "GRAPH_TOKEN_SCOPE": ("graphTokenScope", "graph_token_scope"),
    "GRAPH_TIMEOUT_SECONDS": ("graphTimeoutSeconds", "graph_timeout_seconds"),
    "GRAPH_MAX_INLINE_RETRY_SECONDS": ("graphMaxInlineRetrySeconds", "graph_max_inline_retry_seconds"),
}


@pytest.mark.parametrize("setting", sorted(PARAMETER_OF))
def test_parameter_settings_default_to_the_code_defaults(bicep: Trees, setting: str) -> None:
    parameter, field = PARAMETER_OF[setting]
    value = main_settings(bicep)[setting]
    converted = function(value, "string")
    assert value == parameter or (converted is not None and converted["value_to_convert"] == parameter), value
    default = bicep["main.bicep"]["parameters"][parameter]["default"]
    code_default = Settings.model_fields[field].default
    assert type(code_default)(default) == code_default


def test_each_source_secret_setting_is_a_key_vault_reference(bicep: Trees, infra_text: dict[str, str]) -> None:
    sources = bicep["app/sources.bicep"]
    assert sources["types"]["sourceConfig"]["value"] == {
        "name": "string",
        "registrationId": "string",
        "secretName": "string",
    }
    text = infra_text["app/sources.bicep"]
    assert "secretSetting: toUpper(replace(s.secretName, '-', '_'))" in text
    assert f"s => s.secretSetting, s => '{KEY_VAULT_REFERENCE}')" in text
    assert "kind: 'cloudevents'\n  registrationId: s.registrationId\n  secretSetting: s.secretSetting" in text
    source_params = body(bicep["main.bicep"]["modules"]["webhookSources"])["params"]
    assert accessor(source_params["keyVaultName"]) == "keyVault.outputs.name"
    assert source_params["sources"] == "sources"


def test_the_sources_parameter_shape_yields_sources_the_app_accepts() -> None:
    """Python twin of app/sources.bicep, run on the sample: the app parses what the template builds."""
    sample = parse_sources(sample_values()["SOURCES"])
    parameter = [
        {"name": name, "registrationId": s.registration_id, "secretName": s.secret_setting.lower().replace("_", "-")}
        for name, s in sample.items()
    ]
    built = {
        p["name"]: {
            "kind": "cloudevents",
            "registrationId": p["registrationId"],
            "secretSetting": p["secretName"].replace("-", "_").upper(),
        }
        for p in parameter
    }
    assert parse_sources(json.dumps(built)) == sample
    assert [p["secretName"] for p in parameter] == ["demo-webhook-secret"]
