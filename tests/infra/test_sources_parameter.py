"""The `sources` parameter (VIVA_SOURCES) of every kind becomes a SOURCES setting the app accepts.

infra/app/sources.bicep is pinned expression by expression to its Python twin (sources_twin.py),
and the twin runs one source of each kind (local/samples/sources.all-kinds.json, its local-only
conveniences turned into what a deployment gives) into the app's own parser.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.settings import SOURCE_KINDS, SourcesError, parse_sources

from .bicep_tree import body
from .conftest import REPO
from .sources_twin import (
    ELEMENT_DEFAULTS,
    ELEMENT_FIELDS,
    KEY_VAULT_REFERENCE,
    MISPLACED,
    arm_string,
    setting_of,
    sources_bicep,
)

Trees = dict[str, dict[str, Any]]
SAMPLE = REPO / "local/samples/sources.all-kinds.json"
DOC = REPO / "docs/deploy.md"
VAULT = "kv-test"
REGISTRATION = "9f6a3c1e-5b2d-4e8f-a7c0-3d1b2e4f5a60"
# Real API roots in place of the sample's "apiBaseUrl": "emulator" (docs/sources.md, "Settings per kind").
API_ROOTS = {
    "canvas": "https://school.instructure.com",
    "moodle": "https://moodle.example.com",
    "openedx": "https://lms.example.com",
    "thinkific": "https://api.thinkific.com",
}


# --- the Bicep is the twin ----------------------------------------------------------------------


def render(node: Any) -> str:
    """A pycep expression tree as compact Bicep-like text (string literals and names alike, unquoted)."""
    if isinstance(node, str):
        return node
    if isinstance(node, bool):
        return str(node).lower()
    if isinstance(node, list):
        return "[" + ", ".join(render(n) for n in node) + "]"
    if not isinstance(node, dict):
        return json.dumps(node)
    if "loop_type" in node:
        detail = node["loop_type"]["detail"]
        head = detail["item_name"]
        if "index_name" in detail:
            head = f"({head}, {detail['index_name']})"
        return f"[for {head} in {detail['array_name']}: {render(node['config'])}]"
    if set(node) == {"function"}:
        fn = node["function"]
        return f"{fn['type']}(" + ", ".join(render(v) for v in fn.get("parameters", {}).values()) + ")"
    if set(node) == {"operator"}:
        op = node["operator"]
        operands = op["operands"]
        if op["type"] == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if op["type"] == "index_accessor":
            return f"{render(operands['operand_1'])}[{render(operands['operand_2'])}]"
        if op["type"] == "conditional":
            parts = (operands["condition"], operands["true_value"], operands["false_value"])
            return "{} ? {} : {}".format(*(render(p) for p in parts))
        if op["type"] == "greater_than":
            return f"{render(operands['operand_1'])} > {render(operands['operand_2'])}"
        raise AssertionError(f"operator not rendered: {op['type']}")
    return "{" + ", ".join(f"{k}: {render(v)}" for k, v in node.items()) + "}"


def variables(bicep: Trees) -> dict[str, str]:
    return {name: render(v["value"]) for name, v in bicep["app/sources.bicep"]["variables"].items()}


def test_the_element_fields_and_defaults_are_the_twins(bicep: Trees) -> None:
    tree = bicep["app/sources.bicep"]["variables"]
    assert tree["elementFields"]["value"] == ELEMENT_FIELDS
    assert tree["elementDefaults"]["value"] == ELEMENT_DEFAULTS
    [misplaced] = tree["misplacedMembers"]["value"]["config"]["operator"]["operands"]["true_value"]
    assert misplaced == f"'{MISPLACED}'"


def test_each_expression_of_the_bicep_is_the_twins_step(bicep: Trees) -> None:
    """The twin's steps, in its order; a change to either must be made to both."""
    v = variables(bicep)
    assert v["entries"] == "[for s in sources: union(elementDefaults, s)]"
    setting = "to_upper(replace(e.{0}, -, _))"
    assert v["secretMembers"] == (
        f"[for e in entries: empty(e.secretName) ? {{}} : {{secretSetting: {setting.format('secretName')}}}]"
    )
    assert v["apiSecretMembers"] == (
        f"[for e in entries: empty(e.apiSecretName) ? {{}} : {{apiSecretSetting: {setting.format('apiSecretName')}}}]"
    )
    assert v["misplacedMembers"] == (
        f"[for s in sources: length(union(s, elementFields)) > length(elementFields) ? {{'{MISPLACED}': true}} : {{}}]"
    )
    assert v["sourceMembers"] == (
        "[for (e, i) in entries: string({'${e.name}': union({kind: cloudevents}, e.source, "
        "{registrationId: e.registrationId}, secretMembers[i], apiSecretMembers[i], misplacedMembers[i])})]"
    )
    assert v["webhookSecretNames"] == "[for e in entries: empty(e.secretName) ? [] : [e.secretName]]"
    assert v["apiSecretNames"] == "[for e in entries: empty(e.apiSecretName) ? [] : [e.apiSecretName]]"
    assert v["secretNames"] == "union(flatten(webhookSecretNames), flatten(apiSecretNames))"
    assert v["secretSettingNames"] == "[for n in secretNames: to_upper(replace(n, -, _))]"
    reference = KEY_VAULT_REFERENCE.format(vault="${keyVaultName}", name="${n}")
    member = f"{{'${{secretSettingNames[i]}}': {reference}}}"
    assert v["secretSettingMembers"] == f"[for (n, i) in secretNames: string({member})]"
    cut_and_join = "{{${{join([for m in {0}: substring(m, 1, length(m) - 2)], ',')}}}}"
    assert v["sourcesJson"] == cut_and_join.format("sourceMembers")
    assert v["secretSettingsJson"] == cut_and_join.format("secretSettingMembers")


