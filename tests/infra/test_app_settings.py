"""The app settings the code reads, the ones the Bicep sets and docs/deploy.md must agree.

`azd provision` replaces every app setting with the template's (a sites/config 'appsettings'
resource), so each setting needs an owner: a main.bicep parameter, the resource it names, the
`sources` parameter or the `extraAppSettings` parameter. Nothing is added by hand.
"""

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
README = REPO / "README.md"
HOST_STORAGE = "AzureWebJobsStorage"
# `tenant().tenantId` in pycep's tree: the deployment's own tenant, a fact and not a constant.
TENANT_ID = {
    "operator": {
        "type": "property_accessor",
        "operands": {"operand_1": {"function": {"type": "tenant"}}, "operand_2": "tenantId"},
    }
}
# Settings the template sets for the platform, not for shared/settings.py, and who reads them.
PLATFORM_SETTINGS = {
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Python worker (OpenTelemetry export, with host.json)",
}


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


def telemetry_settings(bicep: Trees) -> dict[str, Any]:
    return bicep["app/function.bicep"]["variables"]["telemetrySettings"]["value"]  # type: ignore[no-any-return]


def main_union(bicep: Trees) -> dict[str, Any]:
    union = function(body(bicep["main.bicep"]["modules"]["api"])["params"]["appSettings"], "union")
    assert union is not None
    return union


def main_settings(bicep: Trees) -> dict[str, Any]:
    return {key(k): v for k, v in main_union(bicep)["arg_3"].items()}


def azure_settings(bicep: Trees) -> set[str]:
    return set(identity_settings(bicep)) | set(telemetry_settings(bicep)) | set(main_settings(bicep))


def doc_table(title: str) -> dict[str, list[str]]:
    """Rows of the table under a '### title' heading of docs/deploy.md: first-column name -> cells."""
    text = DOC.read_text()
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/deploy.md has no '### {title}' section"
    rows = {}
    for line in match.group(1).splitlines():
        name = re.match(r"^\| `([^`]+)`", line)
        if name:
            rows[name.group(1)] = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return rows


def doc_section(title: str) -> list[str]:
    return list(doc_table(title))


def local_only() -> set[str]:
    return set(doc_section("Not set in Azure"))


def sample_values() -> dict[str, str]:
    return json.loads((REPO / "local.settings.sample.json").read_text())["Values"]  # type: ignore[no-any-return]


def test_the_site_applies_the_app_settings_under_the_template_settings(bicep: Trees) -> None:
    site_settings = body(only_resource(bicep["app/function.bicep"], "Microsoft.Web/sites/config"))
    assert site_settings["name"] == "appsettings"
    assert function(site_settings["properties"], "union") == {
        "arg_1": "appSettings",
        "arg_2": "telemetrySettings",
        "arg_3": "identitySettings",
    }


def test_extra_settings_come_first_so_no_template_setting_can_be_replaced(bicep: Trees) -> None:
    union = main_union(bicep)
    assert set(union) == {"arg_1", "arg_2", "arg_3"}
    assert union["arg_1"] == "extraAppSettings"
    assert accessor(union["arg_2"]) == "webhookSources.outputs.secretSettings", "source secrets before fixed names"
    parameter = bicep["main.bicep"]["parameters"]["extraAppSettings"]
    assert parameter["type"] == "object"
    assert parameter["default"] == {}


def _names(value: Any) -> set[str]:
    """Every bare name in an expression tree (parameters, variables, modules, literals alike)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_names(v) for v in value)) if value else set()
    return set()


def _parameters_behind(bicep: Trees, variable: str) -> set[str]:
    """The main.bicep parameters a variable is computed from, through other variables."""
    main = bicep["main.bicep"]
    found: set[str] = set()
    for name in _names(main["variables"][variable]["value"]):
        if name in main["parameters"]:
            found.add(name)
        elif name in main["variables"] and name != variable:
            found |= _parameters_behind(bicep, name)
    return found


def _owner(value: Any, variables: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """('parameter', name) for `param` or `string(param)`, ('variable', name) for a main.bicep variable
    computed from parameters or the deployment's tenant, ('resource', path) for a module output."""
    converted = function(value, "string")
    if isinstance(value, str) and variables is not None and value in variables:
        return ("variable", value)
    if isinstance(value, str):
        return ("parameter", value)
    if converted is not None and isinstance(converted["value_to_convert"], str):
        return ("parameter", converted["value_to_convert"])
    path = accessor(value)
    if path and re.fullmatch(r"(storage|webhookSources)\.outputs\.\w+", path):
        return ("resource", path)
    return None


