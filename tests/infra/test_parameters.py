"""infra/main.parameters.json gives each parameter the JSON type its Bicep declaration has.

azd substitutes `${VAR}` and `${VAR=default}` in the parameters file, and ARM rejects a value of the
wrong JSON type (a string "[]" for an `array` parameter). What azd does with the substituted text
depends on its version; `emulate_azd` below follows Azure/azure-dev's bicep_provider.go:

- Any azd: a value that is empty because its variable is unset is left out, so the Bicep default
  applies. A string for a `bool` or `int` parameter is converted when it parses (strconv.ParseBool,
  ParseInt; since azd 0.5, Azure/azure-dev#1339); otherwise azd asks for the value.
- Before 1.23.4, the substitution ran on the whole JSON of the parameter: an array or object
  parameter got the text as a string ("[]"), or invalid JSON when the text held quotes.
- From 1.23.4 (Azure/azure-dev#6694), a string value of an array or object parameter is substituted
  on its own and parsed as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .conftest import INFRA

Trees = dict[str, dict[str, Any]]
PARAMETERS = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
JSON_ARRAYS_FROM = (1, 23, 4)
# Variables azd itself always provides (the environment, the signed-in principal).
AZD_PROVIDED = {
    "AZURE_ENV_NAME": "viva-test",
    "AZURE_LOCATION": "westeurope",
    "AZURE_PRINCIPAL_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_PRINCIPAL_TYPE": "User",
}
# A typical value per Bicep type, as a user would `azd env set` it.
SET_VALUE = {
    "string": "some-text",
    "bool": "true",
    "int": "7",
    "array": '["203.0.113.0/24"]',
    "object": '{"LMS_API_TOKEN": "x"}',
}
OMITTED = object()


class AzdAsks(Exception):
    """azd cannot use the value and prompts for it (fails in CI)."""


def envsubst(text: str, env: dict[str, str]) -> tuple[str, bool]:
    """a8m/envsubst as azd uses it: ${VAR} and ${VAR=default}; also whether a variable was unset."""
    unset = False

    def one(match: re.Match[str]) -> str:
        nonlocal unset
        name, default = match.group(1), match.group(3)
        if name not in env:
            unset = True
            return default if default is not None else ""
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(=([^}]*))?\}", one, text), unset


def parse_bool(text: str) -> bool:
    if text in {"1", "t", "T", "TRUE", "true", "True"}:
        return True
    if text in {"0", "f", "F", "FALSE", "false", "False"}:
        return False
    raise AzdAsks(text)


def emulate_azd(raw: Any, bicep_type: str, env: dict[str, str], version: tuple[int, int, int]) -> Any:
    """The JSON value azd passes to ARM for one parameter, or OMITTED."""
    if bicep_type in ("array", "object") and isinstance(raw, str) and version >= JSON_ARRAYS_FROM:
        text, unset = envsubst(raw, env)
        if text == "" and unset:
            return OMITTED
        return json.loads(text)  # azd fails with "is not valid JSON" otherwise
    substituted, unset = envsubst(json.dumps({"value": raw}), env)
    value = json.loads(substituted)["value"]  # raises where old azd failed with invalid JSON
    if isinstance(value, str) and value == "" and unset:
        return OMITTED
    if isinstance(value, str) and bicep_type == "bool":
        return parse_bool(value)
    if isinstance(value, str) and bicep_type == "int":
        if not re.fullmatch(r"[+-]?\d+", value):
            raise AzdAsks(value)
        return int(value)
    return value


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", str: "string", list: "array", dict: "object"}[type(value)]


def minimum_azd_version(infra_dump: dict[str, Any]) -> tuple[int, int, int]:
    constraint = infra_dump["azure_yaml"].get("requiredVersions", {}).get("azd", "")
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", constraint.strip())
    assert match, f"azure.yaml requiredVersions.azd must be a '>= x.y.z' minimum, got {constraint!r}"
    major, minor, patch = (int(part) for part in match.groups())
    return (major, minor, patch)


def mapped(bicep: Trees) -> list[tuple[str, Any, str]]:
    main = bicep["main.bicep"]["parameters"]
    return [(name, PARAMETERS[name]["value"], main[name]["type"]) for name in sorted(PARAMETERS)]


def test_azure_yaml_requires_the_azd_that_parses_json_arrays(infra_dump: dict[str, Any]) -> None:
    assert minimum_azd_version(infra_dump) >= JSON_ARRAYS_FROM
    assert "6694" in (INFRA.parent / "azure.yaml").read_text(), "say why the minimum is what it is"


@pytest.mark.parametrize("version", [(1, 0, 0), (1, 23, 3), JSON_ARRAYS_FROM], ids=str)
def test_unset_variables_keep_the_bicep_default_on_every_azd(bicep: Trees, version: tuple[int, int, int]) -> None:
    """A fresh environment: nothing set but what azd provides. Even an older azd must not break."""
    for name, raw, bicep_type in mapped(bicep):
        value = emulate_azd(raw, bicep_type, AZD_PROVIDED, version)
        assert value is OMITTED or json_type(value) == bicep_type, f"{name}: {raw!r} -> {value!r} for {bicep_type}"


def test_set_variables_yield_the_declared_type_on_the_required_azd(bicep: Trees, infra_dump: dict[str, Any]) -> None:
    version = minimum_azd_version(infra_dump)
    for name, raw, bicep_type in mapped(bicep):
        variables = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", raw) if isinstance(raw, str) else []
        env = AZD_PROVIDED | {v: SET_VALUE[bicep_type] for v in variables if v not in AZD_PROVIDED}
        value = emulate_azd(raw, bicep_type, env, version)
        assert value is not OMITTED, name
        assert json_type(value) == bicep_type, f"{name}: {raw!r} -> {value!r} for {bicep_type}"


def test_array_and_object_parameters_are_mapped_without_a_text_default(bicep: Trees) -> None:
    """`${VAR=[]}` would hand older azd the string "[]": a bare `${VAR}` lets the Bicep default apply."""
    for name, raw, bicep_type in mapped(bicep):
        if bicep_type in ("array", "object") and isinstance(raw, str):
            assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", raw), f"{name}: {raw!r}"
    assert PARAMETERS["sources"]["value"] == "${VIVA_SOURCES}"
    assert bicep["main.bicep"]["parameters"]["sources"]["default"] == []


def test_the_emulation_catches_the_old_mapping() -> None:
    """The mapping this replaced: a string "[]" for an array parameter on azd before 1.23.4."""
    value = emulate_azd("${VIVA_SOURCES=[]}", "array", AZD_PROVIDED, (1, 23, 3))
    assert value == "[]"
    assert json_type(value) != "array"
    with pytest.raises(json.JSONDecodeError):
        emulate_azd("${VIVA_SOURCES}", "array", AZD_PROVIDED | {"VIVA_SOURCES": '[{"name": "a"}]'}, (1, 23, 3))
    assert emulate_azd("${VIVA_SOURCES}", "array", AZD_PROVIDED | {"VIVA_SOURCES": "[]"}, JSON_ARRAYS_FROM) == []
