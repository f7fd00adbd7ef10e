"""What checkov cannot see: identity-only access, tags, roles and their scopes, Flex settings, networking,
diagnostics, outputs, azd wiring."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .bicep_tree import accessor, body, decorator, function, key, only_resource, resources
from .conftest import INFRA, REPO

Trees = dict[str, dict[str, Any]]

# Built-in role definition ids (the same in every tenant).
ROLES = {
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
}
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# Variables the hooks read that are not main.bicep outputs: their own state in the azd environment,
# and azd's own subscription.
HOOK_STATE = {"WEBHOOK_SECRETS_LOADED", "AZURE_SUBSCRIPTION_ID"}
# The Functions host's containers in AzureWebJobsStorage (leases, function keys).
HOST_CONTAINERS = ["azure-webjobs-hosts", "azure-webjobs-secrets"]
# siteConfig properties a Flex Consumption site rejects with ARM error 51021 (runtime and scale
# live in functionAppConfig there); reported by users of the AVM and azurerm modules.
FLEX_REJECTS = {
    "linuxFxVersion",
    "windowsFxVersion",
    "ftpsState",
    "netFrameworkVersion",
    "use32BitWorkerProcess",
    "alwaysOn",
    "functionAppScaleLimit",
    "preWarmedInstanceCount",
}


def params(tree: dict[str, Any]) -> dict[str, Any]:
    return tree.get("parameters", {})  # type: ignore[no-any-return]


# --- storage: Entra ID only ----------------------------------------------------------------------


def test_storage_is_entra_only_tls12_https_private_blobs(bicep: Trees) -> None:
    props = body(only_resource(bicep["app/storage.bicep"], "Microsoft.Storage/storageAccounts"))["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["defaultToOAuthAuthentication"] is True


def test_storage_creates_the_queues_table_and_containers(bicep: Trees) -> None:
    from shared.settings import Settings

    tree = bicep["app/storage.bicep"]
    defaults = {name: p.get("default") for name, p in params(tree).items()}
    queue = Settings.model_fields["content_queue_name"].default
    main_storage = body(bicep["main.bicep"]["modules"]["storage"])["params"]
    assert main_storage["contentQueueName"] == defaults["contentQueueName"] == queue == "content-commands"
    assert main_storage["ledgerTableName"] == defaults["ledgerTableName"] == "ledger"
    dedupe_table = Settings.model_fields["dedupe_table_name"].default
    assert main_storage["dedupeTableName"] == defaults["dedupeTableName"] == dedupe_table == "deliveries"
    archive = Settings.model_fields["event_archive_container"].default
    assert main_storage["archiveContainerName"] == defaults["archiveContainerName"] == archive == "event-archive"
    assert tree["variables"]["poisonQueueName"]["value"] == "${contentQueueName}-poison"
    assert tree["variables"]["heldQueueName"]["value"] == "${contentQueueName}-held"

    def names(type_: str) -> set[str]:
        return {body(r)["name"] for r in resources(tree, type_).values()}

    queues = names("Microsoft.Storage/storageAccounts/queueServices/queues")
    assert queues == {"contentQueueName", "poisonQueueName", "heldQueueName"}
    assert names("Microsoft.Storage/storageAccounts/tableServices/tables") == {"ledgerTableName", "dedupeTableName"}
    containers = resources(tree, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert {body(r)["name"] for r in containers.values()} == {
        "deploymentContainerName",
        "archiveContainerName",
        "catalogContainerName",
        "containerName",
    }
    # The reconcile timer's catalogs (RECONCILE_CATALOGS names blobs in it, docs/deploy.md).
    assert main_storage["catalogContainerName"] == defaults["catalogContainerName"] == "catalogs"
    assert all(body(r)["properties"]["publicAccess"] == "None" for r in containers.values())
    # The host's containers exist before the identity gets a role on each (rbac.bicep).
    assert tree["variables"]["hostContainerNames"]["value"] == HOST_CONTAINERS
    [host] = [r for r in containers.values() if body(r)["name"] == "containerName"]
    assert host["config"]["loop_type"]["detail"]["array_name"] == "hostContainerNames"


def test_the_archive_keeps_blobs_for_the_retention_setting_and_nothing_when_it_is_off(bicep: Trees) -> None:
    """EVENT_ARCHIVE_RETENTION_DAYS is one number: the app setting and the container's lifecycle rule."""
    from shared.settings import Settings

    tree = bicep["app/storage.bicep"]
    policy = only_resource(tree, "Microsoft.Storage/storageAccounts/managementPolicies")
    assert policy["config"]["condition"] == {
        "operator": {"type": "greater_than", "operands": {"operand_1": "archiveRetentionDays", "operand_2": 0}}
    }
    [rule] = body(policy)["properties"]["policy"]["rules"]
    assert rule["enabled"] is True
    assert rule["definition"]["filters"] == {"blobTypes": ["blockBlob"], "prefixMatch": ["${archiveContainer.name}/"]}
    assert rule["definition"]["actions"] == {
        "baseBlob": {"delete": {"daysAfterCreationGreaterThan": "archiveRetentionDays"}}
    }
    code_default = Settings.model_fields["event_archive_retention_days"].default
    assert params(tree)["archiveRetentionDays"]["default"] == code_default
    main_storage = body(bicep["main.bicep"]["modules"]["storage"])["params"]
    assert main_storage["archiveRetentionDays"] == "eventArchiveRetentionDays"
    assert params(bicep["main.bicep"])["eventArchiveRetentionDays"]["default"] == code_default