def test_every_main_setting_is_owned_by_a_parameter_or_a_resource(bicep: Trees) -> None:
    """No constant hides in the template: each value comes from a parameter, a created resource or,
    through a variable, from parameters or the deployment's own tenant."""
    main = bicep["main.bicep"]
    for name, value in main_settings(bicep).items():
        owner = _owner(value, main["variables"])
        assert owner is not None, f"{name} has no owner: {value!r}"
        if owner[0] == "parameter":
            assert owner[1] in main["parameters"], f"{name}: {owner[1]} is not a main.bicep parameter"
        if owner[0] == "variable":
            tenant = main["variables"][owner[1]]["value"] == TENANT_ID
            assert _parameters_behind(bicep, owner[1]) or tenant, f"{name}: {owner[1]} is a constant"


def test_docs_name_the_owner_of_each_setting(bicep: Trees) -> None:
    rows = doc_table("Set by the template")
    header = DOC.read_text().split("### Set by the template", 1)[1]
    assert "| Setting | Value in Azure | Owner |" in header.split("###", 1)[0]
    variables = bicep["main.bicep"]["variables"]
    for name, value in main_settings(bicep).items():
        owner = _owner(value, variables)
        assert owner is not None
        cell = rows[name][2]
        if owner[0] == "parameter":
            assert f"`{owner[1]}`" in cell, (name, cell)
        elif owner[0] == "variable":
            behind = _parameters_behind(bicep, owner[1]) or {"template"}
            assert all(f"`{p}`" in cell or (p == "template" and p in cell) for p in behind), (name, cell, behind)
        elif owner[1].startswith("webhookSources."):
            assert "`sources`" in cell, (name, cell)
        else:
            assert "template" in cell, (name, cell)
    for name in set(identity_settings(bicep)) | set(telemetry_settings(bicep)):
        assert "template" in rows[name][2], name
    assert "`sources`" in rows["<secretSetting>"][2]


def test_docs_add_settings_only_through_the_template(bicep: Trees) -> None:
    text = DOC.read_text()
    assert "`extraAppSettings`" in text
    assert "VIVA_EXTRA_APP_SETTINGS" in text
    assert re.search(r"never add (an app )?settings? by hand", text, re.IGNORECASE)
    for path in (DOC, README):
        assert "appsettings set" not in path.read_text(), f"{path.name} tells users to set a setting by hand"


def test_every_setting_the_code_reads_is_set_in_azure_or_documented_local_only(bicep: Trees) -> None:
    missing = code_settings() - azure_settings(bicep) - local_only()
    assert not missing, f"set these in the Bicep or list them under 'Not set in Azure': {sorted(missing)}"


def test_local_only_settings_are_not_set_in_azure(bicep: Trees) -> None:
    assert not local_only() & azure_settings(bicep)
    assert {STORAGE_CONNECTION, HOST_STORAGE, "FUNCTIONS_WORKER_RUNTIME"} <= local_only()


def test_every_azure_setting_is_read_by_the_code_the_host_or_the_worker(bicep: Trees) -> None:
    connection_prefixes = (f"{HOST_STORAGE}__", f"{STORAGE_CONNECTION}__")
    unread = {
        n
        for n in azure_settings(bicep)
        if n not in code_settings() and not n.startswith(connection_prefixes) and n not in PLATFORM_SETTINGS
    }
    assert not unread


