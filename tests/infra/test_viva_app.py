"""The Viva Learning app registration (issue 13): one Entra app, the managed identity as its credential.

Microsoft's unpublished draft ISV guide (microsoftgraph/microsoft-graph-docs PR 17789) binds a provider
registration to the app id that registered it, so the worker pushes content as the app an admin
registers through. infra/app/viva-app.bicep follows the Graph Bicep quickstart msi-as-a-fic-secretless
(microsoftgraph/msgraph-bicep-types); main.bicep decides which identity the worker signs in as
(GRAPH_AUTH_MODE) and whose Graph permissions the deployment consents to. Its decisions are evaluated
here on pycep's parse tree for every combination of the parameters that drive them.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, get_args

import pytest

from shared.settings import Settings

from .bicep_tree import accessor, body, decorator, function, key, resources
from .conftest import INFRA

Trees = dict[str, dict[str, Any]]
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
APPLICATION_PERMISSIONS = {
    "LearningContent.ReadWrite.All",
    "LearningAssignedCourse.ReadWrite.All",
    "LearningSelfInitiatedCourse.ReadWrite.All",
}
DELEGATED_PERMISSIONS = ["LearningProvider.ReadWrite"]
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def _code(text: str) -> str:
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def _main(bicep: Trees) -> dict[str, Any]:
    return bicep["main.bicep"]


def _module(bicep: Trees, name: str) -> dict[str, Any]:
    module: dict[str, Any] = _main(bicep)["modules"][name]
    return module


def _app(bicep: Trees) -> dict[str, Any]:
    [app] = resources(bicep["app/viva-app.bicep"], "Microsoft.Graph/applications").values()
    return app


# --- a small evaluator for main.bicep's decisions --------------------------------------------------


def evaluate(value: Any, env: dict[str, Any], variables: dict[str, Any]) -> Any:
    """Evaluates pycep's tree of a deploy-time expression: parameters from `env`, variables by name."""
    if isinstance(value, bool | int | list):
        return value
    if isinstance(value, str):
        if value in env:
            return env[value]
        if value in variables:
            return evaluate(variables[value]["value"], env, variables)
        return value  # a string literal
    if "function" in value:
        empty = function(value, "empty")
        assert empty is not None, f"not evaluated here: {value}"
        return not evaluate(empty["item_to_test"], env, variables)
    operator = value["operator"]
    kind, operands = operator["type"], operator["operands"]
    if kind == "conditional":
        branch = "true_value" if evaluate(operands["condition"], env, variables) else "false_value"
        return evaluate(operands[branch], env, variables)
    if kind == "not":
        return not evaluate(operands["bool_value"], env, variables)
    first, second = (evaluate(operands[k], env, variables) for k in ("operand_1", "operand_2"))
    if kind == "and":
        return bool(first and second)
    if kind == "or":
        return bool(first or second)
    if kind == "equals":
        return first == second
    raise AssertionError(f"operator {kind} not evaluated here")


CASES = list(itertools.product([True, False], ["", "cid"], ["", "app", "managed-identity"], [True, False]))


def _decide(bicep: Trees, create: bool, client: str, mode: str, grant: bool) -> dict[str, Any]:
    main = _main(bicep)
    env = {"createVivaApp": create, "vivaAppClientId": client, "graphAuthMode": mode, "grantGraphPermissions": grant}
    variables = main["variables"]
    modules = main["modules"]
    return {
        "mode": evaluate("graphAuthModeInUse", env, variables),
        "app": evaluate(modules["vivaApp"]["config"]["condition"], env, variables),
        "app consent": evaluate(modules["vivaAppConsent"]["config"]["condition"], env, variables),
        "identity roles": evaluate(modules["graphPermissions"]["config"]["condition"], env, variables),
    }


@pytest.mark.parametrize(("create", "client", "mode", "grant"), CASES)
def test_the_worker_signs_in_as_the_app_whenever_there_is_one(
    bicep: Trees, create: bool, client: str, mode: str, grant: bool
) -> None:
    decided = _decide(bicep, create, client, mode, grant)
    has_app = create or bool(client)
    assert decided["mode"] == (mode or ("app" if has_app else "managed-identity"))
    assert decided["app"] == create
    # Consent for the app only for an app the deployment made; the identity's own Graph roles only
    # when the worker signs in as the identity (least privilege: an app-mode identity holds none).
    assert decided["app consent"] == (create and grant)
    assert decided["identity roles"] == (grant and decided["mode"] == "managed-identity")