def test_no_key_or_connection_string_anywhere_in_infra(infra_text: dict[str, str]) -> None:
    forbidden = re.compile(
        r"listKeys|listkeys|listConnectionStrings|listCredentials|AccountKey|DefaultEndpointsProtocol|"
        r"SharedAccessSignature|SharedAccessKey|InstrumentationKey=|primaryKey|secondaryKey|@secure\(\)",
    )
    for path, text in infra_text.items():
        assert not forbidden.search(text), f"{path}: {forbidden.search(text)}"


# --- tags and azd wiring -------------------------------------------------------------------------


def test_resource_group_and_every_resource_carry_the_azd_env_name_tag(bicep: Trees) -> None:
    main = bicep["main.bicep"]
    assert key(next(iter(main["variables"]["tags"]["value"]))) == "azd-env-name"
    assert main["variables"]["tags"]["value"] == {"'azd-env-name'": "environmentName"}
    [rg] = resources(main, "Microsoft.Resources/resourceGroups").values()
    assert body(rg)["tags"] == "tags"
    for name, module in main["modules"].items():
        path = module["detail"]["path"]
        if "tags" in params(bicep[path]):
            assert body(module)["params"].get("tags") == "tags", name
    for path, tree in bicep.items():
        for name, res in resources(tree).items():
            config = body(res)
            if "location" in config:  # a top-level, taggable resource
                tags = config.get("tags")
                union = function(tags, "union")
                assert tags == "tags" or (union and union["arg_1"] == "tags"), f"{path}: {name}"


def test_the_site_is_tagged_with_the_azure_yaml_service(bicep: Trees, infra_dump: dict[str, Any]) -> None:
    services = infra_dump["azure_yaml"]["services"]
    assert list(services) == ["api"]
    assert services["api"] == {"project": ".", "language": "python", "host": "function"}
    function_tree = bicep["app/function.bicep"]
    site = body(only_resource(function_tree, "Microsoft.Web/sites"))
    union = function(site["tags"], "union")
    assert union is not None
    assert union["arg_2"] == {"'azd-service-name'": "serviceName"}
    assert params(function_tree)["serviceName"]["default"] == "api"
    assert body(bicep["main.bicep"]["modules"]["api"])["params"]["serviceName"] == "api"


def test_names_use_the_azd_abbreviations(infra_text: dict[str, str]) -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", infra_text["main.bicep"]))
    assert used == set(abbreviations), "every abbreviation is used, and only those in abbreviations.json"


