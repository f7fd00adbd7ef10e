"""Request-body validation driven by the Graph CSDL extract.

Types, nullability and enum members are read from ``local/graph_metadata/learning-schemas.v1.0.json``
(not hand-listed) so the emulator stays in step with the metadata. What the CSDL cannot say (which
properties the docs call required, documented defaults) is kept in the small tables below with the
doc that states it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import bad_request

METADATA_PATH = Path(__file__).resolve().parents[2] / "local/graph_metadata/learning-schemas.v1.0.json"
NAMESPACE = "microsoft.graph"

# Required on create/upsert per the docs (CSDL Nullable=false is not the same thing):
# learningcontent-update.md and employeeexperience-post-learningproviders.md.
REQUIRED_ON_CREATE: dict[str, tuple[str, ...]] = {
    "learningContent": ("externalId", "title", "contentWebUrl", "languageTag"),
    "learningProvider": (
        "displayName",
        "squareLogoWebUrlForDarkTheme",
        "longLogoWebUrlForDarkTheme",
        "squareLogoWebUrlForLightTheme",
        "longLogoWebUrlForLightTheme",
    ),
}

# Documented defaults (resources/learningcontent.md, resources/learningprovider.md); everything
# else defaults to null.
DEFAULTS: dict[str, dict[str, Any]] = {
    "learningContent": {"isActive": True, "isPremium": False, "isSearchable": True},
    "learningProvider": {"isCourseActivitySyncEnabled": False},
}

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# beta/resources/learningcontent.md lists level as Beginner, Intermediate, Advanced, unknownFutureValue;
# the CSDL members are lower-case. Accepted on /beta only and stored as the CSDL member.
BETA_ENUM_SPELLINGS: dict[str, dict[str, str]] = {
    "level": {"Beginner": "beginner", "Intermediate": "intermediate", "Advanced": "advanced"},
}

# OData ABNF durationValue: [sign] "P" [n "D"] ["T" [n "H"] [n "M"] [n["." n] "S"]] (no Y/M/W).
_DURATION_RE = re.compile(r"-?P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?")
# RFC 3339 / OData dateTimeOffsetValue; the offset is mandatory.
_DATETIME_RE = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})T(?P<h>\d{2}):(?P<mi>\d{2})"
    r"(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,12}))?)?(?P<tz>Z|z|[+-]\d{2}:\d{2})"
)


@dataclass(frozen=True)
class PropertySpec:
    name: str
    type: str
    nullable: bool = True
    read_only: bool = False


@dataclass(frozen=True)
class EntitySchema:
    """One entity type: its structural properties (in CSDL order, ``id`` first) and what the docs add."""

    name: str
    properties: dict[str, PropertySpec]
    navigation: tuple[str, ...]
    alternate_keys: tuple[str, ...]
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def qualified_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    def blank(self) -> dict[str, Any]:
        """An instance with every property at its default (null unless documented otherwise)."""
        return {name: self.defaults.get(name) for name in self.properties}


@dataclass(frozen=True)
class Metadata:
    entities: dict[str, EntitySchema]
    enums: dict[str, tuple[str, ...]]
    complex_types: dict[str, dict[str, PropertySpec]]

    def entity(self, name: str) -> EntitySchema:
        return self.entities[name]


def _specs(raw_props: list[dict[str, Any]]) -> dict[str, PropertySpec]:
    return {p["name"]: PropertySpec(p["name"], p["type"], bool(p.get("nullable", True))) for p in raw_props}


@lru_cache(maxsize=4)
def load_metadata(path: Path = METADATA_PATH) -> Metadata:
    """Parse the metadata extract once per path."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw_entities: dict[str, dict[str, Any]] = raw["entityTypes"]

    def all_props(name: str) -> dict[str, PropertySpec]:
        entity = raw_entities[name]
        base = entity.get("baseType")
        inherited: dict[str, PropertySpec]
        if base == "graph.entity":
            # graph.entity is not in the extract; it contributes only the read-only key ``id``.
            inherited = {"id": PropertySpec("id", "Edm.String", nullable=False, read_only=True)}
        elif base:
            inherited = all_props(base.removeprefix("graph."))
        else:
            inherited = {}
        return {**inherited, **_specs(entity["properties"])}

    entities = {
        name: EntitySchema(
            name=name,
            properties=all_props(name),
            navigation=tuple(n["name"] for n in entity.get("navigationProperties", [])),
            alternate_keys=tuple(entity.get("alternateKeys", [])),
            required=REQUIRED_ON_CREATE.get(name, ()),
            defaults=DEFAULTS.get(name, {}),
        )
        for name, entity in raw_entities.items()
    }
    enums = {name: tuple(m["name"] for m in e["members"]) for name, e in raw["enumTypes"].items()}
    complex_types = {name: _specs(c["properties"]) for name, c in raw["complexTypes"].items()}
    return Metadata(entities, enums, complex_types)