def test_the_defaults_create_the_app_and_sign_in_as_it(bicep: Trees) -> None:
    params = _main(bicep)["parameters"]
    assert params["createVivaApp"]["default"] is True
    assert params["vivaAppClientId"]["default"] == ""
    assert params["graphAuthMode"]["default"] == ""
    assert params["grantGraphPermissions"]["default"] is False
    assert _decide(bicep, True, "", "", False)["mode"] == "app"


def test_the_modes_are_the_ones_the_code_reads(bicep: Trees) -> None:
    allowed = decorator(_main(bicep)["parameters"]["graphAuthMode"], "allowed")
    optional = get_args(Settings.model_fields["graph_auth_mode_setting"].annotation)  # Literal[...] | None
    code = {value for member in optional for value in get_args(member)}
    assert set(allowed) == {"", *code} == {"", "app", "managed-identity"}


def test_azd_variables_feed_the_parameters(bicep: Trees) -> None:
    values = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert values["createVivaApp"]["value"] == "${CREATE_VIVA_APP=true}"
    # The same name as the output: azd stores VIVA_APP_CLIENT_ID, and an app made by hand is named
    # with `azd env set VIVA_APP_CLIENT_ID`; the deployment's own app wins over the variable.
    assert values["vivaAppClientId"]["value"] == "${VIVA_APP_CLIENT_ID}"
    assert values["graphAuthMode"]["value"] == "${GRAPH_AUTH_MODE}"
    outputs = _main(bicep)["outputs"]
    assert "GRAPH_AUTH_MODE" not in outputs, "an output would pin the mode: azd feeds it back into graphAuthMode"
    assert outputs["GRAPH_AUTH_MODE_IN_USE"]["value"] == "graphAuthModeInUse"


# --- the app, its credential and its service principal ----------------------------------------------


def test_the_module_is_deployed_when_asked(bicep: Trees) -> None:
    module = _module(bicep, "vivaApp")
    assert module["detail"]["path"] == "app/viva-app.bicep"
    assert module["config"]["condition"] == "createVivaApp"
    params = body(module)["params"]
    assert params["uniqueName"] == "vivaAppUniqueName"
    assert accessor(params["managedIdentityPrincipalId"]) == "identity.outputs.principalId"
    assert params["ficIssuer"] == "vivaAppFicIssuer"
    assert params["ficAudience"] == "vivaAppFicAudience"
    assert params["applicationPermissions"] == "vivaAppApplicationPermissions"
    assert params["delegatedPermissions"] == "vivaAppDelegatedPermissions"
    variables = _main(bicep)["variables"]
    # Stable per environment: resourceToken hashes subscription, environment and region.
    assert variables["vivaAppUniqueName"]["value"] == "viva-learning-sync-${resourceToken}"
    assert "${environmentName}" in variables["vivaAppDisplayName"]["value"]


def test_the_federated_credential_is_the_managed_identity(bicep: Trees, infra_text: dict[str, str]) -> None:
    """Audience, issuer and subject as in the quickstart msi-as-a-fic-secretless."""
    variables = _main(bicep)["variables"]
    assert (
        variables["vivaAppFicIssuer"]["value"]
        == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    )
    assert variables["vivaAppFicAudience"]["value"] == "api://AzureADTokenExchange"
    [fic] = resources(
        bicep["app/viva-app.bicep"], "Microsoft.Graph/applications/federatedIdentityCredentials@v1.0"
    ).values()
    config = body(fic)
    assert config["audiences"] == ["ficAudience"]
    assert config["issuer"] == "ficIssuer"
    assert config["subject"] == "managedIdentityPrincipalId"
    assert config["depends_on"] == ["app"], "nested in the app"
    assert re.fullmatch(r"\$\{app\.uniqueName\}/[a-z0-9-]{1,100}", config["name"]), config["name"]
    text = infra_text["app/viva-app.bicep"]
    assert "msi-as-a-fic-secretless" in text, "cite the quickstart"
    assert "resource managedIdentityCredential 'federatedIdentityCredentials@v1.0'" in text