def test_the_outputs_are_the_twins(bicep: Trees) -> None:
    outputs = {name: render(o["value"]) for name, o in bicep["app/sources.bicep"]["outputs"].items()}
    assert outputs == {
        "sourcesJson": "sourcesJson",
        "secretSettings": "json(secretSettingsJson)",
        "secretNames": "secretNames",
        "sourceNames": "[for s in sources: s.name]",
    }
    assert set(sources_bicep([], VAULT)) == set(outputs)
    params = body(bicep["main.bicep"]["modules"]["webhookSources"])["params"]
    assert params["sources"] == "sources"
    assert render(params["keyVaultName"]) == "keyVault.outputs.name"


def test_main_hands_every_secret_and_source_to_the_hooks(infra_text: dict[str, str]) -> None:
    main = infra_text["main.bicep"]
    assert "output WEBHOOK_SECRET_NAMES string = join(webhookSources.outputs.secretNames, ',')" in main
    assert "output WEBHOOK_SOURCE_NAMES string = join(webhookSources.outputs.sourceNames, ',')" in main


# --- every kind through the twin into the app's parser ------------------------------------------


def deployment_of(name: str, local: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A sample entry as a deployment gives it: (parameter element, the SOURCES entry expected).

    The local-only conveniences become what Azure has: inline secrets -> Key Vault secret names,
    "emulator" -> a real URL (jwksUrl: Canvas's published key set, the default), a missing
    registrationId -> a registration id.
    """
    source = dict(local)
    kind = source.setdefault("kind", "cloudevents")
    element: dict[str, Any] = {"name": name, "registrationId": source.pop("registrationId", REGISTRATION)}
    expected: dict[str, Any] = {"registrationId": element["registrationId"]}
    if source.pop("secret", None) is not None:
        element["secretName"] = f"{name}-webhook-secret"
        expected["secretSetting"] = f"{name.upper()}_WEBHOOK_SECRET"
    if source.get("jwksUrl") == "emulator":
        del source["jwksUrl"]
    if source.get("apiBaseUrl") == "emulator":
        source["apiBaseUrl"] = API_ROOTS[kind]
        # Thinkific signs its webhooks with the API key itself: one secret for both.
        element["apiSecretName"] = element["secretName"] if kind == "thinkific" else f"{name}-api-secret"
        expected["apiSecretSetting"] = setting_of(element["apiSecretName"])
        if kind == "openedx":
            source["apiClientId"] = "viva-learning-sync"
        if kind == "thinkific":
            source["apiSubdomain"] = "acme"
    assert "apiSecret" not in source, "an inline API secret next to a real apiBaseUrl: extend this conversion"
    element["source"] = source
    return element, source | expected


def all_kinds() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    sample = json.loads(SAMPLE.read_text())
    pairs = [deployment_of(name, entry) for name, entry in sample.items()]
    return [element for element, _ in pairs], {e["name"]: entry for e, entry in pairs}


def test_the_sample_has_one_source_of_every_kind() -> None:
    sample = json.loads(SAMPLE.read_text())
    assert sorted({e.get("kind", "cloudevents") for e in sample.values()}) == sorted(SOURCE_KINDS)


def test_every_kind_becomes_the_entry_the_app_accepts() -> None:
    parameter, expected = all_kinds()
    built = sources_bicep(parameter, VAULT)
    assert json.loads(built["sourcesJson"]) == expected
    parsed = parse_sources(built["sourcesJson"])
    assert parsed == parse_sources(json.dumps(expected))
    assert sorted(s.kind for s in parsed.values()) == sorted(SOURCE_KINDS)
    assert built["sourceNames"] == list(expected)


def test_every_secret_the_sources_need_is_named_once_with_its_key_vault_reference() -> None:
    parameter, expected = all_kinds()
    built = sources_bicep(parameter, VAULT)
    settings_used = {
        e[field] for e in expected.values() for field in ("secretSetting", "apiSecretSetting") if field in e
    }
    names = [e[field] for e in parameter for field in ("secretName", "apiSecretName") if field in e]
    assert sorted(built["secretNames"]) == sorted(set(names)), "every secret, both kinds, each once"
    assert len(built["secretNames"]) == len(set(built["secretNames"]))
    assert "thinkific-webhook-secret" in built["secretNames"]
    assert {"moodle-api-secret", "openedx-api-secret", "canvas-api-secret"} <= set(built["secretNames"])
    assert set(built["secretSettings"]) == settings_used
    for name in built["secretNames"]:
        reference = f"@Microsoft.KeyVault(VaultName={VAULT};SecretName={name})"
        assert built["secretSettings"][setting_of(name)] == reference


def test_absent_secrets_give_no_member_and_no_setting() -> None:
    built = sources_bicep(
        [
            {"name": "c", "registrationId": "r", "source": {"kind": "canvas", "rootAccountId": "1"}},
            {
                "name": "e",
                "registrationId": "r",
                "secretName": "",
                "apiSecretName": None,
                "source": {"kind": "canvas", "rootAccountId": "2"},
            },
        ],
        VAULT,
    )
    document = json.loads(built["sourcesJson"])
    for entry in document.values():
        assert "secretSetting" not in entry
        assert "apiSecretSetting" not in entry
    assert built["secretSettings"] == {}
    assert built["secretNames"] == []
    assert parse_sources(built["sourcesJson"])["c"].secret_setting is None


def test_the_old_element_shape_is_a_cloudevents_source() -> None:
    built = sources_bicep([{"name": "demo", "registrationId": "r1", "secretName": "demo-webhook-secret"}], VAULT)
    assert json.loads(built["sourcesJson"]) == {
        "demo": {"kind": "cloudevents", "registrationId": "r1", "secretSetting": "DEMO_WEBHOOK_SECRET"}
    }
    assert built["secretSettings"] == {
        "DEMO_WEBHOOK_SECRET": "@Microsoft.KeyVault(VaultName=kv-test;SecretName=demo-webhook-secret)"
    }
    assert built["secretNames"] == ["demo-webhook-secret"]
    assert built["sourceNames"] == ["demo"]
    assert sources_bicep([], VAULT) == {"sourcesJson": "{}", "secretSettings": {}, "secretNames": [], "sourceNames": []}


def test_the_elements_own_fields_win_over_sources() -> None:
    element = {
        "name": "m",
        "registrationId": "outer",
        "secretName": "m-token",
        "source": {"kind": "moodle", "registrationId": "inner", "secretSetting": "OTHER"},
    }
    entry = json.loads(sources_bicep([element], VAULT)["sourcesJson"])["m"]
    assert entry == {"kind": "moodle", "registrationId": "outer", "secretSetting": "M_TOKEN"}


@pytest.mark.parametrize(
    "element",
    [
        {"name": "m", "kind": "moodle", "registrationId": "r", "secretName": "m-token"},
        {"name": "m", "registrationId": "r", "secretName": "m-token", "apiBaseUrl": "https://moodle.example.com"},
        {"name": "m", "registrationId": "r", "secretSetting": "M_TOKEN"},
    ],
    ids=["kind-outside-source", "field-outside-source", "setting-instead-of-secret-name"],
)
def test_a_field_outside_source_stops_the_app_with_its_name(element: dict[str, Any]) -> None:
    """Dropped silently, `kind` next to `name` would turn a moodle source into a cloudevents one."""
    built = sources_bicep([element], VAULT)
    with pytest.raises(SourcesError, match=re.escape(MISPLACED)) as refused:
        parse_sources(built["sourcesJson"])
    assert str(refused.value).startswith("source 'm': ")


def test_awkward_values_stay_valid_json() -> None:
    """string() escapes every value, so quotes, backslashes and braces cannot break the joined JSON."""
    awkward = "id \"with\" quotes\\, {braces}, 'apostrophes', a\nnewline and \u00e9"
    parameter: list[dict[str, Any]] = [
        {"name": "lms-a", "registrationId": awkward, "secretName": "lms-a-secret"},
        {
            "name": "lms_b",
            "registrationId": "b2",
            "secretName": "lms-b-secret",
            "source": {
                "kind": "mapped",
                "mapping": {
                    "actions": {'course "x"': "upsert"},
                    "externalId": "data.id",
                    "fields": {"title": "data.title", "sourceName": {"value": awkward}},
                },
            },
        },
    ]
    built = sources_bicep(parameter, VAULT)
    parsed = parse_sources(built["sourcesJson"])
    assert parsed["lms-a"].registration_id == awkward
    assert json.loads(built["sourcesJson"])["lms_b"]["mapping"]["fields"]["sourceName"] == {"value": awkward}
    assert parsed["lms_b"].secret_setting == "LMS_B_SECRET"
    assert set(built["secretSettings"]) == {"LMS_A_SECRET", "LMS_B_SECRET"}


# Entry fields the element itself sets (they win over `source`'s).
OWN_FIELDS = {"kind", "registrationId", "secretSetting", "apiSecretSetting"}
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
ELEMENTS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(min_size=1, max_size=12),
            "registrationId": st.text(),
            "source": st.dictionaries(
                st.text(max_size=8).filter(lambda k: k not in OWN_FIELDS), JSON_VALUES, max_size=4
            ),
        },
        optional={"secretName": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)},
    ),
    max_size=4,
    unique_by=lambda e: str(e["name"]),
)


@settings(max_examples=200, deadline=None)
@given(ELEMENTS)
def test_any_names_and_values_join_into_the_document_of_their_entries(parameter: list[dict[str, Any]]) -> None:
    """The cut-and-join of one-member objects gives exactly the entries, whatever the text."""
    document = json.loads(sources_bicep(parameter, VAULT)["sourcesJson"])
    assert list(document) == [e["name"] for e in parameter]
    for e in parameter:
        entry = document[e["name"]]
        assert entry["registrationId"] == e["registrationId"]
        assert ("secretSetting" in entry) == bool(e.get("secretName"))
        assert {k: entry[k] for k in e["source"]} == e["source"]


def test_arm_string_is_compact_json() -> None:
    assert arm_string({"a": ["b", 1]}) == '{"a":["b",1]}'


# --- docs/deploy.md ----------------------------------------------------------------------------


def add_source_section() -> str:
    return DOC.read_text().split("## Add a webhook source", 1)[1].split("\n## ", 1)[0]


def documented_elements() -> list[dict[str, Any]]:
    """The elements "Add a webhook source" shows: its `azd env set VIVA_SOURCES '<json>'` commands and
    its json blocks (one element each)."""
    elements: list[dict[str, Any]] = []
    for match in re.finditer(r"azd env set VIVA_SOURCES '([^']*)'", add_source_section()):
        elements.extend(json.loads(match.group(1)))
    for block in re.findall(r"```json\n(.*?)```", add_source_section(), re.DOTALL):
        elements.append(json.loads(block))
    return elements


def test_docs_show_one_element_of_every_kind_and_each_builds_a_valid_source() -> None:
    elements = documented_elements()
    kinds = [e.get("source", {}).get("kind", "cloudevents") for e in elements]
    assert set(SOURCE_KINDS) <= set(kinds), f"docs/deploy.md lacks an example of {set(SOURCE_KINDS) - set(kinds)}"
    unique = {e["name"]: e for e in elements}
    assert len(unique) == len(set(kinds)), "one example per kind, each under its own name"
    built = sources_bicep(list(unique.values()), VAULT)
    parsed = parse_sources(built["sourcesJson"])
    assert {name: s.kind for name, s in parsed.items()} == {
        e["name"]: e.get("source", {}).get("kind", "cloudevents") for e in unique.values()
    }


def test_docs_describe_the_element_fields_and_link_the_field_meanings() -> None:
    section = add_source_section()
    for field in ELEMENT_FIELDS:
        assert f"`{field}`" in section, field
    assert "sources.md" in section, "the SOURCES fields have one owner: docs/sources.md"
