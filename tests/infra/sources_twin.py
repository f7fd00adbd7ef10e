"""Python twin of infra/app/sources.bicep: what the template makes of the `sources` parameter.

The Bicep cannot be evaluated here (no Bicep CLI, no ARM), so this twin does the same steps with
the ARM functions' documented semantics, and test_sources_parameter.py both pins the Bicep's
expressions to these steps and runs every kind through the twin into the app's own parser.
ARM semantics used (learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-array,
-object, -string):
- union() of objects: later values win, nested objects are merged recursively; of arrays: each
  value once, in first-seen order;
- string() of an object: compact JSON;
- empty(): true for null, '', [] and {}.
"""

from __future__ import annotations

import json
from typing import Any

KEY_VAULT_REFERENCE = "@Microsoft.KeyVault(VaultName={vault};SecretName={name})"
# sources.bicep `elementFields` and `elementDefaults`.
ELEMENT_FIELDS: dict[str, Any] = {"name": "", "registrationId": "", "secretName": "", "apiSecretName": "", "source": {}}
ELEMENT_DEFAULTS: dict[str, Any] = {"secretName": "", "apiSecretName": "", "source": {}}
# sources.bicep `misplacedMembers`: the member an element with unknown fields gets, which the app refuses.
MISPLACED = (
    "VIVA_SOURCES element with fields other than name, registrationId, secretName, apiSecretName and source "
    "(the kind and its fields go inside source)"
)


def arm_union(*objects: dict[str, Any]) -> dict[str, Any]:
    """ARM union() of objects: later values win; nested objects merge recursively."""
    result: dict[str, Any] = {}
    for obj in objects:
        for name, value in obj.items():
            if isinstance(value, dict) and isinstance(result.get(name), dict):
                result[name] = arm_union(result[name], value)
            else:
                result[name] = value
    return result


def arm_union_arrays(*arrays: list[Any]) -> list[Any]:
    """ARM union() of arrays: every value once, in the order first seen."""
    result: list[Any] = []
    for array in arrays:
        for value in array:
            if value not in result:
                result.append(value)
    return result


def arm_empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def arm_string(value: object) -> str:
    """ARM's string() of an object: compact JSON."""
    return json.dumps(value, separators=(",", ":"))


def members_to_object(members: list[str]) -> str:
    """Cut each one-member object's braces and join the members into one object."""
    return "{" + ",".join(m[1 : len(m) - 1] for m in members) + "}"


def setting_of(secret_name: str) -> str:
    """`toUpper(replace(name, '-', '_'))`: the app setting that references a kebab-case secret."""
    return secret_name.replace("-", "_").upper()


def sources_bicep(sources: list[dict[str, Any]], vault: str) -> dict[str, Any]:
    """The module's outputs for a `sources` parameter: sourcesJson, secretSettings, secretNames, sourceNames."""
    entries = [arm_union(ELEMENT_DEFAULTS, s) for s in sources]
    secret_members = [
        {} if arm_empty(e["secretName"]) else {"secretSetting": setting_of(e["secretName"])} for e in entries
    ]
    api_secret_members = [
        {} if arm_empty(e["apiSecretName"]) else {"apiSecretSetting": setting_of(e["apiSecretName"])} for e in entries
    ]
    misplaced_members = [
        {MISPLACED: True} if len(arm_union(s, ELEMENT_FIELDS)) > len(ELEMENT_FIELDS) else {} for s in sources
    ]
    source_members = [
        arm_string(
            {
                e["name"]: arm_union(
                    {"kind": "cloudevents"},
                    e["source"],
                    {"registrationId": e["registrationId"]},
                    secret_members[i],
                    api_secret_members[i],
                    misplaced_members[i],
                )
            }
        )
        for i, e in enumerate(entries)
    ]
    webhook_secret_names = [[] if arm_empty(e["secretName"]) else [e["secretName"]] for e in entries]
    api_secret_names = [[] if arm_empty(e["apiSecretName"]) else [e["apiSecretName"]] for e in entries]
    secret_names = arm_union_arrays(
        [n for names in webhook_secret_names for n in names], [n for names in api_secret_names for n in names]
    )
    setting_names = [setting_of(n) for n in secret_names]
    secret_setting_members = [
        arm_string({setting_names[i]: KEY_VAULT_REFERENCE.format(vault=vault, name=n)})
        for i, n in enumerate(secret_names)
    ]
    return {
        "sourcesJson": members_to_object(source_members),
        "secretSettings": json.loads(members_to_object(secret_setting_members)),
        "secretNames": secret_names,
        "sourceNames": [s["name"] for s in sources],
    }