def test_parameters_file_feeds_the_azd_environment(bicep: Trees) -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    main_params = params(bicep["main.bicep"])
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert set(values) <= set(main_params), set(values) - set(main_params)
    required = {name for name, p in main_params.items() if "default" not in p or p["default"] is None}
    assert required <= set(values), required - set(values)


def test_location_is_limited_to_flex_consumption_regions(bicep: Trees) -> None:
    location = params(bicep["main.bicep"])["location"]
    assert decorator(location, "metadata") == {"azd": {"type": "location"}}
    allowed = decorator(location, "allowed")
    assert {"eastus", "westeurope", "swedencentral", "australiaeast"} <= set(allowed)
    assert not [r for r in allowed if r.endswith("euap")], "no canary regions"


def test_outputs_are_upper_snake_and_cover_what_the_hooks_read(bicep: Trees) -> None:
    outputs = bicep["main.bicep"]["outputs"]
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs), list(outputs)
    assert {"SERVICE_API_NAME", "AZURE_FUNCTION_NAME", "AZURE_KEY_VAULT_NAME", "AZURE_RESOURCE_GROUP"} <= set(outputs)
    assert accessor(outputs["APPLICATIONINSIGHTS_CONNECTION_STRING"]["value"]) == "monitoring.outputs.connectionString"
    for hook in (INFRA / "hooks").iterdir():
        read = set(re.findall(r"(?:\$\{|\$env:)([A-Z][A-Z0-9_]+)", hook.read_text()))
        unknown = read - set(outputs) - HOOK_STATE
        assert not unknown, f"{hook.name} reads {unknown}, which main.bicep does not output"


def test_the_host_name_comes_from_the_site_never_from_the_app_name(bicep: Trees, infra_text: dict[str, str]) -> None:
    """Flex Consumption apps can get a unique regional host name: <app>.azurewebsites.net may be wrong."""
    outputs = bicep["main.bicep"]["outputs"]
    assert accessor(outputs["SERVICE_API_HOST_NAME"]["value"]) == "api.outputs.defaultHostName"
    function_outputs = bicep["app/function.bicep"]["outputs"]
    assert accessor(function_outputs["defaultHostName"]["value"]) == "site.properties.defaultHostName"
    assert function_outputs["uri"]["value"] == "https://${site.properties.defaultHostName}"
    texts = {f"infra/{path}": text for path, text in infra_text.items()}
    texts |= {f"infra/hooks/{h.name}": h.read_text() for h in (INFRA / "hooks").iterdir()}
    texts["docs/deploy.md"] = (REPO / "docs/deploy.md").read_text()
    readme = (REPO / "README.md").read_text()
    texts["README.md#Deploy"] = readme.split("\n## Deploy", 1)[1].split("\n## ", 1)[0]
    for path, text in texts.items():
        assert "azurewebsites.net" not in text, f"{path} builds the host name from the app name"
    for hook in ("function-keys.sh", "function-keys.ps1"):
        assert "SERVICE_API_HOST_NAME" in (INFRA / "hooks" / hook).read_text(), hook


# --- Flex Consumption function app -------------------------------------------------------------