def _type_error(prop: str, type_name: str, entity: str, detail: str) -> Exception:
    return bad_request(
        f"Invalid value for property '{prop}' of type '{type_name}' on '{NAMESPACE}.{entity}': {detail}."
    )


def check_duration(value: str) -> timedelta:
    match = _DURATION_RE.fullmatch(value)
    if not match or value.endswith(("P", "T")):
        raise ValueError(f"'{value}' is not an ISO 8601 duration such as 'PT20M' or 'P1DT2H'")
    days, hours, minutes = (int(match.group(g) or 0) for g in ("d", "h", "m"))
    seconds = float(match.group("s") or 0)
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def check_datetime_offset(value: str) -> datetime:
    match = _DATETIME_RE.fullmatch(value)
    if not match:
        raise ValueError(f"'{value}' is not an RFC 3339 date-time with offset such as '2024-01-31T08:00:00Z'")
    tz_text = match.group("tz")
    if tz_text in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if tz_text[0] == "-" else 1
        tz_h, tz_m = int(tz_text[1:3]), int(tz_text[4:6])
        if tz_h > 14 or tz_m > 59:
            raise ValueError(f"'{value}' has an out-of-range offset")
        tz = timezone(sign * timedelta(hours=tz_h, minutes=tz_m))
    fraction = (match.group("f") or "0")[:6].ljust(6, "0")
    try:
        return datetime(
            int(match.group("y")),
            int(match.group("mo")),
            int(match.group("d")),
            int(match.group("h")),
            int(match.group("mi")),
            int(match.group("s") or 0),
            int(fraction),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid date-time ({exc})") from exc


class Validator:
    """Checks JSON values against Edm/enum/complex types named in the metadata."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def check(self, entity: str, prop: PropertySpec, value: Any, version: str = "v1.0") -> Any:
        """The value as stored (enum spellings normalised), or a 400. Null is fine where the CSDL
        allows it; a collection property takes ``[]`` (and null, as the CSDL marks none non-nullable)."""
        if value is None:
            if not prop.nullable:
                raise bad_request(
                    f"Property '{prop.name}' on type '{NAMESPACE}.{entity}' is not nullable; null is not allowed."
                )
            return None
        return self._check_type(entity, prop.name, prop.type, value, version)

    def _check_type(self, entity: str, name: str, type_name: str, value: Any, version: str) -> Any:
        if type_name.startswith("Collection(") and type_name.endswith(")"):
            item_type = type_name[len("Collection(") : -1]
            if not isinstance(value, list):
                raise _type_error(name, type_name, entity, "expected a JSON array")
            for index, item in enumerate(value):
                if item is None:
                    raise _type_error(name, type_name, entity, f"element {index} is null")
            return [
                self._check_type(entity, f"{name}[{index}]", item_type, item, version)
                for index, item in enumerate(value)
            ]
        if type_name == "Edm.String":
            if not isinstance(value, str):
                raise _type_error(name, type_name, entity, "expected a JSON string")
        elif type_name == "Edm.Boolean":
            if not isinstance(value, bool):
                raise _type_error(name, type_name, entity, "expected true or false")
        elif type_name == "Edm.Int32":
            if isinstance(value, bool) or not isinstance(value, int):
                raise _type_error(name, type_name, entity, "expected an integer")
            if not INT32_MIN <= value <= INT32_MAX:
                raise _type_error(name, type_name, entity, f"{value} is outside the Int32 range")
        elif type_name in ("Edm.Duration", "Edm.DateTimeOffset"):
            if not isinstance(value, str):
                raise _type_error(name, type_name, entity, "expected a JSON string")
            try:
                if type_name == "Edm.Duration":
                    check_duration(value)
                else:
                    check_datetime_offset(value)
            except ValueError as exc:
                raise _type_error(name, type_name, entity, str(exc)) from exc
        elif type_name.startswith("graph.") and type_name[6:] in self.metadata.enums:
            return self._check_enum(entity, name, type_name, value, version)
        elif type_name.startswith("graph.") and type_name[6:] in self.metadata.complex_types:
            self._check_complex(entity, name, type_name, value, version)
        else:
            raise _type_error(name, type_name, entity, "the emulator does not know this type")
        return value

    def _check_enum(self, entity: str, name: str, type_name: str, value: Any, version: str) -> str:
        enum = type_name[6:]
        # Every CSDL member, unknownFutureValue included: the docs list it among the possible values.
        members = self.metadata.enums[enum]
        beta_spellings = BETA_ENUM_SPELLINGS.get(enum, {}) if version == "beta" else {}
        if isinstance(value, str) and value in members:
            return value
        if isinstance(value, str) and value in beta_spellings:
            return beta_spellings[value]
        hint = ""
        if isinstance(value, str):
            near = [m for m in members if m.lower() == value.lower()]
            beta_only = " (the capitalised spellings of the beta docs are accepted on /beta only)"
            extra = beta_only if value in BETA_ENUM_SPELLINGS.get(enum, {}) else ""
            hint = f" (member names are case-sensitive: did you mean '{near[0]}'?){extra}" if near else ""
        raise _type_error(
            name,
            type_name,
            entity,
            f"{json.dumps(value)} is not a member of '{NAMESPACE}.{enum}'; expected one of {', '.join(members)}{hint}",
        )

    def _check_complex(self, entity: str, name: str, type_name: str, value: Any, version: str) -> None:
        props = self.metadata.complex_types[type_name[6:]]
        if not isinstance(value, dict):
            raise _type_error(name, type_name, entity, "expected a JSON object")
        for key, item in value.items():
            if key == "@odata.type":
                continue
            if key not in props:
                raise bad_request(f"The property '{key}' does not exist on type '{NAMESPACE}.{type_name[6:]}'.")
            self.check(entity, props[key], item, version)

    def validate_body(
        self,
        schema: EntitySchema,
        body: Any,
        *,
        complete: bool,
        key_external_id: str | None = None,
        version: str = "v1.0",
    ) -> dict[str, Any]:
        """Validate a request body and return its property values (as stored).

        ``complete`` (create/replace) also requires the documented required properties.
        ``key_external_id`` is the alternate-key value from the URL, which may stand in for a
        missing ``externalId`` and must equal it when both are present.
        """
        if not isinstance(body, dict):
            raise bad_request(f"The request body must be a JSON object of type '{schema.qualified_name}'.")
        values: dict[str, Any] = {}
        for key, value in body.items():
            if "@" in key:
                self._check_annotation(schema, key, value)
                continue
            if key in schema.navigation:
                raise bad_request(f"Navigation property '{key}' cannot be set in a '{schema.qualified_name}' payload.")
            prop = schema.properties.get(key)
            if prop is None:
                raise bad_request(
                    f"Invalid property '{key}': the property '{key}' does not exist on type "
                    f"'{schema.qualified_name}'. Make sure to only use property names that are defined by the type."
                )
            if prop.read_only:
                raise bad_request(f"Property '{key}' is read-only on type '{schema.qualified_name}' and cannot be set.")
            values[key] = self.check(schema.name, prop, value, version)
        if key_external_id is not None:
            if "externalId" in values and values["externalId"] != key_external_id:
                raise bad_request(
                    f"The externalId in the body ('{values['externalId']}') does not match the key in the URL "
                    f"('{key_external_id}')."
                )
            values["externalId"] = key_external_id
        if complete:
            missing = [name for name in schema.required if name not in values]
            if missing:
                raise bad_request(
                    f"Required property '{missing[0]}' is missing on type '{schema.qualified_name}'"
                    + (f" (also missing: {', '.join(missing[1:])})." if len(missing) > 1 else ".")
                )
        return values

    @staticmethod
    def _check_annotation(schema: EntitySchema, key: str, value: Any) -> None:
        if key == "@odata.context":
            return  # harmless when a client echoes a response body back
        if key != "@odata.type":
            raise bad_request(f"The annotation '{key}' is not supported in a '{schema.qualified_name}' payload.")
        accepted = {f"#{schema.qualified_name}", f"#graph.{schema.name}", schema.qualified_name}
        if value not in accepted:
            raise bad_request(f"The @odata.type '{value}' does not match the expected type '#{schema.qualified_name}'.")


def select_properties(schema: EntitySchema, select: list[str] | None) -> list[str] | None:
    """Check a parsed $select list against the type; ``None`` means all properties."""
    if select is None:
        return None
    for name in select:
        if name not in schema.properties:
            if name in schema.navigation:
                raise bad_request(f"Selecting navigation property '{name}' is not supported by the emulator.")
            raise bad_request(f"Could not find a property named '{name}' on type '{schema.qualified_name}'.")
    return select