def test_the_app_is_a_public_client_for_the_admins_sign_in(bicep: Trees) -> None:
    app = _app(bicep)
    assert app["api_version"] == "v1.0"
    config = body(app)
    assert config["uniqueName"] == "uniqueName"
    assert config["signInAudience"] == "AzureADMyOrg"
    assert config["isFallbackPublicClient"] is True, "device code needs public client flows"
    assert config["publicClient"] == {"redirectUris": "publicClientRedirectUris"}
    assert bicep["app/viva-app.bicep"]["parameters"]["publicClientRedirectUris"]["default"] == ["http://localhost"]
    assert "web" not in config, "no web redirect: nothing here holds a secret"
    assert "passwordCredentials" not in config
    assert "keyCredentials" not in config


def test_the_service_principal_is_the_apps(bicep: Trees) -> None:
    [sp] = resources(bicep["app/viva-app.bicep"], "Microsoft.Graph/servicePrincipals").values()
    assert accessor(body(sp)["appId"]) == "app.appId"
    outputs = bicep["app/viva-app.bicep"]["outputs"]
    assert accessor(outputs["clientId"]["value"]) == "app.appId"
    assert accessor(outputs["servicePrincipalId"]["value"]) == "servicePrincipal.id"


def test_the_required_permissions_are_looked_up_by_value(bicep: Trees, infra_text: dict[str, str]) -> None:
    tree = bicep["app/viva-app.bicep"]
    [graph] = resources(tree, "Microsoft.Graph/servicePrincipals", existing=True).values()
    assert body(graph)["appId"] == "graphAppId"
    variables = tree["variables"]
    assert variables["graphAppId"]["value"] == GRAPH_APP_ID
    assert accessor(variables["graphAppRoles"]["value"]) == "graph.appRoles"
    assert accessor(variables["graphScopes"]["value"]) == "graph.oauth2PermissionScopes"
    text = _code(infra_text["app/viva-app.bicep"])
    assert (
        "filter(graphAppRoles, r => contains(applicationPermissions, r.value) && "
        "contains(r.allowedMemberTypes, 'Application'))" in text
    )
    assert "filter(graphScopes, s => contains(delegatedPermissions, s.value))" in text
    assert not GUID.search(text.replace(GRAPH_APP_ID, "")), "no permission id is hard-coded"

    [access] = body(_app(bicep))["requiredResourceAccess"]
    assert access["resourceAppId"] == "graphAppId"
    combined = function(access["resourceAccess"], "concat")
    assert combined is not None
    for arg, (source, kind) in zip(
        ("arg_1", "arg_2"), (("requiredRoles", "Role"), ("requiredScopes", "Scope")), strict=True
    ):
        mapped = function(combined[arg], "map")
        assert mapped is not None
        assert mapped["arg_1"] == source
        expression = mapped["arg_2"]["detail"]["expression"]
        assert expression["type"] == kind
        assert accessor(expression["id"]) == f"{mapped['arg_2']['detail']['var_1']}.id"


def test_the_app_requires_content_learner_record_and_provider_permissions(bicep: Trees) -> None:
    variables = _main(bicep)["variables"]
    assert function(variables["vivaAppApplicationPermissions"]["value"], "concat") == {
        "arg_1": "learningContentRoles",
        "arg_2": "learnerRecordRoles",
    }
    roles = set(variables["learningContentRoles"]["value"]) | set(variables["learnerRecordRoles"]["value"])
    assert roles == APPLICATION_PERMISSIONS
    assert variables["vivaAppDelegatedPermissions"]["value"] == DELEGATED_PERMISSIONS


# --- admin consent ------------------------------------------------------------------------------------