def test_every_sample_setting_is_set_in_azure_or_local_only(bicep: Trees) -> None:
    sample = sample_values()
    sources = parse_sources(sample.get("SOURCES", "{}")).values()
    source_secrets = {s.secret_setting for s in sources} | {getattr(s, "api_secret_setting", None) for s in sources}
    unexplained = set(sample) - azure_settings(bicep) - local_only() - source_secrets
    assert not unexplained, f"set these in the Bicep or list them under 'Not set in Azure': {sorted(unexplained)}"


def test_docs_list_exactly_the_settings_the_template_sets(bicep: Trees) -> None:
    documented = {name for name in doc_section("Set by the template") if not name.startswith("<")}
    assert documented == azure_settings(bicep)
    text = DOC.read_text()
    for name in code_settings() | set(sample_values()) | set(PLATFORM_SETTINGS):
        assert f"`{name}`" in text, name


def test_readme_lists_the_platform_settings() -> None:
    readme = README.read_text()
    section = readme.split("## App settings", 1)[1].split("\n## ", 1)[0]
    for name in PLATFORM_SETTINGS:
        assert f"`{name}`" in section, name


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
    assert accessor(telemetry_settings(bicep)["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == (
        "applicationInsights.properties.ConnectionString"
    )


def test_one_telemetry_pipeline_host_and_worker_in_opentelemetry_mode(bicep: Trees) -> None:
    """The worker exports with the Azure Monitor distro (shared/telemetry.py); the host must not too.

    Without host.json telemetryMode=OpenTelemetry and PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY, the
    host forwards every worker log line to Application Insights as well (a second copy) and host
    and worker traces do not join.
    """
    assert "configure_azure_monitor" in (REPO / "shared/telemetry.py").read_text()
    host = json.loads((REPO / "host.json").read_text())
    assert host["telemetryMode"] == "OpenTelemetry"
    assert telemetry_settings(bicep)["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"


def test_content_queue_name_is_the_queue_the_template_creates(bicep: Trees) -> None:
    assert accessor(main_settings(bicep)["CONTENT_QUEUE_NAME"]) == "storage.outputs.contentQueueName"


def test_the_dedupe_table_and_the_archive_container_are_the_ones_the_template_creates(bicep: Trees) -> None:
    settings = main_settings(bicep)
    assert accessor(settings["DEDUPE_TABLE_NAME"]) == "storage.outputs.dedupeTableName"
    assert accessor(settings["EVENT_ARCHIVE_CONTAINER"]) == "storage.outputs.archiveContainerName"


PARAMETER_OF = {
    "WEBHOOK_MAX_BODY_BYTES": ("webhookMaxBodyBytes", "webhook_max_body_bytes"),
    "GRAPH_BASE_URL": ("graphBaseUrl", "graph_base_url"),
    "GRAPH_API_VERSION": ("graphApiVersion", "graph_api_version"),
    "GRAPH_TOKEN_SCOPE": ("graphTokenScope", "graph_token_scope"),
    "GRAPH_TIMEOUT_SECONDS": ("graphTimeoutSeconds", "graph_timeout_seconds"),
    "GRAPH_MAX_INLINE_RETRY_SECONDS": ("graphMaxInlineRetrySeconds", "graph_max_inline_retry_seconds"),
    "GRAPH_MAX_DEFERRALS": ("graphMaxDeferrals", "graph_max_deferrals"),
    "REGISTRATION_STATE_CACHE_SECONDS": ("registrationStateCacheSeconds", "registration_state_cache_seconds"),
    "DEDUPE_HORIZON_HOURS": ("dedupeHorizonHours", "dedupe_horizon_hours"),
    "EVENT_ARCHIVE_RETENTION_DAYS": ("eventArchiveRetentionDays", "event_archive_retention_days"),
    "RECONCILE_SCHEDULE": ("reconcileSchedule", "reconcile_schedule"),
    "RECONCILE_CATALOGS": ("reconcileCatalogs", "reconcile_catalogs_json"),
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