def test_function_app_is_flex_consumption_python_311_with_the_user_assigned_identity(bicep: Trees) -> None:
    tree = bicep["app/function.bicep"]
    plan = body(only_resource(tree, "Microsoft.Web/serverfarms"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = body(only_resource(tree, "Microsoft.Web/sites"))
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {"'${identityId}'": {}}}
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert not set(props["siteConfig"]) & FLEX_REJECTS, "Flex Consumption rejects these siteConfig properties"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert body(bicep["main.bicep"]["modules"]["api"])["params"]["pythonVersion"] == "3.11"
    deployment = config["deployment"]["storage"]
    assert deployment["type"] == "blobContainer"
    assert deployment["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_rolling_updates_where_flex_supports_them(bicep: Trees) -> None:
    """functionAppConfig.siteUpdateStrategy needs Microsoft.Web API 2024-11-01 or later (Microsoft Learn)."""
    tree = bicep["app/function.bicep"]
    site = only_resource(tree, "Microsoft.Web/sites")
    assert site["api_version"] >= "2024-11-01"
    config = body(site)["properties"]["functionAppConfig"]
    assert config["siteUpdateStrategy"] == {"type": "siteUpdateStrategy"}
    for tree_path in ("app/function.bicep", "main.bicep"):
        parameter = params(bicep[tree_path])["siteUpdateStrategy"]
        assert parameter["default"] == "RollingUpdate"
        assert set(decorator(parameter, "allowed")) == {"RollingUpdate", "Recreate"}
    assert body(bicep["main.bicep"]["modules"]["api"])["params"]["siteUpdateStrategy"] == "siteUpdateStrategy"


def test_scale_out_limit_is_at_least_one_and_fits_graph(bicep: Trees) -> None:
    """Graph, not the platform, limits throughput: about 5 to 20 instances (docs/deploy.md, Scale)."""
    for tree_path in ("app/function.bicep", "main.bicep"):
        parameter = params(bicep[tree_path])["maximumInstanceCount"]
        assert decorator(parameter, "min_value") == 1, tree_path
        assert decorator(parameter, "max_value") == 1000, tree_path
        assert 5 <= parameter["default"] <= 20, tree_path
    assert (
        params(bicep["main.bicep"])["maximumInstanceCount"]["default"]
        == params(bicep["app/function.bicep"])["maximumInstanceCount"]["default"]
    )
    host = json.loads((REPO / "host.json").read_text())["extensions"]["queues"]
    doc = (REPO / "docs/deploy.md").read_text()
    scale = doc.split("## Scale", 1)[1].split("\n## ", 1)[0]
    per_instance = host["batchSize"] + host["newBatchThreshold"]
    assert f"{host['batchSize']} + {host['newBatchThreshold']} = **{per_instance}**" in scale
    assert "1 request per second" in scale
    assert f"(default **{params(bicep['main.bicep'])['maximumInstanceCount']['default']}**)" in scale


def test_app_insights_takes_entra_auth_only(bicep: Trees) -> None:
    component = body(only_resource(bicep["app/monitoring.bicep"], "Microsoft.Insights/components"))
    assert component["properties"]["DisableLocalAuth"] is True
    assert accessor(component["properties"]["WorkspaceResourceId"]) == "logAnalytics.id"
    settings = bicep["app/function.bicep"]["variables"]["telemetrySettings"]["value"]
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"


def test_key_vault_is_rbac_mode_with_soft_delete_and_purge_protection_parameter(bicep: Trees) -> None:
    tree = bicep["app/keyvault.bicep"]
    props = body(only_resource(tree, "Microsoft.KeyVault/vaults"))["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props
    assert "enablePurgeProtection" in params(tree)
    main_kv = body(bicep["main.bicep"]["modules"]["keyVault"])["params"]
    assert main_kv["enablePurgeProtection"] == "keyVaultEnablePurgeProtection"
    assert params(bicep["main.bicep"])["keyVaultEnablePurgeProtection"]["type"] == "bool"


# --- role assignments ----------------------------------------------------------------------------


def test_role_definition_ids(bicep: Trees) -> None:
    variables = bicep["app/rbac.bicep"]["variables"]
    assert {name: variables[name]["value"] for name in ROLES} == ROLES


def _scope(value: Any) -> str:
    """`storage` or `hostContainers[i]`."""
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "index_accessor":
        ops = value["operator"]["operands"]
        return f"{ops['operand_1']}[{ops['operand_2']}]"
    return str(value)


def _assignments(bicep: Trees) -> dict[str, tuple[str, str, str, str]]:
    """Per role assignment: (scope, principal, principalType, role var or loop variable)."""
    tree = bicep["app/rbac.bicep"]
    found = {}
    for name, res in resources(tree, "Microsoft.Authorization/roleAssignments").items():
        config = body(res)
        props = config["properties"]
        role = function(props["roleDefinitionId"], "subscription_resource_id")
        assert role is not None, name
        found[name] = (_scope(config["scope"]), props["principalId"], props["principalType"], role["resource_name_1"])
    return found


def test_the_identity_gets_each_data_role_on_the_narrowest_scope(bicep: Trees) -> None:
    tree = bicep["app/rbac.bicep"]
    uami = "managedIdentityPrincipalId"
    identity = {v for v in _assignments(bicep).values() if v[1] == uami}
    assert identity == {
        ("storage", uami, "ServicePrincipal", "roleId"),
        ("deploymentContainer", uami, "ServicePrincipal", "storageBlobDataContributor"),
        ("archiveContainer", uami, "ServicePrincipal", "storageBlobDataContributor"),
        ("catalogContainer", uami, "ServicePrincipal", "storageBlobDataReader"),  # the reconcile timer only reads
        ("hostContainers[i]", uami, "ServicePrincipal", "storageBlobDataOwner"),
        ("applicationInsights", uami, "ServicePrincipal", "monitoringMetricsPublisher"),
        ("vault", uami, "ServicePrincipal", "keyVaultSecretsUser"),
    }
    # Account-wide: queues and tables only. No blob role on the account: blob roles are per container.
    assert sorted(tree["variables"]["identityAccountRoleIds"]["value"]) == sorted(
        ["storageQueueDataContributor", "storageTableDataContributor"]
    )
    [account_roles] = [
        r
        for r in resources(tree, "Microsoft.Authorization/roleAssignments").values()
        if body(r)["properties"]["principalId"] == uami and body(r)["scope"] == "storage"
    ]
    assert account_roles["config"]["loop_type"]["detail"]["array_name"] == "identityAccountRoleIds"
    containers = resources(tree, "Microsoft.Storage/storageAccounts/blobServices/containers", existing=True)
    assert {body(c)["name"] for c in containers.values()} == {
        "deploymentContainerName",
        "archiveContainerName",
        "catalogContainerName",
        "containerName",
    }
    assert tree["variables"]["storageBlobDataReader"]["value"] == "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    rbac = body(bicep["main.bicep"]["modules"]["rbac"])["params"]
    assert accessor(rbac["deploymentContainerName"]) == "storage.outputs.deploymentContainerName"
    assert accessor(rbac["hostContainerNames"]) == "storage.outputs.hostContainerNames"
    assert accessor(rbac["archiveContainerName"]) == "storage.outputs.archiveContainerName"
    assert accessor(rbac["catalogContainerName"]) == "storage.outputs.catalogContainerName"
    assert accessor(rbac["managedIdentityPrincipalId"]) == "identity.outputs.principalId"


def test_the_deploying_user_gets_data_roles_only_when_asked(bicep: Trees) -> None:
    tree = bicep["app/rbac.bicep"]
    user = "userPrincipalId"
    assert {v for v in _assignments(bicep).values() if v[1] == user} == {
        ("storage", user, "userPrincipalType", "roleId"),
        ("vault", user, "userPrincipalType", "keyVaultSecretsOfficer"),
    }
    variables = tree["variables"]
    assign = variables["assignUser"]["value"]["operator"]
    assert assign["type"] == "and"
    assert assign["operands"]["operand_1"] == "allowUserIdentityPrincipal"
    assert assign["operands"]["operand_2"]["operator"]["type"] == "not"
    assert variables["userStorageRoles"]["value"]["operator"]["operands"] == {
        "condition": "assignUser",
        "true_value": "userStorageRoleIds",
        "false_value": [],
    }
    roles = resources(tree, "Microsoft.Authorization/roleAssignments")
    assert roles["userSecretsOfficer"]["config"]["condition"] == "assignUser"
    assert roles["userStorageRoleAssignments"]["config"]["loop_type"]["detail"]["array_name"] == "userStorageRoles"
    for tree_path in ("app/rbac.bicep", "main.bicep"):
        assert params(bicep[tree_path])["allowUserIdentityPrincipal"]["default"] is False, tree_path
    rbac = body(bicep["main.bicep"]["modules"]["rbac"])["params"]
    assert rbac["allowUserIdentityPrincipal"] == "allowUserIdentityPrincipal"
    assert rbac["userPrincipalId"] == "principalId"
    assert params(tree)["userPrincipalType"]["default"] == "User"
    assert params(bicep["main.bicep"])["principalType"]["default"] == "User"


def test_role_assignment_names_are_deterministic(infra_text: dict[str, str]) -> None:
    names = re.findall(r"^\s+name: (.+)$", infra_text["app/rbac.bicep"], re.MULTILINE)
    assignment_names = [n for n in names if n.startswith("guid(")]
    assert len(assignment_names) == 9
    assert all(re.fullmatch(r"guid\(\w+(\[i\])?\.id, \w+, \w+\)", n) for n in assignment_names), assignment_names


# --- Microsoft Graph app roles -------------------------------------------------------------------


def test_graph_permissions_module_uses_the_graph_extension(bicep: Trees, infra_text: dict[str, str]) -> None:
    text = infra_text["app/graph-permissions.bicep"]
    assert re.search(r"^extension microsoftGraphV1$", text, re.MULTILINE)
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    tree = bicep["app/graph-permissions.bicep"]
    [graph] = resources(tree, "Microsoft.Graph/servicePrincipals", existing=True).values()
    assert graph["api_version"] == "v1.0"
    assert body(graph)["appId"] == GRAPH_APP_ID
    [grant] = resources(tree, "Microsoft.Graph/appRoleAssignedTo").values()
    assert grant["api_version"] == "v1.0"
    assert body(grant)["principalId"] == "principalId"
    # Role ids are looked up by value, never hard-coded.
    assert not re.search(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text.replace(GRAPH_APP_ID, "")
    )
    assert "r.value == role" in text


def test_graph_app_roles_are_copied_into_a_variable_before_filtering(bicep: Trees, infra_text: dict[str, str]) -> None:
    """As Microsoft's Graph Bicep quickstarts do (`var graphScopes = msGraphSP.oauth2PermissionScopes`)."""
    tree = bicep["app/graph-permissions.bicep"]
    assert accessor(tree["variables"]["graphAppRoles"]["value"]) == "graph.appRoles"
    text = infra_text["app/graph-permissions.bicep"]
    assert "filter(graphAppRoles, r => r.value == role" in text
    assert "filter(graph.appRoles" not in text


def test_the_graph_grant_waits_for_the_function_app(bicep: Trees) -> None:
    """Creating the site first gives a new identity's service principal time to replicate."""
    module = bicep["main.bicep"]["modules"]["graphPermissions"]
    assert body(module)["dependsOn"] == ["api"]
    doc = (REPO / "docs/deploy.md").read_text()
    assert "Request_ResourceNotFound" in doc
    assert "run `azd provision` again" in doc


def test_graph_roles_are_granted_only_when_asked(bicep: Trees) -> None:
    """The managed identity's own roles: only when asked, and only in the managed-identity fallback mode."""
    main = bicep["main.bicep"]
    module = main["modules"]["graphPermissions"]
    assert module["detail"]["path"] == "app/graph-permissions.bicep"
    condition = module["config"]["condition"]["operator"]
    assert condition["type"] == "and"
    assert condition["operands"]["operand_1"] == "grantGraphPermissions"
    assert condition["operands"]["operand_2"] == {
        "operator": {"type": "equals", "operands": {"operand_1": "graphAuthModeInUse", "operand_2": "managed-identity"}}
    }
    assert accessor(body(module)["params"]["principalId"]) == "identity.outputs.principalId"
    assert params(main)["grantGraphPermissions"]["default"] is False
    assert params(main)["grantLearnerRecordRoles"]["default"] is False
    variables = main["variables"]
    assert variables["learningContentRoles"]["value"] == ["LearningContent.ReadWrite.All"]
    assert variables["learnerRecordRoles"]["value"] == [
        "LearningAssignedCourse.ReadWrite.All",
        "LearningSelfInitiatedCourse.ReadWrite.All",
    ]
    roles = variables["graphAppRoles"]["value"]["operator"]
    assert roles["type"] == "conditional"
    assert roles["operands"]["condition"] == "grantLearnerRecordRoles"
    assert roles["operands"]["false_value"] == "learningContentRoles"
    assert body(module)["params"]["appRoles"] == "graphAppRoles"
    assert main["outputs"]["GRAPH_PERMISSIONS_GRANTED"]["value"] == "grantGraphPermissions"


# --- networking and diagnostics ----------------------------------------------------------------


def test_private_networking_is_optional_and_off_by_default(bicep: Trees) -> None:
    main = bicep["main.bicep"]
    assert params(main)["vnetEnabled"]["default"] is False
    for name in ("network", "privateEndpoints"):
        assert main["modules"][name]["config"]["condition"] == "vnetEnabled", name
    for name in ("storage", "keyVault"):
        assert body(main["modules"][name])["params"]["privateNetworkOnly"] == "vnetEnabled", name
    api = body(main["modules"]["api"])
    subnet = api["params"]["virtualNetworkSubnetId"]["operator"]
    assert subnet["operands"]["condition"] == "vnetEnabled"
    assert accessor(subnet["operands"]["true_value"]) == "network.outputs.appSubnetId"
    assert "privateEndpoints" in api["dependsOn"]


@pytest.mark.parametrize(
    ("path", "type_"),
    [("app/storage.bicep", "Microsoft.Storage/storageAccounts"), ("app/keyvault.bicep", "Microsoft.KeyVault/vaults")],
)
def test_public_network_access_is_off_with_private_networking(bicep: Trees, path: str, type_: str) -> None:
    props = body(only_resource(bicep[path], type_))["properties"]
    assert props["publicNetworkAccess"]["operator"]["operands"] == {
        "condition": "privateNetworkOnly",
        "true_value": "Disabled",
        "false_value": "Enabled",
    }
    assert props["networkAcls"]["defaultAction"]["operator"]["operands"] == {
        "condition": "privateNetworkOnly",
        "true_value": "Deny",
        "false_value": "Allow",
    }
    assert params(bicep[path])["privateNetworkOnly"]["default"] is False


def test_private_endpoints_for_blob_queue_table_and_vault_with_dns_zones(bicep: Trees) -> None:
    endpoints = body(bicep["main.bicep"]["modules"]["privateEndpoints"])["params"]["endpoints"]
    by_group = {e["groupId"]: e for e in endpoints}
    assert set(by_group) == {"blob", "queue", "table", "vault"}
    for group in ("blob", "queue", "table"):
        assert accessor(by_group[group]["targetId"]) == "storage.outputs.id"
        assert by_group[group]["dnsZoneName"] == f"privatelink.{group}.${{environment().suffixes.storage}}"
    assert accessor(by_group["vault"]["targetId"]) == "keyVault.outputs.id"
    assert by_group["vault"]["dnsZoneName"] == "privatelink.vaultcore.azure.net"
    tree = bicep["app/private-endpoints.bicep"]
    for type_ in (
        "Microsoft.Network/privateDnsZones",
        "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        "Microsoft.Network/privateEndpoints",
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
    ):
        [res] = resources(tree, type_).values()
        assert res["config"]["loop_type"]["detail"]["array_name"] == "endpoints", type_


def test_the_app_subnet_is_delegated_to_flex_consumption(bicep: Trees, infra_text: dict[str, str]) -> None:
    vnet = body(only_resource(bicep["app/network.bicep"], "Microsoft.Network/virtualNetworks"))
    subnets = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    app = subnets["appSubnetName"]
    assert app["delegations"][0]["properties"]["serviceName"] == "Microsoft.App/environments"
    assert subnets["privateEndpointSubnetName"]["privateEndpointNetworkPolicies"] == "Disabled"
    # Checked as text: pycep reads `!empty(x) ? x : null` as `!(empty(x) ? x : null)`.
    text = infra_text["app/function.bicep"]
    assert "virtualNetworkSubnetId: !empty(virtualNetworkSubnetId) ? virtualNetworkSubnetId : null" in text


def test_intake_ip_restrictions_where_the_sources_addresses_are_known(bicep: Trees) -> None:
    tree = bicep["app/function.bicep"]
    assert params(bicep["main.bicep"])["intakeAllowedCidrs"]["default"] == []
    assert params(tree)["intakeAllowedCidrs"]["default"] == []
    assert body(bicep["main.bicep"]["modules"]["api"])["params"]["intakeAllowedCidrs"] == "intakeAllowedCidrs"
    rules = tree["variables"]["intakeRestrictions"]["value"]
    assert rules["loop_type"]["detail"]["array_name"] == "intakeAllowedCidrs"
    assert rules["config"]["action"] == "Allow"
    assert rules["config"]["ipAddress"] == "cidr"
    config = body(only_resource(tree, "Microsoft.Web/sites"))["properties"]["siteConfig"]
    assert config["ipSecurityRestrictionsDefaultAction"]["operator"]["operands"] == {
        "condition": "restrictIntake",
        "true_value": "Deny",
        "false_value": "Allow",
    }
    # azd deploy goes through the SCM site: it keeps its own, open rules.
    assert config["scmIpSecurityRestrictionsUseMain"] is False
    assert config["scmIpSecurityRestrictionsDefaultAction"] == "Allow"


def test_key_vault_and_storage_send_diagnostics_to_log_analytics(bicep: Trees) -> None:
    tree = bicep["app/diagnostics.bicep"]
    settings = resources(tree, "Microsoft.Insights/diagnosticSettings")
    scopes = {body(r)["scope"]: body(r)["properties"] for r in settings.values()}
    assert set(scopes) == {"vault", "storage", "blobService", "queueService", "tableService"}
    assert all(props["workspaceId"] == "workspaceId" for props in scopes.values())
    assert scopes["vault"]["logs"] == [{"categoryGroup": "audit", "enabled": True}]
    for service in ("blobService", "queueService", "tableService"):
        assert scopes[service]["logs"] == "storageLogs"
    logged = {c["category"] for c in tree["variables"]["storageLogs"]["value"]}
    assert logged == {"StorageWrite", "StorageDelete"}, "StorageRead would log every queue poll"
    main = body(bicep["main.bicep"]["modules"]["diagnostics"])["params"]
    assert accessor(main["workspaceId"]) == "monitoring.outputs.logAnalyticsWorkspaceId"


# --- packaging -----------------------------------------------------------------------------------

RUNTIME = ["function_app.py", "host.json", "requirements.txt", "handlers/intake.py", "shared/settings.py"]
EXCLUDED = [
    ".venv/x",
    ".venv-infra/x",
    "node_modules/x",
    ".dev/x",
    "tests/infra/test_infra_static.py",
    "local/stack.py",
    "infra/main.bicep",
    "docs/deploy.md",
    "README.md",
    "local.settings.json",
    "__azurite_db_queue__.json",
    ".azure/env/.env",
]


def _ignored(path: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    parts = path.split("/")
    return any(fnmatch(part, pattern) for pattern in patterns for part in parts)


@pytest.mark.parametrize("path", RUNTIME + EXCLUDED)
def test_funcignore_ships_only_the_app(path: str) -> None:
    patterns = [
        line.strip() for line in (REPO / ".funcignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    assert all("/" not in p.strip("/") for p in patterns), "keep patterns simple (no paths)"
    assert _ignored(path, patterns) == (path in EXCLUDED)


def test_deprecated_flex_settings_are_not_set(infra_text: dict[str, str]) -> None:
    for name in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE"):
        for path, text in infra_text.items():
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
            assert name not in code, f"{path} sets {name}"
