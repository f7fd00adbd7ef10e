"""Small helpers over pycep's JSON trees (what tests/infra/_infra_dump.py prints)."""

from __future__ import annotations

from typing import Any

Tree = dict[str, Any]


def key(name: str) -> str:
    """Object keys keep their Bicep quotes in pycep's tree: ``'azd-service-name'``."""
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "'" else name


def keys(obj: dict[str, Any]) -> set[str]:
    return {key(k) for k in obj}


def body(declaration: Tree) -> Tree:
    """The object of a resource or module, under its loop and/or condition if it has them."""
    config: Tree = declaration["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def resources(tree: Tree, type_: str | None = None, *, existing: bool | None = False) -> dict[str, Tree]:
    found = {}
    for name, res in tree.get("resources", {}).items():
        if type_ is not None and res["type"] != type_:
            continue
        if existing is not None and res.get("existing", False) != existing:
            continue
        found[name] = res
    return found


def only_resource(tree: Tree, type_: str) -> Tree:
    [res] = resources(tree, type_).values()
    return res


def function(value: Any, name: str) -> dict[str, Any] | None:
    """``{"function": {"type": name, "parameters": {...}}}`` -> its parameters, else None."""
    if isinstance(value, dict) and isinstance(value.get("function"), dict) and value["function"]["type"] == name:
        params: dict[str, Any] = value["function"]["parameters"]
        return params
    return None


def accessor(value: Any) -> str | None:
    """``a.b.c`` property access -> ``"a.b.c"``, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("operator", {}).get("type") == "property_accessor":
        ops = value["operator"]["operands"]
        first, rest = accessor(ops["operand_1"]), accessor(ops["operand_2"])
        return f"{first}.{rest}" if first and rest else None
    return None


def decorator(declaration: Tree, type_: str) -> Any:
    for deco in declaration.get("decorators", []):
        if deco["type"] == type_:
            return deco.get("argument", True)
    return None