def test_the_app_consent_goes_to_the_apps_service_principal(bicep: Trees) -> None:
    module = _module(bicep, "vivaAppConsent")
    assert module["detail"]["path"] == "app/graph-permissions.bicep"
    params = body(module)["params"]
    principal = params["principalId"]["operator"]["operands"]
    assert principal["condition"] == "createVivaApp"
    assert accessor(principal["true_value"]) == "vivaApp.outputs.servicePrincipalId"
    assert params["appRoles"] == "vivaAppApplicationPermissions"
    assert params["delegatedScopes"] == "vivaAppDelegatedPermissions"


def test_delegated_consent_is_one_grant_for_all_users(bicep: Trees) -> None:
    tree = bicep["app/graph-permissions.bicep"]
    [grant] = resources(tree, "Microsoft.Graph/oauth2PermissionGrants").values()
    assert grant["api_version"] == "v1.0"
    assert grant["config"]["condition"] == {
        "operator": {
            "type": "not",
            "operands": {
                "bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "delegatedScopes"}}}
            },
        }
    }
    config = body(grant)
    assert config["clientId"] == "principalId"
    assert accessor(config["resourceId"]) == "graph.id"
    assert config["consentType"] == "AllPrincipals"
    assert function(config["scope"], "join") == {"input_array": "delegatedScopes", "delimiter": " "}
    assert tree["parameters"]["delegatedScopes"]["default"] == []
    # The identity's own grant passes no scope: a managed identity cannot sign a user in.
    assert "delegatedScopes" not in body(_module(bicep, "graphPermissions"))["params"]


# --- what the function app and azd get -----------------------------------------------------------------


def _settings(bicep: Trees) -> dict[str, Any]:
    union = function(body(_module(bicep, "api"))["params"]["appSettings"], "union")
    assert union is not None
    return {key(k): v for k, v in union["arg_3"].items()}


def test_the_function_app_gets_the_auth_settings(bicep: Trees) -> None:
    settings = _settings(bicep)
    assert settings["GRAPH_AUTH_MODE"] == "graphAuthModeInUse"
    assert settings["VIVA_APP_CLIENT_ID"] == "vivaAppClientIdInUse"
    assert settings["VIVA_APP_TENANT_ID"] == "vivaAppTenantId"
    variables = _main(bicep)["variables"]
    client = variables["vivaAppClientIdInUse"]["value"]["operator"]["operands"]
    assert client["condition"] == "createVivaApp"
    assert accessor(client["true_value"]) == "vivaApp.outputs.clientId"
    assert client["false_value"] == "vivaAppClientId"
    assert accessor(variables["vivaAppTenantId"]["value"]) is None
    assert variables["vivaAppTenantId"]["value"]["operator"]["operands"] == {
        "operand_1": {"function": {"type": "tenant"}},
        "operand_2": "tenantId",
    }
    # The managed identity stays AZURE_CLIENT_ID (storage, Key Vault, telemetry, the FIC assertion).
    identity = bicep["app/function.bicep"]["variables"]["identitySettings"]["value"]
    assert identity["AZURE_CLIENT_ID"] == "identityClientId"


def test_outputs_name_the_app_and_keep_the_old_ones(bicep: Trees) -> None:
    outputs = _main(bicep)["outputs"]
    assert outputs["VIVA_APP_CLIENT_ID"]["value"] == "vivaAppClientIdInUse"
    assert outputs["VIVA_APP_TENANT_ID"]["value"] == "vivaAppTenantId"
    assert outputs["VIVA_APP_CREATED"]["value"] == "createVivaApp"
    assert outputs["VIVA_APP_FIC_ISSUER"]["value"] == "vivaAppFicIssuer"
    assert outputs["VIVA_APP_FIC_AUDIENCE"]["value"] == "vivaAppFicAudience"
    assert function(outputs["VIVA_APP_GRAPH_ROLES"]["value"], "join") == {
        "input_array": "vivaAppApplicationPermissions",
        "delimiter": ",",
    }
    assert {
        "AZURE_TENANT_ID",
        "AZURE_MANAGED_IDENTITY_CLIENT_ID",
        "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID",
        "GRAPH_APP_ROLES",
        "GRAPH_PERMISSIONS_GRANTED",
        "SERVICE_API_NAME",
    } <= set(outputs)
